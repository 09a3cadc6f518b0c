"""The worker query API through a real nginx: prefix stripped, spread over the workers.

The workers are recording HTTP servers on loopback standing in for their Prometheus (see
``test_prometheus_through_proxy.py`` for real ones). One is addressed by IP, the other by a name
under ``.test`` that the tiny DNS server resolves only when a request needs it. Each test runs
on both renderings (``proxy_nginx``: nginx 1.22 ``$upstream``, nginx >= 1.27.3 pooled).
"""

from __future__ import annotations

import collections
import http.client
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import render_nginx_config
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    TelemetryProxyPlan,
    build_telemetry_proxy,
)
from coordinated_mesh.relations.cluster import JujuTopology, MetricsEndpoint, WorkerUnitData

from tests.support.nginx import (
    ProxyNginx,
    RunningNginx,
    Upstream,
    free_port,
    nginx_settings,
    wait_for_port,
)

IDENTITY = CoordinatorIdentity("coordinator", "mymodel", "12345678-1234-4234-8234-123456789abc")
REQUESTS = 60
"""Requests per spread check: all on one of two workers has probability 2**-59."""


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _worker(unit: str, address: str, port: int) -> WorkerUnitData:
    return WorkerUnitData(
        juju_topology=JujuTopology(
            application=unit.split("/", maxsplit=1)[0], unit=unit, charm_name="w"
        ),
        address=address,
        metrics_endpoint=MetricsEndpoint(port=port, path="/metrics"),
    )


def _start(
    proxy_nginx: ProxyNginx, tmp_path: Path, workers: list[WorkerUnitData], resolvers: list[str]
) -> tuple[RunningNginx, TelemetryProxyPlan, int]:
    port = free_port()
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=WorkerTelemetryProxyConfig(http_port=port, https_port=port),
            workers=workers,
            resolvers=resolvers,
            status_port=free_port(),
            worker_query_api=WorkerQueryApi(),
        )
    )
    assert plan.problems == ()
    settings = replace(
        nginx_settings(tmp_path, access_log=True), upstream_resolve=proxy_nginx.pooled
    )
    nginx = RunningNginx(proxy_nginx.binary, tmp_path, render_nginx_config(plan, settings))
    wait_for_port(port)
    time.sleep(proxy_nginx.settle_seconds)
    return nginx, plan, port


@pytest.fixture
def proxy(
    proxy_nginx: ProxyNginx, tmp_path: Path, upstreams: dict[str, Upstream], fake_dns: str
) -> Iterator[tuple[RunningNginx, int]]:
    workers = [
        _worker("worker/0", "127.0.0.1", upstreams["w0"].port),
        _worker("worker/1", "worker-1.test", upstreams["w1"].port),
    ]
    nginx, plan, port = _start(proxy_nginx, tmp_path, workers, [fake_dns])
    assert plan.query_route is not None and len(plan.query_route.backends) == 2
    try:
        yield nginx, port
    finally:
        nginx.stop()


def _who(reply: bytes) -> str:
    return reply.decode().split(" ", 1)[0]


def test_queries_reach_a_worker_with_the_prefix_stripped(
    proxy: tuple[RunningNginx, int], upstreams: dict[str, Upstream]
):
    nginx, port = proxy
    query = urllib.parse.urlencode({"query": 'up{job="a b"}', "time": "1.5"})
    cases = [
        # (method, path on the proxy, path a worker must see, body)
        ("GET", f"/query/api/v1/query?{query}", f"/api/v1/query?{query}", None),
        ("GET", "/query/api/v1/status/buildinfo", "/api/v1/status/buildinfo", None),
        ("GET", "/query/api/v1/label/__name__/values", "/api/v1/label/__name__/values", None),
        ("GET", "/query/", "/", None),
        ("POST", "/query/api/v1/query_range", "/api/v1/query_range", query.encode()),
        # An encoded newline is still stripped of the prefix (the rewrite is (?s)).
        ("GET", "/query/api/v1/a%0Ab", "/api/v1/a%0Ab", None),
    ]
    for method, path, upstream_path, body in cases:
        status, reply = request(port, method, path, body)
        assert status == 200, (path, reply, nginx.log())
        name = _who(reply)
        assert name in {"w0", "w1"}
        seen = upstreams[name].seen[-1]
        assert (seen.method, seen.path, seen.body) == (method, upstream_path, body or b"")
        assert seen.version == "HTTP/1.1"
        assert "Connection" not in seen.headers
        # The worker's own address as Host (pooled: not the upstream block's name).
        address = "127.0.0.1" if name == "w0" else "worker-1.test"
        assert seen.headers["Host"] == f"{address}:{upstreams[name].port}"
    assert nginx.alive()


def test_queries_are_spread_over_both_workers(
    proxy: tuple[RunningNginx, int], upstreams: dict[str, Upstream]
):
    nginx, port = proxy
    served = collections.Counter(
        _who(request(port, "GET", f"/query/api/v1/query?query=up&n={i}")[1])
        for i in range(REQUESTS)
    )
    assert set(served) == {"w0", "w1"}, (served, nginx.log())
    assert sum(served.values()) == REQUESTS
    for name in ("w0", "w1"):
        assert all(s.path.startswith("/api/v1/query?query=up&n=") for s in upstreams[name].seen)


def test_only_the_query_prefix_is_routed(
    proxy: tuple[RunningNginx, int], upstreams: dict[str, Upstream]
):
    _, port = proxy
    for path in ["/", "/queryx/api/v1/query", "/api/v1/query", "/Query/api/v1/query"]:
        assert request(port, "GET", path)[0] == 404, path
    assert request(port, "GET", "/query")[0] == 301  # nginx's redirect to /query/
    assert upstreams["w0"].seen == [] and upstreams["w1"].seen == []


def test_names_are_resolved_per_request_not_at_start(
    proxy_nginx: ProxyNginx, tmp_path: Path, upstreams: dict[str, Upstream], fake_dns: str
):
    """A worker name that does not resolve neither stops nginx nor breaks the other worker."""
    workers = [
        _worker("worker/0", "127.0.0.1", upstreams["w0"].port),
        _worker("worker/1", "worker-1.nowhere.invalid", 9090),
    ]
    nginx, _, port = _start(proxy_nginx, tmp_path, workers, [fake_dns])
    try:
        statuses = collections.Counter(
            request(port, "GET", f"/query/api/v1/query?query=up&n={i}")[0] for i in range(REQUESTS)
        )
        assert set(statuses) == {200, 502}, statuses
        assert "nowhere.invalid could not be resolved" in nginx.log()
        assert len(upstreams["w0"].seen) == statuses[200]
        assert nginx.alive()
    finally:
        nginx.stop()
