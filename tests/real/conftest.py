"""Fixtures for tests that run the real nginx (and prometheus).

Every test in this directory is marked ``nginx``. A missing binary skips the test with the reason
(or fails it under ``REAL_BINARIES_REQUIRED=1``, as in CI), see ``tests/binaries.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.binaries import require_binary, require_nginx_with_upstream_resolve
from tests.support.nginx import DnsServer, ProxyNginx, Upstream, start_dns, start_upstream


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.nginx)


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    return require_binary("nginx")


@pytest.fixture(scope="session")
def nginx_resolve_bin() -> str:
    """nginx >= 1.27.3 (``server ... resolve`` in an upstream): the forky root's."""
    return require_nginx_with_upstream_resolve()


@pytest.fixture(params=["nginx-1.22", "nginx-1.27.3+-pooled"])
def proxy_nginx(request: pytest.FixtureRequest) -> ProxyNginx:
    """Each rendering on the nginx it is for: 1.22 (``$upstream``), >= 1.27.3 (pooled)."""
    if request.param == "nginx-1.22":
        return ProxyNginx(request.getfixturevalue("nginx_bin"), pooled=False)
    return ProxyNginx(request.getfixturevalue("nginx_resolve_bin"), pooled=True)


@pytest.fixture
def upstreams() -> Iterator[dict[str, Upstream]]:
    """Recording HTTP upstreams, started on first use: ``upstreams["loki"].port``."""
    created: dict[str, Upstream] = {}

    class Factory(dict[str, Upstream]):
        def __missing__(self, name: str) -> Upstream:
            created[name] = self[name] = start_upstream(name)
            return created[name]

    yield Factory()
    for upstream in created.values():
        upstream.server.shutdown()
        upstream.server.server_close()


@pytest.fixture
def fake_dns() -> Iterator[str]:
    """A DNS server on loopback (``127.0.0.1:<port>``): ``*.test`` -> 127.0.0.1, else NXDOMAIN."""
    server = start_dns()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    """The same DNS server, whose answers a test changes (``dns.names["x.test"] = None``)."""
    server = start_dns()
    yield server
    server.shutdown()
    server.server_close()
