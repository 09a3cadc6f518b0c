"""Real Prometheus on both sides of the proxy.

Telemetry: a "worker" Prometheus (the worker's workload) remote-writes through the proxied URL the
coordinator hands out; a "central" Prometheus receives it (``--web.enable-remote-write-receiver``)
and scrapes the worker through the proxy with the scrape job the coordinator publishes. Querying
the central one proves both paths and the Juju topology labels set by ``relabel_configs``.

Remote-write topology: several worker Prometheus, configured by the worker charm's own
``render_prometheus_config`` with their unit's Juju labels, remote-write into one receiver; each
unit's series stay distinct and none is rejected.

Queries: two worker Prometheus behind the worker query API route answer Grafana's requests
(``/query/api/v1/...``, GET and POST), each of them some of the time.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import render_nginx_config
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    build_telemetry_proxy,
)
from coordinated_mesh.relations.cluster import (
    JujuTopology,
    MetricsEndpoint,
    WorkerUnitData,
    juju_topology_labels,
)

from tests.support.binaries import require_binary
from tests.support.charm_loader import load_charm_module
from tests.support.nginx import RunningNginx, free_port, nginx_settings, wait_for_port

WORKER_CHARM = load_charm_module("worker")
UUID = "12345678-1234-4234-8234-123456789abc"
IDENTITY = CoordinatorIdentity("coordinator", "mymodel", UUID)


def _plan(worker_port: int, central_port: int, proxy_port: int, dns: str):
    return build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=WorkerTelemetryProxyConfig(http_port=proxy_port, https_port=proxy_port),
            workers=[  # two units of one application, both served by the one worker Prometheus
                WorkerUnitData(
                    juju_topology=JujuTopology(
                        application="worker", unit=f"worker/{n}", charm_name="mesh-worker-k8s"
                    ),
                    address="127.0.0.1",
                    metrics_endpoint=MetricsEndpoint(port=worker_port, path="/metrics"),
                )
                for n in (0, 10)
            ],
            backend_remote_write_urls={
                # A name (resolved by the test DNS to loopback): a loopback address is refused.
                "prometheus/0": f"http://central.test:{central_port}/api/v1/write"
            },
            resolvers=[dns],
        )
    )


def _worker_jobs_for_loopback(jobs: tuple[dict[str, Any], ...], proxy_port: int) -> list[Any]:
    """The published worker jobs, with the coordinator Service name replaced by loopback."""
    fqdn_target = f"{IDENTITY.service_fqdn}:{proxy_port}"
    worker_jobs = [job for job in jobs if job["job_name"] != "nginx-exporter"]
    text = json.dumps(worker_jobs).replace(fqdn_target, f"127.0.0.1:{proxy_port}")
    return json.loads(text)


class _Prometheus:
    def __init__(
        self, binary: str, directory: Path, port: int, config: dict[str, Any], *extra: str
    ) -> None:
        directory.mkdir()
        self.port = port
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (directory / "log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *extra,
            ],
            stdout=self.log,
            stderr=self.log,
        )
        self.directory = directory

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def prometheus_bin() -> str:
    return require_binary("prometheus")


def test_promtool_accepts_the_published_worker_jobs(tmp_path: Path):
    promtool = require_binary("promtool")
    plan = _plan(9090, 9091, 8080, "10.152.183.10")
    config = {"scrape_configs": _worker_jobs_for_loopback(plan.scrape_jobs, 8080)}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _eventually(check: Any, what: str, logs: list[Path], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            details = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
            raise AssertionError(f"timed out waiting for {what}\n{details}")
        time.sleep(0.5)


def test_scrape_and_remote_write_through_the_proxy(
    nginx_bin: str, prometheus_bin: str, tmp_path: Path, fake_dns: str
):
    proxy_port, central_port, worker_port = free_port(), free_port(), free_port()
    plan = _plan(worker_port, central_port, proxy_port, fake_dns)
    assert plan.problems == ()
    remote_write = plan.proxied_telemetry.remote_write_urls[0].replace(
        f"{IDENTITY.service_fqdn}:{proxy_port}", f"127.0.0.1:{proxy_port}"
    )
    assert remote_write.endswith("/proxy/remote-write/prometheus-0/write")
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    nginx = RunningNginx(
        nginx_bin, nginx_dir, render_nginx_config(plan, nginx_settings(nginx_dir, access_log=True))
    )
    started: list[_Prometheus] = []
    try:
        wait_for_port(proxy_port)
        central = _Prometheus(
            prometheus_bin,
            tmp_path / "central",
            central_port,
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": _worker_jobs_for_loopback(plan.scrape_jobs, proxy_port),
            },
            "--web.enable-remote-write-receiver",
        )
        started.append(central)
        worker = _Prometheus(
            prometheus_bin,
            tmp_path / "worker",
            worker_port,
            {
                "global": {"scrape_interval": "1s", "external_labels": {"sent_by": "worker"}},
                "scrape_configs": [
                    {
                        "job_name": "self",
                        "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                    }
                ],
                "remote_write": [
                    {"url": remote_write, "queue_config": {"batch_send_deadline": "1s"}}
                ],
            },
        )
        started.append(worker)
        logs = [tmp_path / "central" / "log", tmp_path / "worker" / "log", nginx.log_path]
        wait_for_port(central_port, timeout=30)

        # Scraped by the central Prometheus through /proxy/worker/worker-<n>/metrics: one job
        # for the application, one target per unit, each relabelled with its unit.
        def both_units_up() -> list[dict[str, Any]] | None:
            result = central.query('up{job="workers-worker"} == 1')
            return result if len(result) == 2 else None

        up = _eventually(both_units_up, "the proxied scrapes of both units", logs)
        assert sorted((s["metric"] for s in up), key=lambda m: m["juju_unit"]) == [
            {
                "__name__": "up",
                "instance": f"127.0.0.1:{proxy_port}",
                "job": "workers-worker",
                "juju_application": "worker",
                "juju_charm": "mesh-worker-k8s",
                "juju_model": "mymodel",
                "juju_model_uuid": UUID,
                "juju_unit": unit,
            }
            for unit in ("worker/0", "worker/10")
        ]
        # Remote-written by the worker Prometheus through /proxy/remote-write/prometheus-0/write.
        _eventually(
            lambda: central.query('prometheus_build_info{sent_by="worker"}'),
            "remote-written samples",
            logs,
        )
        access = (nginx_dir / "access.log").read_text()
        assert "POST /proxy/remote-write/prometheus-0/write" in access
        assert "GET /proxy/worker/worker-0/metrics" in access
        assert "GET /proxy/worker/worker-10/metrics" in access
    finally:
        for prometheus in started:
            prometheus.stop()
        nginx.stop()


def _worker_charm_config(unit: str, port: int, remote_write: str) -> dict[str, Any]:
    """The worker charm's ``prometheus.yml`` for ``unit``, run on loopback ``port``.

    In a pod every unit scrapes itself at ``localhost:9090``; here the port differs per unit, so
    the target moves and ``instance`` is set back to ``localhost:9090``: the labels the units
    would otherwise collide on are exactly those of the pods.
    """
    labels = juju_topology_labels(
        JujuTopology(application="worker", unit=unit, charm_name="mesh-worker-k8s"),
        model_name="mymodel",
        model_uuid=UUID,
    )
    text, notes = WORKER_CHARM.render_prometheus_config(
        base="global:\n  scrape_interval: 1s\n",
        remote_write_urls=[remote_write],
        tracing=None,
        external_labels=labels,
    )
    assert notes == []
    config = yaml.safe_load(text)
    assert config["global"]["external_labels"] == labels
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"localhost:{WORKER_CHARM.PORT}"]}]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    job["relabel_configs"] = [
        {"target_label": "instance", "replacement": f"localhost:{WORKER_CHARM.PORT}"}
    ]
    for entry in config["remote_write"]:
        entry["queue_config"] = {"batch_send_deadline": "1s"}
    return config


REJECTIONS = ("out of order", "out-of-order", "out of bounds", "duplicate sample")
"""What the receiver logs when it refuses remote-written samples (and answers HTTP 400)."""


def test_units_remote_write_distinct_series_with_their_topology(
    nginx_bin: str, prometheus_bin: str, tmp_path: Path, fake_dns: str
):
    """Three worker units remote-write their self-scrape through nginx into one receiver."""
    units = ["worker/0", "worker/1", "worker/2"]
    proxy_port, receiver_port = free_port(), free_port()
    plan = _plan(free_port(), receiver_port, proxy_port, fake_dns)
    assert plan.problems == ()
    remote_write = plan.proxied_telemetry.remote_write_urls[0].replace(
        f"{IDENTITY.service_fqdn}:{proxy_port}", f"127.0.0.1:{proxy_port}"
    )
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    nginx = RunningNginx(
        nginx_bin, nginx_dir, render_nginx_config(plan, nginx_settings(nginx_dir, access_log=True))
    )
    started: list[_Prometheus] = []
    try:
        wait_for_port(proxy_port)
        receiver = _Prometheus(
            prometheus_bin,
            tmp_path / "receiver",
            receiver_port,
            {"global": {"scrape_interval": "1m"}},
            "--web.enable-remote-write-receiver",
        )
        started.append(receiver)
        wait_for_port(receiver_port, timeout=30)
        for n, unit in enumerate(units):
            port = free_port()
            config = _worker_charm_config(unit, port, remote_write)
            started.append(_Prometheus(prometheus_bin, tmp_path / f"w{n}", port, config))
        logs = [p.directory / "log" for p in started] + [nginx.log_path]

        def per_unit(metric: str) -> dict[str, dict[str, str]] | None:
            result = receiver.query(f'{metric}{{job="prometheus"}}')
            by_unit = {r["metric"].get("juju_unit", ""): r["metric"] for r in result}
            if sorted(by_unit) != units:
                return None
            assert len(result) == len(units), result  # one series per unit, no unlabelled one
            return by_unit

        for metric in ("up", "prometheus_build_info"):
            by_unit = _eventually(lambda m=metric: per_unit(m), f"{metric} of every unit", logs)
            for unit, labels in by_unit.items():
                assert labels["instance"] == "localhost:9090"
                topology = {k: v for k, v in labels.items() if k.startswith("juju_")}
                assert topology == {
                    "juju_application": "worker",
                    "juju_charm": "mesh-worker-k8s",
                    "juju_model": "mymodel",
                    "juju_model_uuid": UUID,
                    "juju_unit": unit,
                }
        # Several batches of every unit have arrived; none was refused (the symptom of units
        # whose series collide: out-of-order samples, HTTP 400 to the sender).
        time.sleep(3)
        up = receiver.query('count_over_time(up{job="prometheus"}[1m])')
        assert len(up) == len(units) and all(int(r["value"][1]) >= 2 for r in up), up
        receiver_log = (receiver.directory / "log").read_text().lower()
        assert not [w for w in REJECTIONS if w in receiver_log], receiver_log[-3000:]
        for prometheus in started[1:]:
            log = (prometheus.directory / "log").read_text().lower()
            assert "non-recoverable error" not in log and "failed to send" not in log, log
        writes = [
            line
            for line in (nginx_dir / "access.log").read_text().splitlines()
            if "POST /proxy/remote-write/prometheus-0/write" in line
        ]
        assert len(writes) >= len(units)
        assert all('" 204 ' in line for line in writes), writes  # none refused (400)
    finally:
        for prometheus in started:
            prometheus.stop()
        nginx.stop()


def _query_through(port: int, path: str, form: dict[str, str] | None = None) -> dict[str, Any]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=data, timeout=10) as r:
        return json.load(r)


def test_grafana_queries_the_workers_through_the_query_route(
    nginx_bin: str, prometheus_bin: str, tmp_path: Path, fake_dns: str
):
    """Two worker Prometheus answer ``/query/api/v1/...`` through nginx, as Grafana asks it.

    Each worker scrapes itself under its own job name, so the answer says which one served it.
    One worker is reached by IP, the other by a name resolved by nginx when a query needs it.
    """
    proxy_port, w0_port, w1_port = free_port(), free_port(), free_port()
    workers = [
        WorkerUnitData(
            juju_topology=JujuTopology(application="worker", unit=unit, charm_name="w"),
            address=address,
            metrics_endpoint=MetricsEndpoint(port=port, path="/metrics"),
        )
        for unit, address, port in [
            ("worker/0", "127.0.0.1", w0_port),
            ("worker/1", "worker-1.worker-endpoints.mymodel.test", w1_port),
        ]
    ]
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=WorkerTelemetryProxyConfig(http_port=proxy_port, https_port=proxy_port),
            workers=workers,
            resolvers=[fake_dns],
            status_port=free_port(),
            worker_query_api=WorkerQueryApi(),
        )
    )
    assert plan.problems == ()
    assert plan.query_url == f"http://{IDENTITY.service_fqdn}:{proxy_port}/query"
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    nginx = RunningNginx(
        nginx_bin, nginx_dir, render_nginx_config(plan, nginx_settings(nginx_dir, access_log=True))
    )
    started: list[_Prometheus] = []
    try:
        wait_for_port(proxy_port)
        for name, port in [("w0", w0_port), ("w1", w1_port)]:
            config = {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                ],
            }
            started.append(_Prometheus(prometheus_bin, tmp_path / name, port, config))
        logs = [tmp_path / "w0" / "log", tmp_path / "w1" / "log", nginx.log_path]
        for prometheus in started:
            wait_for_port(prometheus.port, timeout=30)
            _eventually(lambda p=prometheus: p.query("up == 1"), "a worker's own scrape", logs)

        def served_by(answer: dict[str, Any]) -> str:
            assert answer["status"] == "success", answer
            (sample,) = answer["data"]["result"]
            assert sample["metric"]["__name__"] == "up"
            return sample["metric"]["job"]

        # Grafana's datasource health check, then instant queries by GET and POST (its default).
        build = _query_through(proxy_port, "/query/api/v1/status/buildinfo")
        assert build["status"] == "success" and build["data"]["version"]
        jobs = {
            served_by(_query_through(proxy_port, "/query/api/v1/query?query=up")) for _ in range(30)
        }
        jobs |= {
            served_by(_query_through(proxy_port, "/query/api/v1/query", {"query": "up"}))
            for _ in range(30)
        }
        assert jobs == {"w0", "w1"}, nginx.log()
        access = (nginx_dir / "access.log").read_text()
        assert f'"127.0.0.1:{w0_port}" 200' in access
        assert f'"127.0.0.1:{w1_port}" 200' in access
        assert "POST /query/api/v1/query " in access
    finally:
        for prometheus in started:
            prometheus.stop()
        nginx.stop()
