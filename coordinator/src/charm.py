#!/usr/bin/env python3
"""The coordinator of a coordinated-worker cluster, on an Istio ambient mesh.

Everything generic (telemetry proxy, the workers' query API, pod labels, cluster-internal and
external mesh policies, statuses, the ``show-mesh`` action, clean-up on removal) is done by
:class:`coordinated_mesh.Coordinator` on every hook. This file only declares what is
specific to this charm: the proxy ports, the workload configuration the workers run with, the query
API the workers serve (Prometheus, offered as ``/query`` and published to Grafana over
``grafana-source``), and who else may reach the coordinator (Grafana, on that route only).

Ports: 8080 (HTTP: telemetry proxy and query API), 4317 (gRPC: the workers' OTLP traces), 9113
(the nginx exporter) and, on loopback only, 8081 (nginx's ``stub_status`` for the exporter). The
workers reach 8080 and 4317 through the coordinator's Service, which the cluster-internal policy
"each worker application -> the coordinator's Service" allows on any port.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import ops
from coordinated_mesh import (
    AppPolicy,
    Coordinator,
    Endpoint,
    Method,
    WorkerQueryApi,
    WorkerTelemetryProxyConfig,
)

HTTP_PORT = 8080
"""The coordinator's nginx port: the workers' telemetry proxy and the cluster's query API."""
HTTPS_PORT = 8443
"""The same routes over TLS while the coordinator has a certificate (``certificates``). A port
of its own, so that plain HTTP keeps serving the workers that have not switched yet when TLS is
turned on or off: no log line or sample is lost in the switch."""
GRPC_PORT = 4317
"""The coordinator's gRPC (h2c) port for the workers' OTLP traces: the standard OTLP gRPC port.

Prometheus workers send traces only to a ``host:port`` (OTLP gRPC, or OTLP/HTTP without a path),
so the proxy's ``/proxy/workload-tracing/otlp_http`` URL is of no use to them: with this port the
coordinator asks Tempo for ``otlp_grpc`` too and hands the workers ``<coordinator Service>:4317``.
"""
NGINX_UPSTREAM_RESOLVE = True
"""The ``nginx-image`` resource (charmcraft.yaml: ``nginx:1.28``, nginx's own image) runs nginx
1.28, which pools connections to re-resolved backends (``server ... resolve``, since 1.27.3).
Set ``False`` with an older nginx (the ``ubuntu/nginx:1.24`` rock), which refuses it."""

QUERY_API = WorkerQueryApi(path_prefix="/query", datasource_type="prometheus")
"""``/query/<path>`` on the coordinator is ``/<path>`` on one worker's Prometheus (its metrics
port, 9090), e.g. ``/query/api/v1/query?query=up``; Grafana gets it as a ``prometheus`` datasource."""

WORKER_CONFIG = """\
global:
  scrape_interval: 1m
  evaluation_interval: 1m
"""
"""The Prometheus configuration every worker starts from (the worker adds its telemetry URLs)."""


class MeshCoordinatorCharm(ops.CharmBase):
    """The mesh coordinator: a :class:`Coordinator` and this charm's own mesh policies."""

    kubernetes_backend_factory: ClassVar[Callable[..., Any] | None] = None
    """The Kubernetes backend seam: ``None`` is the cluster the charm runs in; tests set a fake
    on a subclass."""
    resolv_conf: ClassVar[str | None] = None
    """Where nginx's DNS resolvers are read (``None``: ``/etc/resolv.conf``); tests set a file."""
    system_ca_bundle: ClassVar[str | None] = None
    """The system CA bundle trusted for TLS backends (``None``: the charm container's)."""
    tls_backend_check: ClassVar[Callable[..., str | None] | None] = None
    """How a TLS backend is verified for the status (``None``: a real handshake)."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.coordinator = Coordinator(
            self,
            worker_telemetry_proxy_config=WorkerTelemetryProxyConfig(
                http_port=HTTP_PORT, https_port=HTTPS_PORT, grpc_port=GRPC_PORT
            ),
            worker_query_api=QUERY_API,
            nginx_upstream_resolve=NGINX_UPSTREAM_RESOLVE,
            charm_mesh_policies=[
                # Grafana queries the workers' Prometheus API through the coordinator's nginx:
                # GET and POST (Grafana's default for queries) under /query/ (an Istio prefix
                # match), on the coordinator's Service, and nothing else.
                AppPolicy(
                    relation="grafana-source",
                    endpoints=[
                        Endpoint(
                            ports=[HTTP_PORT, HTTPS_PORT],
                            methods=[Method.get, Method.post],
                            paths=[QUERY_API.mesh_path],
                        )
                    ],
                ),
            ],
            worker_config=lambda: WORKER_CONFIG,
            kubernetes_backend_factory=self.kubernetes_backend_factory,
            resolv_conf=self.resolv_conf,
            system_ca_bundle=self.system_ca_bundle,
            tls_backend_check=self.tls_backend_check,
        )


if __name__ == "__main__":  # pragma: nocover
    ops.main(MeshCoordinatorCharm)
