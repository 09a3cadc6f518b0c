"""WorkerTelemetryProxyConfig: the proxy's ports, checked when the charm builds it."""

from __future__ import annotations

from typing import Any

import pytest
from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig


def test_one_port_for_http_and_https_listens_once():
    config = WorkerTelemetryProxyConfig(http_port=8080, https_port=8080)
    assert config.ports == frozenset({8080})


def test_grpc_gets_its_own_listener():
    config = WorkerTelemetryProxyConfig(http_port=8080, https_port=8080, grpc_port=4317)
    assert config.ports == frozenset({8080, 4317})


def test_https_port_is_not_listened_on_while_tls_is_not_served():
    config = WorkerTelemetryProxyConfig(http_port=8080, https_port=8443)
    assert 8443 not in config.ports


@pytest.mark.parametrize(
    "kwargs",
    [
        {"http_port": 0, "https_port": 8080},
        {"http_port": 8080, "https_port": 65536},
        {"http_port": True, "https_port": 8080},
        {"http_port": "8080", "https_port": 8080},
        {"http_port": 8080, "https_port": 8080, "grpc_port": -1},
    ],
)
def test_invalid_ports_are_rejected(kwargs: dict[str, Any]):
    with pytest.raises(ValueError, match="must be an integer port"):
        WorkerTelemetryProxyConfig(**kwargs)


@pytest.mark.parametrize("grpc_port", [8080, 8443])
def test_grpc_port_must_not_share_a_port_with_http(grpc_port: int):
    with pytest.raises(ValueError, match="its own HTTP/2 listener"):
        WorkerTelemetryProxyConfig(http_port=8080, https_port=8443, grpc_port=grpc_port)
