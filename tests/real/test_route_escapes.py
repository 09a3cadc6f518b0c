"""No route of the proxy reaches another, nor the proxy itself, nor its status page: real nginx.

Istio's default path normalization (BASE) resolves ``.``/``..`` segments and decodes ``%2E`` but
not ``%2F`` or ``%5C`` (istio.io/latest/docs/reference/config/security/normalization), so the
waypoint sees ``/query/..%2Fproxy%2F...`` under ``/query/``; nginx decodes ``%2F`` and resolves
``..`` before choosing a location. Every route pair is tried with every encoding of the escape:
each request must be refused and reach no upstream. Then a backend that names this proxy (by a
name the upstream policy cannot know: ``loop.test`` resolves to loopback) must not loop, and
``stub_status`` must not answer through any route.
"""

from __future__ import annotations

import dataclasses
import http.client
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from coordinated_mesh.parse import HttpUrl
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import render_nginx_config
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    HttpRoute,
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

# cluster domain "test": every FQDN resolves to loopback through the test DNS server.
IDENTITY = CoordinatorIdentity(
    "coordinator", "mymodel", "12345678-1234-4234-8234-123456789abc", cluster_domain="test"
)


def _worker(unit: str, port: int) -> WorkerUnitData:
    app, number = unit.split("/")
    return WorkerUnitData(
        juju_topology=JujuTopology(application=app, unit=unit, charm_name="w"),
        address=f"{app}-{number}.{app}-endpoints.mymodel.svc.test",
        metrics_endpoint=MetricsEndpoint(port=port, path="/metrics"),
    )


def request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 20
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def proxy(
    nginx_bin: str, tmp_path: Path, upstreams: dict[str, Upstream], fake_dns: str
) -> Iterator[tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs]]:
    config = WorkerTelemetryProxyConfig(http_port=free_port(), https_port=free_port())
    inputs = TelemetryProxyInputs(
        identity=IDENTITY,
        config=config,
        workers=[_worker("worker/0", upstreams["worker0"].port)],
        backend_loki_urls={"loki/0": f"http://loki-0.test:{upstreams['loki'].port}/push"},
        backend_remote_write_urls={"prom/0": f"http://prom.test:{upstreams['prom'].port}/write"},
        backend_charm_tracing_receivers={"otlp_http": f"http://ct.test:{upstreams['ct'].port}"},
        backend_workload_tracing_receivers={
            "otlp_http": f"http://wt.test:{upstreams['wt'].port}",
            "zipkin": f"http://zipkin.test:{upstreams['zipkin'].port}",
        },
        resolvers=[fake_dns],
        status_port=free_port(),
        worker_query_api=WorkerQueryApi(),
    )
    plan = build_telemetry_proxy(inputs)
    assert plan.problems == ()
    with serving(nginx_bin, tmp_path, plan) as nginx:
        yield nginx, plan, inputs


def _sources(plan: TelemetryProxyPlan) -> list[str]:
    """Every route's location as a directory an allowed client may send under."""
    dirs = [r.location if not r.exact else r.location + "/" for r in plan.http_routes]
    assert plan.query_route is not None
    return [*dirs, plan.query_route.location]


def _targets(plan: TelemetryProxyPlan) -> list[str]:
    """A path on every route (the query API's too)."""
    paths = [r.location if r.exact else r.location + "v1/traces" for r in plan.http_routes]
    assert plan.query_route is not None
    return [*paths, plan.query_route.location + "api/v1/query"]


# (separator between segments, dot-dot): each is one way nginx and a waypoint may disagree.
ENCODINGS = [
    ("%2F", ".."),
    ("%2f", ".."),
    ("%5C", ".."),
    ("%5c", ".."),
    ("\\", ".."),
    ("/", "%2E%2E"),
    ("/", "%2e."),
    ("%2F", "%2e%2e"),
    ("/", ".."),
]


def _escapes(source: str, target: str) -> list[str]:
    depth = source.strip("/").count("/") + 1
    paths: list[str] = []
    for sep, dots in ENCODINGS:
        ups = sep.join([dots] * depth)
        rest = target.lstrip("/").replace("/", sep)
        paths.append(f"{source}{ups}{sep}{rest}")
        paths.append(f"{source}{ups}{sep}{rest}?x=%2F")
    return paths


def test_no_route_reaches_another_whatever_the_encoding(
    proxy: tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs],
    upstreams: dict[str, Upstream],
):
    nginx, plan, inputs = proxy
    port = inputs.config.http_port
    tried = 0
    for source in _sources(plan):
        for target in _targets(plan):
            if target.startswith(source):
                continue
            for path in _escapes(source, target):
                for method in ("GET", "POST"):
                    status, reply = request(port, method, path, b"x" if method == "POST" else None)
                    assert status == 400, (method, path, status, reply)
                    tried += 1
    assert tried > 500
    assert all(not upstream.seen for upstream in upstreams.values()), {
        name: [s.path for s in u.seen] for name, u in upstreams.items()
    }
    assert nginx.alive()


def test_the_refusal_keeps_legitimate_requests(
    proxy: tuple[RunningNginx, TelemetryProxyPlan, TelemetryProxyInputs],
    upstreams: dict[str, Upstream],
):
    """Encoded slashes in the query string (PromQL) and dots inside a segment still pass."""
    _, plan, inputs = proxy
    port = inputs.config.http_port
    status, reply = request(port, "GET", "/query/api/v1/query?query=a%2Fb&x=..%2F..")
    assert status == 200, reply
    assert upstreams["worker0"].seen[-1].path == "/api/v1/query?query=a%2Fb&x=..%2F.."
    route = "/proxy/workload-tracing/otlp_http/v1/a.b..c"
    assert request(port, "POST", route, b"x")[0] == 200
    assert upstreams["wt"].seen[-1].path == "/v1/a.b..c"
    assert plan.query_route is not None


def test_a_backend_that_is_this_proxy_does_not_loop(nginx_bin: str, tmp_path: Path, fake_dns: str):
    """``loop.test`` is this proxy (127.0.0.1, its own port): the request comes back marked."""
    config = WorkerTelemetryProxyConfig(http_port=free_port(), https_port=free_port())
    own = f"http://loop.test:{config.http_port}"
    inputs = TelemetryProxyInputs(
        identity=IDENTITY,
        config=config,
        backend_loki_urls={"loki/0": f"{own}/proxy/loki/loki-0/push"},
        backend_charm_tracing_receivers={"otlp_http": f"{own}/proxy/charm-tracing/otlp_http"},
        resolvers=[fake_dns],
        status_port=free_port(),
    )
    plan = build_telemetry_proxy(inputs)
    assert plan.problems == ()
    nginx = RunningNginx(
        nginx_bin, tmp_path, render_nginx_config(plan, nginx_settings(tmp_path, access_log=True))
    )
    try:
        wait_for_port(config.http_port)
        body = b"x" * (2 << 20)  # the 2 MiB push that once took 37 s and 2 GiB
        for path in ("/proxy/loki/loki-0/push", "/proxy/charm-tracing/otlp_http/v1/traces"):
            started = time.monotonic()
            status, _ = request(config.http_port, "POST", path, body, timeout=10)
            assert status == 508, path
            assert time.monotonic() - started < 5
        # Each push went round exactly once: the client's request, then its one loop-back.
        deadline = time.monotonic() + 5  # nginx logs a request after answering it
        while len(access := (tmp_path / "access.log").read_text().splitlines()) < 4:
            assert time.monotonic() < deadline, access
            time.sleep(0.05)
        time.sleep(0.5)
        access = (tmp_path / "access.log").read_text().splitlines()
        assert len(access) == 4, access
        assert sum(" 508 " in line for line in access) == 4, access
        assert nginx.alive()
    finally:
        nginx.stop()


def test_stub_status_is_unreachable_through_any_route(
    nginx_bin: str, tmp_path: Path, upstreams: dict[str, Upstream], fake_dns: str
):
    """Whatever route points at the loopback status page, the page refuses the proxied request."""
    config = WorkerTelemetryProxyConfig(http_port=free_port(), https_port=free_port())
    status_port = free_port()
    inputs = TelemetryProxyInputs(
        identity=IDENTITY,
        config=config,
        workers=[_worker("worker/0", upstreams["worker0"].port)],
        resolvers=[fake_dns],
        status_port=status_port,
    )
    plan = build_telemetry_proxy(inputs)
    # A route to the status page, as a worker address of 127.0.0.1 once made (the planner
    # refuses loopback backends; the rendering must hold even for a plan that has one).
    evil = HttpRoute(
        location="/proxy/worker/evil-0/metrics",
        exact=True,
        upstream=HttpUrl("http", "127.0.0.1", status_port, "/status"),
    )
    plan = dataclasses.replace(plan, http_routes=(*plan.http_routes, evil))
    nginx = RunningNginx(nginx_bin, tmp_path, render_nginx_config(plan, nginx_settings(tmp_path)))
    try:
        wait_for_port(config.http_port)
        status, body = request(config.http_port, "GET", evil.location)
        assert status == 403, body
        assert b"Active connections" not in body
        # The exporter, which asks directly, still gets the page.
        status, body = request(status_port, "GET", "/status")
        assert status == 200 and body.startswith(b"Active connections:")
        assert request(config.http_port, "GET", "/proxy/worker/worker-0/metrics")[0] == 200
    finally:
        nginx.stop()
