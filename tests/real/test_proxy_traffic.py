"""Real traffic through a real nginx running a rendered configuration.

Upstreams are small HTTP servers on loopback; a tiny DNS server answers ``*.test`` with
127.0.0.1, so host names are resolved by nginx at request time exactly as in Kubernetes, and a
``.invalid`` name never resolves. Each proxy path must reach the right upstream with the path
rewritten as specified, over HTTP/1.1 without ``Connection: close``.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import render_nginx_config
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    TelemetryProxyPlan,
    build_telemetry_proxy,
)
from coordinated_mesh.relations.cluster import JujuTopology, MetricsEndpoint, WorkerUnitData

from tests.support.nginx import (
    RunningNginx,
    Upstream,
    free_port,
    nginx_settings,
    serving,
    wait_for_port,
)

IDENTITY = CoordinatorIdentity("coordinator", "mymodel", "12345678-1234-4234-8234-123456789abc")


def _worker(unit: str, address: str, port: int, path: str) -> WorkerUnitData:
    return WorkerUnitData(
        juju_topology=JujuTopology(
            application=unit.split("/", maxsplit=1)[0], unit=unit, charm_name="w"
        ),
        address=address,
        metrics_endpoint=MetricsEndpoint(port=port, path=path),
    )


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def path_of(url: str) -> str:
    """The path of a proxied URL (they name the coordinator's Service; we talk to loopback)."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


@pytest.fixture
def proxy(
    nginx_bin: str, tmp_path: Path, upstreams: dict[str, Upstream], fake_dns: str
) -> Iterator[tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs]]:
    config = WorkerTelemetryProxyConfig(http_port=free_port(), https_port=free_port())
    inputs = TelemetryProxyInputs(
        identity=IDENTITY,
        config=config,
        workers=[
            _worker("worker/0", "127.0.0.1", upstreams["worker0"].port, "/metrics"),
            _worker("worker/1", "worker-1.test", upstreams["worker1"].port, "/custom/metrics"),
        ],
        backend_loki_urls={
            "loki/0": f"http://loki-0.test:{upstreams['loki0'].port}/loki/api/v1/push",
            "loki/1": "http://loki-1.nowhere.invalid:3100/loki/api/v1/push",
        },
        backend_remote_write_urls={
            "prometheus/0": f"http://prometheus-0.test:{upstreams['prom0'].port}/api/v1/write"
        },
        backend_charm_tracing_receivers={
            "otlp_http": f"http://ctrace.test:{upstreams['ctrace'].port}"
        },
        backend_workload_tracing_receivers={
            "otlp_http": f"http://tempo.test:{upstreams['wtrace'].port}/base",
            "zipkin": f"http://zipkin.test:{upstreams['zipkin'].port}",
        },
        resolvers=[fake_dns],
        status_port=free_port(),
    )
    plan = build_telemetry_proxy(inputs)
    assert plan.problems == ()
    with serving(nginx_bin, tmp_path, plan) as nginx:
        yield nginx, plan, inputs


def test_every_route_reaches_its_upstream(
    proxy: tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs],
    upstreams: dict[str, Upstream],
):
    nginx, plan, inputs = proxy
    port = inputs.config.http_port
    urls = plan.proxied_telemetry
    cases = [
        # (method, path on the proxy, upstream, path the upstream must see)
        ("GET", "/proxy/worker/worker-0/metrics", "worker0", "/metrics"),
        ("GET", "/proxy/worker/worker-0/metrics?name[]=up", "worker0", "/metrics?name[]=up"),
        ("GET", "/proxy/worker/worker-1/metrics", "worker1", "/custom/metrics"),
        ("POST", path_of(urls.loki_urls["loki/0"]), "loki0", "/loki/api/v1/push"),
        (
            "POST",
            path_of(urls.remote_write_urls[0]),
            "prom0",
            "/api/v1/write",
        ),
        (
            "POST",
            path_of(urls.charm_tracing_receivers["otlp_http"]) + "/v1/traces",
            "ctrace",
            "/v1/traces",
        ),
        (
            "POST",
            path_of(urls.workload_tracing_receivers["otlp_http"]) + "/v1/traces",
            "wtrace",
            "/base/v1/traces",
        ),
        # An encoded newline does not keep the rewrite from stripping the prefix.
        (
            "POST",
            path_of(urls.workload_tracing_receivers["otlp_http"]) + "/v1/a%0Ab",
            "wtrace",
            "/base/v1/a%0Ab",
        ),
        (
            "POST",
            path_of(urls.workload_tracing_receivers["zipkin"]) + "/api/v2/spans",
            "zipkin",
            "/api/v2/spans",
        ),
    ]
    for method, path, name, upstream_path in cases:
        body = f"payload for {name}".encode() if method == "POST" else None
        status, reply = request(port, method, path, body)
        assert status == 200, (path, reply, nginx.log())
        assert reply.decode().startswith(f"{name} {method} {upstream_path} "), (path, reply)
        seen = upstreams[name].seen[-1]
        assert seen.path == upstream_path
        assert seen.version == "HTTP/1.1"
        assert "Connection" not in seen.headers
        assert seen.body == (body or b"")
    assert nginx.alive()


def test_large_push_is_forwarded_whole(
    proxy: tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs],
    upstreams: dict[str, Upstream],
):
    """Bodies beyond the in-memory buffer go through the (writable) temp path."""
    _, plan, inputs = proxy
    body = bytes(range(256)) * (20 * 1024 * 4)  # 20 MiB
    status, _ = request(
        inputs.config.http_port, "POST", path_of(plan.proxied_telemetry.loki_urls["loki/0"]), body
    )
    assert status == 200
    assert upstreams["loki0"].seen[-1].body == body


def test_unresolvable_backend_fails_alone(
    proxy: tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs],
    upstreams: dict[str, Upstream],
):
    """nginx started with a name that does not resolve; only that route fails (502)."""
    nginx, plan, inputs = proxy
    port = inputs.config.http_port
    status, _ = request(port, "POST", path_of(plan.proxied_telemetry.loki_urls["loki/1"]), b"x")
    assert status == 502
    assert "nowhere.invalid could not be resolved" in nginx.log()
    status, _ = request(port, "POST", path_of(plan.proxied_telemetry.loki_urls["loki/0"]), b"x")
    assert status == 200
    assert nginx.alive()


def test_unknown_paths_are_404(
    proxy: tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs],
):
    _, _, inputs = proxy
    port = inputs.config.http_port
    for path in [
        "/",
        "/proxy/worker/worker-9/metrics",
        "/proxy/worker/worker-0/metricsx",
        "/proxy/loki/loki-0/push/x",
        "/proxy/charm-tracing/otlp_grpc/x",
    ]:
        assert request(port, "GET", path)[0] == 404, path


def test_status_page_for_the_exporter(
    proxy: tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs],
):
    _, _, inputs = proxy
    status, body = request(inputs.status_port, "GET", "/status")
    assert status == 200
    assert body.startswith(b"Active connections:")
    assert request(inputs.status_port, "GET", "/other")[0] == 404


def test_reload_with_new_routes_and_unresolvable_names(
    proxy: tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs],
    upstreams: dict[str, Upstream],
    tmp_path: Path,
):
    nginx, _, inputs = proxy
    port = inputs.config.http_port
    changed = TelemetryProxyInputs(
        identity=inputs.identity,
        config=inputs.config,
        backend_loki_urls={
            "loki/2": f"http://loki-2.test:{upstreams['loki2'].port}/loki/api/v1/push",
            "loki/3": "http://loki-3.still-nowhere.invalid:3100/loki/api/v1/push",
        },
        resolvers=inputs.resolvers,
        status_port=inputs.status_port,
    )
    nginx.reload(render_nginx_config(build_telemetry_proxy(changed), nginx_settings(tmp_path)))
    # A reload is graceful: old worker processes may still take a connection for a moment after
    # the first one running the new configuration does. Wait until three requests in a row are
    # served by the new configuration (the old route gone, the new one answering).
    deadline = time.monotonic() + 15
    in_a_row, reply = 0, b""
    while in_a_row < 3:
        assert time.monotonic() < deadline, nginx.log()
        old_route = request(port, "GET", "/proxy/worker/worker-0/metrics")[0]
        status, reply = request(port, "POST", "/proxy/loki/loki-2/push", b"x")
        in_a_row = in_a_row + 1 if (old_route, status) == (404, 200) else 0
        if in_a_row == 0:
            time.sleep(0.1)
    assert reply.startswith(b"loki2 POST /loki/api/v1/push")
    assert nginx.alive()


def test_exact_routes_to_urls_without_a_path_send_root(
    nginx_bin: str, tmp_path: Path, upstreams: dict[str, Upstream], fake_dns: str
):
    """A backend URL without a path means ``/``: our ``/proxy/...`` path must not leak upstream."""
    config = WorkerTelemetryProxyConfig(http_port=free_port(), https_port=free_port())
    inputs = TelemetryProxyInputs(
        identity=IDENTITY,
        config=config,
        backend_loki_urls={"loki/0": f"http://bareloki.test:{upstreams['bareloki'].port}"},
        backend_remote_write_urls={
            "prometheus/0": f"http://bareprom.test:{upstreams['bareprom'].port}"
        },
        resolvers=[fake_dns],
        status_port=free_port(),
    )
    plan = build_telemetry_proxy(inputs)
    assert plan.problems == ()
    nginx = RunningNginx(nginx_bin, tmp_path, render_nginx_config(plan, nginx_settings(tmp_path)))
    try:
        wait_for_port(config.http_port)
        urls = plan.proxied_telemetry
        for path, name in (
            (path_of(urls.loki_urls["loki/0"]), "bareloki"),
            (path_of(urls.remote_write_urls[0]), "bareprom"),
        ):
            status, reply = request(config.http_port, "POST", path, b"x")
            assert status == 200, (path, reply, nginx.log())
            assert upstreams[name].seen[-1].path == "/"
    finally:
        nginx.stop()
