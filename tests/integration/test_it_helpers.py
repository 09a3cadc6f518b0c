"""The integration tests' own helpers, checked without Juju or Kubernetes.

A wrong helper would make the integration tests pass for the wrong reason (a DNS error counted as
"denied", a policy matched on the wrong target), so the helpers are tested here, offline: the
in-pod probe program runs for real (through ``bash``, as ``juju exec`` runs it) against a local
HTTP server, and the Kubernetes and relation-data readers run on recorded shapes.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import it_settings
import jubilant
import pack
import pytest
from coordinated_mesh.policies import Endpoint, MeshPolicy, Method, PolicyTargetType
from it_juju import (
    NotReadyError,
    ProbeResult,
    controller_problem,
    eventually,
    expect_denied,
    expect_reached,
    make_workload_log,
    probe,
    proxied_metrics_urls,
    published_mesh_policies,
    scrape_samples,
    worker_units_data,
)
from it_kube import (
    PolicyView,
    cluster_internal_policies,
    expected_cluster_internal,
    find_policy_for,
    label_problems,
    principal,
    selector_target,
    service_target,
)
from it_settings import Settings, find_built_charm, oci_resources, resolve_charms
from jubilant.unittypes import RelationData, UnitInfo, UnitRelationData

pytestmark = pytest.mark.offline

NS = "mesh-test"


class LocalJuju:
    """Stands in for :class:`jubilant.Juju`: ``exec`` runs in local bash, ``show_unit`` is canned."""

    def __init__(
        self,
        units: Mapping[str, UnitInfo] | None = None,
        stdout: str | Callable[[str], str] | None = None,
    ):
        self.units = dict(units or {})
        self.canned_stdout = stdout
        self.commands: list[str] = []

    def exec(self, command: str, *, unit: str, wait: float | None = None) -> jubilant.Task:
        self.commands.append(command)
        if self.canned_stdout is not None:
            canned = self.canned_stdout
            stdout = canned if isinstance(canned, str) else canned(command)
            return jubilant.Task(id="1", status="completed", stdout=stdout)
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=wait, check=False
        )
        task = jubilant.Task(
            id="1",
            status="completed" if done.returncode == 0 else "failed",
            return_code=done.returncode,
            stdout=done.stdout,
            stderr=done.stderr,
        )
        task.raise_on_failure()
        return task

    def show_unit(self, unit: str) -> UnitInfo:
        return self.units[unit]

    def as_juju(self) -> jubilant.Juju:
        return cast("jubilant.Juju", self)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {
        "/ok": (200, b"# HELP up\nup 1\n"),
        "/rbac": (403, b"RBAC: access denied"),
        "/forbidden": (403, b"<html>403 Forbidden</html>"),
    }

    def do_GET(self) -> None:
        if self.path.startswith("/echo"):
            code, body = 200, self.path.encode()
        else:
            code, body = self.routes.get(self.path, (404, b"not found"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the in-pod probe ----------------------------------------------------------------------------


def test_probe_reports_a_served_request(server: str):
    got = probe(LocalJuju().as_juju(), "app/0", f"{server}/ok")
    assert (got.status, got.reached, got.denied, got.broken) == (200, True, False, False)
    assert got.body == "# HELP up\nup 1\n"


def test_probe_passes_the_url_through_the_shell_untouched(server: str):
    path = "/echo?q=up{juju_application=\"w\"}&x='a'&home=$HOME&t=`id`"
    got = probe(LocalJuju().as_juju(), "app/0", server + path)
    assert (got.status, got.body) == (200, path)


def test_probe_reports_a_malformed_url_as_broken_not_denied():
    got = probe(LocalJuju().as_juju(), "app/0", "http://127.0.0.1:1/a b")
    assert (got.error, got.broken, got.denied) == ("invalid", True, False)


def test_probe_tells_mesh_rbac_from_application_403(server: str):
    juju = LocalJuju().as_juju()
    rbac = probe(juju, "app/0", f"{server}/rbac")
    app = probe(juju, "app/0", f"{server}/forbidden")
    assert (rbac.status, rbac.rbac_denied, rbac.denied, rbac.reached) == (403, True, True, False)
    assert (app.status, app.rbac_denied, app.denied, app.reached) == (403, False, False, True)


def test_probe_reports_a_refused_connection_as_denied():
    got = probe(LocalJuju().as_juju(), "app/0", f"http://127.0.0.1:{_free_port()}/")
    assert (got.error, got.denied, got.reached) == ("connection", True, False)


def test_probe_reports_a_silent_server_as_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accepts: the request is never answered
        port = listener.getsockname()[1]
        got = probe(LocalJuju().as_juju(), "app/0", f"http://127.0.0.1:{port}/", timeout=1)
    assert (got.error, got.denied) == ("timeout", True)


def test_probe_reports_an_unknown_name_as_dns_not_as_denied():
    got = probe(LocalJuju().as_juju(), "app/0", "http://no-such-host.invalid/metrics")
    assert (got.error, got.broken, got.denied, got.reached) == ("dns", True, False, False)


def test_expectations_refuse_a_broken_request():
    juju = LocalJuju().as_juju()
    with pytest.raises(AssertionError, match="the request itself is broken"):
        expect_denied(juju, "app/0", "http://no-such-host.invalid/", timeout=5)
    with pytest.raises(AssertionError, match="the request itself is broken"):
        expect_reached(juju, "app/0", "http://127.0.0.1:1/a b", timeout=5)


def test_expect_reached_waits_for_the_wanted_status(server: str):
    juju = LocalJuju().as_juju()
    assert expect_reached(juju, "app/0", f"{server}/ok", timeout=5).status == 200
    with pytest.raises(AssertionError, match=r"(?s)HTTP 200\): still not true.*HTTP 403"):
        expect_reached(juju, "app/0", f"{server}/rbac", timeout=0)


def test_probe_result_describes_itself():
    text = str(ProbeResult(source="a/0", url="http://x", error="connection", detail="reset"))
    assert text == "a/0 -> http://x: connection error (reset)"


def test_eventually_retries_not_ready_then_reports_the_last_observation():
    calls: list[int] = []

    def attempt() -> tuple[bool, str]:
        calls.append(1)
        if len(calls) == 1:
            raise NotReadyError("backend restarting")
        return len(calls) >= 3, f"call {len(calls)}"

    assert eventually(attempt, what="x", timeout=10, interval=0) == "call 3"
    with pytest.raises(AssertionError, match=r"never: still not true .*\nLast seen: no"):
        eventually(lambda: (False, "no"), what="never", timeout=0, interval=0)


def test_make_workload_log_signals_only_the_workload_services():
    plan = "services:\n  prom: {command: /bin/prometheus --x}\n  other: {command: /bin/sleep 1}\n"
    juju = LocalJuju(stdout=plan)
    assert make_workload_log(juju.as_juju(), "w/0", "prometheus", "prometheus") == ["prom"]
    assert juju.commands[-1].endswith("/charm/bin/pebble signal HUP prom")
    assert "/charm/containers/prometheus/pebble.socket" in juju.commands[0]


def test_scrape_samples_take_the_scrape_time_not_the_query_time():
    def prometheus(command: str) -> str:
        def series(unit: str, value: str) -> dict[str, Any]:
            metric = {"__name__": "up", "juju_unit": unit, "job": unit}
            return {"metric": metric, "value": [1000.0, value]}

        result = [series("w/1", "0"), series("w/0", "1")]
        if "timestamp%28" in command:  # timestamp(...) drops __name__, value = scrape time
            result = [
                {"metric": {"juju_unit": "w/0", "job": "w/0"}, "value": [1000.0, "990.5"]},
                {"metric": {"juju_unit": "w/1", "job": "w/1"}, "value": [1000.0, "700"]},
            ]
        body = json.dumps({"status": "success", "data": {"result": result}})
        return json.dumps({"status": 200, "body": body})

    samples = scrape_samples(LocalJuju(stdout=prometheus).as_juju(), "prometheus/0", "w")
    assert [(s.unit, s.up, s.timestamp) for s in samples] == [
        ("w/0", "1", 990.5),
        ("w/1", "0", 700.0),
    ]


def test_prometheus_errors_are_not_ready_rather_than_failures():
    answer = json.dumps({"error": "connection", "detail": "reset"})
    juju = LocalJuju(stdout=answer).as_juju()
    with pytest.raises(NotReadyError, match="Prometheus query"):
        scrape_samples(juju, "prometheus/0", "w")


# --- relation data -------------------------------------------------------------------------------


def _unit(endpoint: str, app_data: Mapping[str, str], units: Mapping[str, Mapping[str, str]]):
    return UnitInfo(
        opened_ports=[],
        charm="local:x",
        leader=True,
        relation_info=[
            RelationData(
                relation_id=1,
                endpoint=endpoint,
                related_endpoint=endpoint,
                app_data=dict(app_data),
                related_units={
                    u: UnitRelationData(in_scope=True, data=dict(d)) for u, d in units.items()
                },
            )
        ],
    )


def test_proxied_metrics_urls_reads_the_worker_jobs_only():
    def job(unit: str) -> dict[str, Any]:
        flat = unit.replace("/", "-")
        return {
            "job_name": flat,
            "metrics_path": f"/proxy/worker/{flat}/metrics",
            "static_configs": [{"targets": [f"coordinator.{NS}.svc.cluster.local:8080"]}],
            "relabel_configs": [
                {"target_label": "juju_application", "replacement": unit.split("/", maxsplit=1)[0]},
                {"target_label": "juju_unit", "replacement": unit},
            ],
        }

    jobs = [{"job_name": "nginx", "static_configs": [{"targets": ["*:9113"]}]}, job("w-b/0")]
    jobs.append(job("w-a/1"))
    info = _unit("metrics-endpoint", {"scrape_jobs": json.dumps(jobs)}, {"coordinator/0": {}})
    juju = LocalJuju({"prometheus/0": info}).as_juju()
    assert proxied_metrics_urls(juju, "prometheus/0", "coordinator") == {
        "w-a/1": f"http://coordinator.{NS}.svc.cluster.local:8080/proxy/worker/w-a-1/metrics",
        "w-b/0": f"http://coordinator.{NS}.svc.cluster.local:8080/proxy/worker/w-b-0/metrics",
    }
    with pytest.raises(AssertionError, match="no 'metrics-endpoint' relation with loki"):
        proxied_metrics_urls(juju, "prometheus/0", "loki")


def test_worker_units_data_skips_incomplete_units():
    complete = {
        "juju_topology": json.dumps(
            {"application": "w", "unit": "w/0", "charm_name": "mesh-worker-k8s"}
        ),
        "address": json.dumps(f"w-0.w-endpoints.{NS}.svc.cluster.local"),
        "metrics_endpoint": json.dumps({"port": 9090, "path": "/metrics"}),
        "ingress-address": "10.1.2.3",
    }
    info = _unit("cluster", {}, {"w/0": complete, "w/1": {"ingress-address": "10.1.2.4"}})
    found = worker_units_data(LocalJuju({"coordinator/0": info}).as_juju(), "coordinator/0")
    assert list(found) == ["w/0"]
    assert found["w/0"].metrics_endpoint is not None


def test_published_mesh_policies_parses_the_wire_format():
    wire = [
        {
            "source_namespace": NS,
            "source_app_name": "prometheus",
            "target_namespace": NS,
            "target_app_name": "coordinator",
            "target_selector_labels": None,
            "target_service": None,
            "target_type": "unit",
            "endpoints": [{"hosts": None, "ports": [9113], "methods": None, "paths": None}],
        }
    ]
    info = _unit("service-mesh", {"policies": json.dumps(wire)}, {"coordinator/0": {}})
    juju = LocalJuju({"istio-beacon/0": info}).as_juju()
    [policy] = published_mesh_policies(juju, "istio-beacon/0", "coordinator")
    assert policy.target_type is PolicyTargetType.unit
    assert policy.to_wire() == wire[0]


# --- Kubernetes views ----------------------------------------------------------------------------


def _ap(name: str, source: str, spec: dict[str, Any]) -> PolicyView:
    rules: list[dict[str, Any]] = [{"from": [{"source": {"principals": [principal(NS, source)]}}]}]
    rules[0].update(spec.pop("to", {}))
    return PolicyView.from_resource(
        {"metadata": {"name": name, "labels": {"a": "b"}}, "spec": {**spec, "rules": rules}}
    )


def _selector(app: str) -> dict[str, Any]:
    return {"selector": {"matchLabels": {"app.kubernetes.io/part-of": app}}}


def _service(app: str) -> dict[str, Any]:
    return {"targetRefs": [{"group": "", "kind": "Service", "name": app}]}


def test_policy_view_reads_an_l7_policy():
    view = _ap(
        "p",
        "prometheus",
        {
            **_service("coordinator"),
            "to": {"to": [{"operation": {"ports": ["8080"], "methods": ["GET"]}}]},
        },
    )
    assert view.principals == (principal(NS, "prometheus"),)
    assert view.targets == (service_target("coordinator"),)
    assert (view.ports, view.action) == (("8080",), "ALLOW")
    assert "prometheus -> service:coordinator ports 8080" in str(view)


def _cluster_policies(workers: list[str]) -> list[PolicyView]:
    views = [_ap("c", "coordinator", _selector("coordinator"))]
    for w in workers:
        views.append(_ap(f"{w}-pods", w, _selector("coordinator")))
        views.append(_ap(f"{w}-svc", w, _service("coordinator")))
    return views


def test_cluster_internal_policies_pick_the_cluster_set_and_nothing_else():
    beacon = _ap("beacon", "prometheus", _service("coordinator"))
    other = _ap("other", "worker-a", _service("somebody-else"))
    views = [*_cluster_policies(["worker-a", "worker-b"]), beacon, other]
    internal = cluster_internal_policies(
        views,
        namespace=NS,
        coordinator="coordinator",
        cluster_apps=["coordinator", "worker-a", "worker-b"],
    )
    wanted = expected_cluster_internal(
        namespace=NS, coordinator="coordinator", workers=["worker-a", "worker-b"]
    )
    assert len(internal) == len(wanted) == 5
    assert set[tuple[str, str]]().union(*(p.pairs() for p in internal)) == wanted
    assert (
        selector_target({"app.kubernetes.io/part-of": "coordinator"}),
        principal(NS, "coordinator"),
    ) in wanted


def test_leftovers_of_a_removed_worker_are_not_the_expected_set():
    views = _cluster_policies(["worker-a", "worker-b"])
    internal = cluster_internal_policies(
        views,
        namespace=NS,
        coordinator="coordinator",
        cluster_apps=["coordinator", "worker-a", "worker-b"],
    )
    wanted = expected_cluster_internal(
        namespace=NS, coordinator="coordinator", workers=["worker-a"]
    )
    assert set[tuple[str, str]]().union(*(p.pairs() for p in internal)) != wanted


def test_find_policy_for_matches_principal_target_and_ports():
    app_policy = MeshPolicy(
        source_namespace=NS,
        source_app_name="prometheus",
        target_namespace=NS,
        target_app_name="coordinator",
        target_type=PolicyTargetType.app,
        endpoints=[
            Endpoint(ports=[8080], methods=[Method.get], paths=["/proxy/worker/{*}/metrics"])
        ],
    )
    unit_policy = MeshPolicy(
        source_namespace=NS,
        source_app_name="prometheus",
        target_namespace=NS,
        target_app_name="coordinator",
        target_type=PolicyTargetType.unit,
        endpoints=[Endpoint(ports=[9113])],
    )
    l7 = _ap(
        "l7",
        "prometheus",
        {**_service("coordinator"), "to": {"to": [{"operation": {"ports": ["8080"]}}]}},
    )
    l4 = _ap(
        "l4",
        "prometheus",
        {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "coordinator"}},
            "to": {"to": [{"operation": {"ports": ["9113"]}}]},
        },
    )
    assert find_policy_for(app_policy, [l4, l7]) == l7
    assert find_policy_for(unit_policy, [l7, l4]) == l4
    assert find_policy_for(unit_policy, [l7]) is None


def test_label_problems_names_missing_wrong_and_unwanted_labels():
    problems = label_problems(
        "pod p",
        {"a": "1", "b": "2", "gone": "x"},
        required={"a": "1", "b": "3", "c": "4"},
        absent=["gone"],
    )
    assert problems == [
        "pod p: b='2', want '3'",
        "pod p: c=None, want '4'",
        "pod p: has gone='x', want it gone",
    ]


# --- settings, charms and the controller gate ----------------------------------------------------


def test_settings_defaults_and_overrides():
    default = Settings.from_env({})
    assert (default.istio_channel, default.beacon_channel, default.istio_app) == (
        "2/edge",
        "2/edge",
        "istio-k8s",
    )
    assert default.prometheus_channel is None and default.istio_platform is None
    assert default.timeout(10) == 10
    custom = Settings.from_env({"MESH_TEST_ISTIO_PLATFORM": "", "MESH_TEST_TIMEOUT_SCALE": "2.5"})
    assert (custom.istio_platform, custom.timeout(10)) == ("", 25)
    with pytest.raises(ValueError, match="MESH_TEST_TIMEOUT_SCALE"):
        Settings.from_env({"MESH_TEST_TIMEOUT_SCALE": "fast"})


def test_oci_resources_come_from_charmcraft_yaml():
    assert sorted(oci_resources("coordinator")) == [
        "nginx-image",
        "nginx-prometheus-exporter-image",
    ]
    assert oci_resources("worker")["prometheus-image"].startswith("ubuntu/prometheus:")


def test_find_built_charm_prefers_this_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(it_settings, "_juju_arch", lambda: "amd64")
    other = tmp_path / "mesh-worker-k8s_ubuntu@24.04-arm64.charm"
    native = tmp_path / "mesh-worker-k8s_ubuntu@24.04-amd64.charm"
    native.write_text("x")
    other.write_text("x")  # newer, but not ours
    assert find_built_charm("mesh-worker-k8s", tmp_path) == native
    assert find_built_charm("mesh-coordinator-k8s", tmp_path) is None


def test_resolve_charms_takes_given_paths_and_rejects_missing(tmp_path: Path):
    coordinator, worker = tmp_path / "c.charm", tmp_path / "w.charm"
    coordinator.write_text("x")
    worker.write_text("x")
    env = {"COORDINATOR_CHARM": str(coordinator), "WORKER_CHARM": str(worker)}
    assert resolve_charms(Settings.from_env(env)) == (coordinator, worker)
    env["WORKER_CHARM"] = str(tmp_path / "missing.charm")
    with pytest.raises(FileNotFoundError, match=r"WORKER_CHARM=.*missing\.charm does not exist"):
        resolve_charms(Settings.from_env(env))


def _fake_juju(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    juju = tmp_path / "juju"
    juju.write_text("#!/bin/sh\n" + script)
    juju.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_gate_without_juju(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "juju CLI is not installed" in (controller_problem(None, None) or "")


def test_gate_without_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_juju(tmp_path, monkeypatch, 'echo "ERROR No controllers registered." >&2; exit 1\n')
    assert "No controllers registered" in (controller_problem(None, None) or "")


def test_gate_on_a_machine_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    models = {"models": [{"name": "admin/controller", "short-name": "controller", "type": "iaas"}]}
    _fake_juju(tmp_path, monkeypatch, f"echo '{json.dumps(models)}'\n")
    assert "machine cloud" in (controller_problem(None, None) or "")
    assert controller_problem(None, "my-k8s") is None


def test_gate_passes_a_kubernetes_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    models = {"models": [{"name": "admin/controller", "short-name": "controller", "type": "caas"}]}
    _fake_juju(
        tmp_path,
        monkeypatch,
        f'[ "$4" = "--controller" ] && [ "$5" = "k" ] || exit 3\necho \'{json.dumps(models)}\'\n',
    )
    assert controller_problem("k", None) is None


# --- which charmcraft packs ----------------------------------------------------------------------


def test_pack_prefers_the_charmcraft_snap(tmp_path: Path):
    snap = tmp_path / "snap-bin-charmcraft"
    snap.write_text("#!/bin/sh\n")
    snap.chmod(0o755)
    found = pack.find_charmcraft(snap, which=lambda _: "/venv/bin/charmcraft")
    assert (found.command, found.is_snap) == (str(snap), True)
    assert "charmcraft snap" in found.note


def test_pack_falls_back_to_the_path_with_a_warning(tmp_path: Path):
    not_executable = tmp_path / "charmcraft"
    not_executable.write_text("")
    for snap in (tmp_path / "missing", not_executable):
        found = pack.find_charmcraft(snap, which=lambda _: "/venv/bin/charmcraft")
        assert (found.command, found.is_snap) == ("/venv/bin/charmcraft", False)
        assert found.note.startswith("warning: /venv/bin/charmcraft is not the charmcraft snap")
        assert "latest/stable" in found.note and "snap install charmcraft --classic" in found.note
    with pytest.raises(pack.StagingError, match="charmcraft is not installed"):
        pack.find_charmcraft(tmp_path / "missing", which=lambda _: None)
