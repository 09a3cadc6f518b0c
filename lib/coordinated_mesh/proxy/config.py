"""What a coordinator charm configures of its telemetry proxy: the ports, and the query route.

A coordinator charm hands a :class:`WorkerTelemetryProxyConfig` (and optionally a
:class:`WorkerQueryApi`) to the ``Coordinator``; the routes are planned by
:mod:`coordinated_mesh.proxy.plan` and rendered by :mod:`coordinated_mesh.proxy.nginx`. Why
workers send telemetry through the coordinator: ``docs/explanation/telemetry-proxy.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["WorkerQueryApi", "WorkerTelemetryProxyConfig"]

_QUERY_PREFIX_RE = re.compile(r"(?:/[A-Za-z0-9_-]{1,63}){1,8}")
_DATASOURCE_TYPE_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")


def _check_port(name: str, port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{name} must be an integer port in 1..65535, not {port!r}")


@dataclass(frozen=True)
class WorkerTelemetryProxyConfig:
    """The ports on which the coordinator's telemetry proxy listens.

    Without TLS the proxy serves plain HTTP on ``http_port`` only. While it serves TLS (the
    coordinator has a certificate, see :meth:`listen_ports`):

    - ``https_port == http_port``: that one port serves TLS only (a plain-HTTP request there gets
      nginx's 400), and every URL handed out is ``https``;
    - ``https_port != http_port``: one server listens on both, TLS on ``https_port`` and plain
      HTTP kept on ``http_port``, so clients not yet switched to ``https`` keep working while
      the URLs change; every URL handed out is ``https`` on ``https_port``.

    The loopback ``stub_status`` port, which the exporter reads, always stays plain HTTP.

    Attributes:
        http_port: the port of the plain-HTTP proxy server (every ``/proxy/...`` route).
        https_port: the port the proxy serves TLS on while it has a certificate; it may equal
            ``http_port`` (then that port is TLS only while TLS is on).
        grpc_port: optional port of a separate HTTP/2 server that forwards gRPC tracing
            (``otlp_grpc``, ``jaeger_grpc``) for the workloads: cleartext (h2c) without TLS,
            HTTP/2 over TLS only while TLS is on. nginx 1.22 cannot serve HTTP/1.1 and
            prior-knowledge HTTP/2 on one cleartext port (``listen ... http2`` without TLS
            accepts only HTTP/2), so gRPC needs a port of its own. Without it, gRPC receivers are
            not offered to workers.

    Raises:
        ValueError: a port is outside 1..65535, or ``grpc_port`` collides with another port.
    """

    http_port: int
    https_port: int
    grpc_port: int | None = None

    def __post_init__(self) -> None:
        _check_port("http_port", self.http_port)
        _check_port("https_port", self.https_port)
        if self.grpc_port is not None:
            _check_port("grpc_port", self.grpc_port)
            if self.grpc_port in (self.http_port, self.https_port):
                raise ValueError(
                    f"grpc_port {self.grpc_port} must differ from http_port and https_port: "
                    "gRPC needs its own HTTP/2 listener"
                )

    @property
    def ports(self) -> frozenset[int]:
        """Every port the proxy listens on without TLS (without the local status port).

        The same as ``listen_ports(tls=False)``.
        """
        return self.listen_ports(tls=False)

    def listen_ports(self, *, tls: bool) -> frozenset[int]:
        """Every port the proxy listens on (without the local status port) for a TLS state.

        ``http_port`` (and ``grpc_port``) always; ``https_port`` joins while ``tls`` is on.
        """
        ports = {self.http_port}
        if tls:
            ports.add(self.https_port)
        if self.grpc_port is not None:
            ports.add(self.grpc_port)
        return frozenset(ports)

    def client_port(self, *, tls: bool) -> int:
        """The port every proxied URL names and scrapers use (``https_port`` with TLS)."""
        return self.https_port if tls else self.http_port


def _check_query_api(path_prefix: object, port: object, datasource_type: object) -> None:
    if not isinstance(path_prefix, str) or not _QUERY_PREFIX_RE.fullmatch(path_prefix):
        raise ValueError(
            "path_prefix must be '/' and segments of [A-Za-z0-9_-] without a trailing '/', "
            f"not {path_prefix!r}"
        )
    if path_prefix.split("/")[1] == "proxy":
        raise ValueError("path_prefix /proxy is reserved for the telemetry routes")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        raise ValueError(f"port must be None or an integer port in 1..65535, not {port!r}")
    if not isinstance(datasource_type, str) or not _DATASOURCE_TYPE_RE.fullmatch(datasource_type):
        raise ValueError(f"{datasource_type!r} is not a Grafana datasource type")


@dataclass(frozen=True)
class WorkerQueryApi:
    """A query API every worker serves, offered by the coordinator under one path prefix.

    A coordinator charm passes one to the ``Coordinator`` to turn the route on: a request for
    ``<path_prefix>/<rest>`` on the proxy's HTTP port goes to ``/<rest>`` (query string and body
    unchanged) on one worker unit, chosen per request, spread evenly over every worker unit that
    published a valid address. The coordinator then also publishes
    ``http://<its Service>:<http_port><path_prefix>`` as a Grafana datasource of
    ``datasource_type``.

    For Prometheus workers (the default) the worker's metrics port is its HTTP API, so
    ``port=None`` reuses it: ``/query/api/v1/query?query=up`` is ``/api/v1/query?query=up`` on a
    worker.

    Attributes:
        path_prefix: where the coordinator serves the API: ``/`` and one to eight segments of
            ``[A-Za-z0-9_-]``, no trailing ``/``. ``/proxy`` is reserved for the telemetry routes.
        port: the port the workers serve the API on; ``None`` means each worker's metrics port
            (``metrics_endpoint.port`` in its cluster databag).
        datasource_type: the Grafana datasource type of the API (``prometheus``, ``loki``, ...).

    Raises:
        ValueError: a value is not acceptable.
    """

    path_prefix: str = "/query"
    port: int | None = None
    datasource_type: str = "prometheus"

    def __post_init__(self) -> None:
        _check_query_api(self.path_prefix, self.port, self.datasource_type)

    @property
    def location(self) -> str:
        """The nginx prefix location: ``path_prefix`` and a ``/`` (``/query/``)."""
        return self.path_prefix + "/"

    @property
    def mesh_path(self) -> str:
        """The route as an Istio ``AuthorizationPolicy`` path: ``<path_prefix>/*``.

        Istio matches a path ending in ``*`` as a prefix (``/query/*`` allows ``/query/`` and
        everything under it, and not ``/proxy/...``); use it in the ``paths`` of the charm's
        policy for whoever queries (Grafana over ``grafana-source``).
        """
        return self.path_prefix + "/*"
