"""The names of a coordinator's relation endpoints, in one place.

The ``Coordinator`` takes each as a ``*_endpoint`` argument and groups them in
:class:`CoordinatorEndpoints`, which every reader, writer, problem and status text uses, so a
charm that renames an endpoint sees its own name everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CoordinatorEndpoints"]


@dataclass(frozen=True)
class CoordinatorEndpoints:
    """A coordinator's relation endpoint names (each a key of ``charmcraft.yaml``'s relations).

    Attributes:
        cluster: the ``cluster`` relation to the workers (provides).
        metrics: ``prometheus_scrape`` (provides).
        logging: ``loki_push_api`` (requires).
        remote_write: ``prometheus_remote_write`` (requires).
        charm_tracing: ``tracing``, for the workers' charm traces (requires).
        workload_tracing: ``tracing``, for the workers' workload traces (requires).
        grafana_source: ``grafana_datasource`` (provides), where the query API is published;
            ``None``: not published.
        mesh: ``service_mesh``, to the beacon (requires).
        cross_model_mesh_requires: ``cross_model_mesh`` (requires).
        cross_model_mesh_provides: ``cross_model_mesh`` (provides).
        certificates: ``tls-certificates`` (requires), the proxy's server certificate;
            ``None``: the proxy never serves TLS.
        receive_ca_cert: ``certificate_transfer`` (requires), CAs trusted for TLS backends;
            ``None``: only the system bundle is trusted.
    """

    cluster: str = "cluster"
    metrics: str = "metrics-endpoint"
    logging: str = "logging"
    remote_write: str = "send-remote-write"
    charm_tracing: str = "charm-tracing"
    workload_tracing: str = "workload-tracing"
    grafana_source: str | None = "grafana-source"
    mesh: str = "service-mesh"
    cross_model_mesh_requires: str = "require-cmr-mesh"
    cross_model_mesh_provides: str = "provide-cmr-mesh"
    certificates: str | None = "certificates"
    receive_ca_cert: str | None = "receive-ca-cert"
