"""Connection reuse without giving up request-time DNS, on both nginx versions the proxy supports.

Each test runs twice: on Debian bookworm's nginx 1.22 with today's rendering (``proxy_pass
$upstream``: a new connection per request), and on nginx >= 1.27.3 (the Debian forky root of
``tools/nginx-forky.sh``) with ``NginxSettings(upstream_resolve=True)``: one pooled ``upstream``
block per backend, ``server host:port resolve``. Upstreams count the TCP connections they accept;
the DNS server on loopback (see conftest) changes its answers while nginx runs: a backend whose
name stops resolving, then comes back, and one that moves to another address.
"""

from __future__ import annotations

import dataclasses
import http.client
import time
from collections.abc import Callable, Iterator
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

from tests.support.nginx import (
    DnsServer,
    RunningNginx,
    Upstream,
    free_port,
    nginx_settings,
    nginx_test,
    start_upstream,
    wait_for_port,
)

IDENTITY = CoordinatorIdentity("coordinator", "mymodel", "12345678-1234-4234-8234-123456789abc")
REQUESTS = 40
BODY = b"x" * 1024


@dataclasses.dataclass
class Flavour:
    nginx: str
    pooled: bool


@pytest.fixture(params=["nginx-1.22-variables", "nginx-1.27.3+-pooled"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    if request.param == "nginx-1.22-variables":
        return Flavour(request.getfixturevalue("nginx_bin"), pooled=False)
    return Flavour(request.getfixturevalue("nginx_resolve_bin"), pooled=True)


def post(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", path, body=BODY)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


@dataclasses.dataclass
class Proxy:
    nginx: RunningNginx
    plan: TelemetryProxyPlan
    port: int
    config: str

    def loki(self, unit: str) -> str:
        return path_of(self.plan.proxied_telemetry.loki_urls[unit])


def _plan(loki: dict[str, str], resolver: str) -> TelemetryProxyPlan:
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=WorkerTelemetryProxyConfig(http_port=free_port(), https_port=free_port()),
            workers=[],
            backend_loki_urls=loki,
            resolvers=[resolver],
            status_port=free_port(),
        )
    )
    assert plan.problems == ()
    return plan


@pytest.fixture
def start(flavour: Flavour, tmp_path: Path) -> Iterator[Callable[[dict[str, str], str], Proxy]]:
    running: list[RunningNginx] = []

    def start(loki: dict[str, str], resolver: str) -> Proxy:
        plan = _plan(loki, resolver)
        settings = dataclasses.replace(
            nginx_settings(tmp_path), upstream_resolve=flavour.pooled, resolver_valid_seconds=1
        )
        config = render_nginx_config(plan, settings)
        assert ("upstream http_" in config) is flavour.pooled
        nginx = RunningNginx(flavour.nginx, tmp_path, config)
        running.append(nginx)
        wait_for_port(plan.config.http_port)
        return Proxy(nginx, plan, plan.config.http_port, config)

    yield start
    for nginx in running:
        nginx.stop()


def _resolver(dns: DnsServer) -> str:
    return f"127.0.0.1:{dns.server_address[1]}"


def ready(proxy: Proxy, unit: str) -> None:
    """Wait for the first success: a pooled name is resolved just after nginx starts (within
    milliseconds, asynchronously), and a request before that finds no server (502)."""
    eventually(lambda: post(proxy.port, proxy.loki(unit))[0] == 200, f"{unit} answers", 5)


def test_connections_to_a_backend_are_reused(
    flavour: Flavour,
    start: Callable[[dict[str, str], str], Proxy],
    upstreams: dict[str, Upstream],
    dns: DnsServer,
):
    """Two backends by name (resolved by nginx): pooled, N requests share one connection.

    (A backend by IP address is rendered as a static ``server`` in its block, see
    ``tests/unit/test_nginx_pooled.py``; the upstream policy refuses loopback addresses, the only
    ones a test backend may listen on here, so traffic tests reach backends by name.)
    """
    by_name, second = upstreams["by_name"], upstreams["second"]
    proxy = start(
        {
            "loki/0": f"http://loki-0.test:{by_name.port}/loki/api/v1/push",
            "loki/1": f"http://loki-1.test:{second.port}/loki/api/v1/push",
        },
        _resolver(dns),
    )
    ready(proxy, "loki/0")
    ready(proxy, "loki/1")
    before = {upstream.name: upstream.connections for upstream in (by_name, second)}
    for _ in range(REQUESTS):
        for unit in ("loki/0", "loki/1"):
            status, reply = post(proxy.port, proxy.loki(unit))
            assert status == 200, (reply, proxy.nginx.log())
    for upstream in (by_name, second):
        assert len(upstream.seen) == REQUESTS + 1
        assert all(seen.path == "/loki/api/v1/push" for seen in upstream.seen)
        assert all("Connection" not in seen.headers for seen in upstream.seen)
        opened = upstream.connections - before[upstream.name]
        if flavour.pooled:
            # One worker process, one request at a time: the warm-up's connection is reused.
            assert opened <= 1, opened
        else:
            assert opened == REQUESTS  # proxy_pass $variable: no pool
    # The backend sees its own name, as without pools (not the upstream block's name).
    assert by_name.seen[-1].headers["Host"] == f"loki-0.test:{by_name.port}"
    assert second.seen[-1].headers["Host"] == f"loki-1.test:{second.port}"


def test_a_backend_that_stops_resolving_never_stops_nginx(
    start: Callable[[dict[str, str], str], Proxy],
    upstreams: dict[str, Upstream],
    dns: DnsServer,
    tmp_path: Path,
):
    """Its requests fail (502) while the others work; nginx reloads and starts; it comes back."""
    stays, goes = upstreams["stays"], upstreams["goes"]
    proxy = start(
        {
            "loki/0": f"http://loki-0.test:{stays.port}/loki/api/v1/push",
            "loki/1": f"http://loki-1.test:{goes.port}/loki/api/v1/push",
        },
        _resolver(dns),
    )
    ready(proxy, "loki/0")
    ready(proxy, "loki/1")

    dns.names["loki-1.test"] = None
    eventually(lambda: post(proxy.port, proxy.loki("loki/1"))[0] == 502, "loki-1 fails")
    assert post(proxy.port, proxy.loki("loki/0"))[0] == 200

    proxy.nginx.reload(proxy.config)
    time.sleep(1)  # the old workers finish; the new ones serve
    assert proxy.nginx.alive(), proxy.nginx.log()
    assert post(proxy.port, proxy.loki("loki/0"))[0] == 200
    assert post(proxy.port, proxy.loki("loki/1"))[0] == 502

    proxy.nginx.stop()
    assert nginx_test(proxy.nginx.nginx, proxy.config, tmp_path).returncode == 0
    restarted = RunningNginx(proxy.nginx.nginx, tmp_path, proxy.config)
    try:
        wait_for_port(proxy.port)
        assert restarted.alive(), restarted.log()
        ready(proxy, "loki/0")
        assert post(proxy.port, proxy.loki("loki/1"))[0] == 502

        del dns.names["loki-1.test"]
        eventually(lambda: post(proxy.port, proxy.loki("loki/1"))[0] == 200, "loki-1 is back")
        assert goes.seen[-1].path == "/loki/api/v1/push"
    finally:
        restarted.stop()


def test_a_backend_that_moves_is_followed(
    start: Callable[[dict[str, str], str], Proxy], dns: DnsServer
):
    """A name re-resolved to another address (a rescheduled pod) gets the requests there."""
    port = free_port()
    old = start_upstream("old", ("127.0.0.1", port))
    new = start_upstream("new", ("127.0.0.2", port))
    try:
        proxy = start({"loki/0": f"http://loki-0.test:{port}/push"}, _resolver(dns))
        ready(proxy, "loki/0")
        assert old.seen and not new.seen

        dns.names["loki-0.test"] = "127.0.0.2"
        eventually(
            lambda: post(proxy.port, proxy.loki("loki/0"))[1].startswith("new "), "moved to new"
        )
        count = len(old.seen)
        for _ in range(5):
            assert post(proxy.port, proxy.loki("loki/0"))[1].startswith("new ")
        assert len(old.seen) == count  # nothing goes to the old address any more
    finally:
        for upstream in (old, new):
            upstream.server.shutdown()
            upstream.server.server_close()


def test_pooled_rendering_needs_nginx_1_27_3(nginx_bin: str, tmp_path: Path, dns: DnsServer):
    """Why the setting exists: Debian 12's nginx 1.22 refuses ``server ... resolve``."""
    plan = _plan({"loki/0": "http://loki-0.test:3100/push"}, _resolver(dns))
    settings = dataclasses.replace(nginx_settings(tmp_path), upstream_resolve=True)
    done = nginx_test(nginx_bin, render_nginx_config(plan, settings), tmp_path)
    assert done.returncode != 0
    assert 'invalid parameter "resolve"' in done.stderr
