"""Decide: what the coordinator wants this hook, a pure function of what it observed.

:func:`decide` turns a :class:`~coordinated_mesh.coordinator.snapshot.Snapshot` and the charm's
own settings (:class:`CoordinatorSpec`) into a :class:`Decision`: the proxy plan and its nginx
text, the pod labels, the cluster-internal policies, and the cluster databag both as it is when
the policies apply and as it must stay when they cannot. Equal inputs give equal decisions, so
nothing is rewritten or reloaded when nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coordinated_mesh.coordinator.snapshot import Snapshot
from coordinated_mesh.coordinator.tls import TlsFile, server_ca_path, tls_backends, tls_files
from coordinated_mesh.mesh.cluster_policies import build_cluster_policies, held_labels, pod_labels
from coordinated_mesh.mesh.policies import AppPolicy, Endpoint, MeshPolicy, Method, UnitPolicy
from coordinated_mesh.parse import Problem
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import NginxSettings, render_nginx_config
from coordinated_mesh.proxy.pebble import EXPORTER_PORT
from coordinated_mesh.proxy.plan import (
    TelemetryProxyInputs,
    TelemetryProxyPlan,
    build_telemetry_proxy,
)
from coordinated_mesh.relations.cluster import CoordinatorAppData

__all__ = [
    "WORKER_METRICS_PATH_PATTERN",
    "CoordinatorSpec",
    "Decision",
    "decide",
    "default_mesh_policies",
]

WORKER_METRICS_PATH_PATTERN = "/proxy/worker/{*}/metrics"
"""The proxied worker metrics paths, as an Istio path template (one segment: the worker unit)."""


@dataclass(frozen=True)
class CoordinatorSpec:
    """The coordinator charm's own settings (not observed: given to the ``Coordinator``)."""

    proxy_config: WorkerTelemetryProxyConfig
    query_api: WorkerQueryApi | None = None
    nginx_settings: NginxSettings = field(default_factory=NginxSettings)
    """How nginx is rendered; ``upstream_resolve`` follows the image's nginx version."""


@dataclass(frozen=True)
class Decision:
    """Everything the coordinator wants this hook."""

    proxy: TelemetryProxyPlan
    nginx_config: str
    ports: tuple[int, ...]
    """The ports the unit opens: the proxy's and the exporter's."""
    labels: Mapping[str, str]
    """Our pods' labels: membership, plus the beacon's while the mesh is active."""
    cluster_policies: tuple[MeshPolicy, ...]
    """What the cluster needs: applied while the mesh is active, kept after it while pods of the
    cluster are still enrolled, deleted once none is."""
    app_data: CoordinatorAppData
    """The cluster databag when the policies are in place (or the mesh is not wanted)."""
    tracing_protocols: Mapping[str, tuple[str, ...]]
    """What to request from each tracing endpoint: what the proxy can forward."""
    tls_backends: tuple[tuple[str, int, bool], ...] = ()
    """The backends that serve TLS, ``(host, port, grpc)``: what nginx verifies."""
    tls_files: tuple[TlsFile, ...] = ()
    """The files nginx reads for TLS (written before it reloads), the key first."""
    stale_tls_paths: tuple[str, ...] = ()
    """The server certificate files no longer served (removed once nginx stopped reading them)."""
    problems: tuple[Problem, ...] = ()
    """Remote data dropped while reading or planning, deduplicated, in order."""

    def held_app_data(
        self, published_worker_labels: Mapping[str, str] | None, coordinator_app: str
    ) -> CoordinatorAppData:
        """The cluster databag while the mesh is wanted but its policies cannot be applied.

        The workers' labels stay as published before (``published_worker_labels``, read only
        then; see :func:`~coordinated_mesh.mesh.cluster_policies.held_labels`).
        """
        held = held_labels(published_worker_labels, coordinator_app)
        return self.app_data.model_copy(update={"worker_labels": held})


def default_mesh_policies(
    proxy: WorkerTelemetryProxyConfig, *, metrics_endpoint: str
) -> list[AppPolicy | UnitPolicy]:
    """The external policies every coordinator needs, before the charm's own ones.

    * whoever scrapes us over ``metrics_endpoint`` may reach the nginx exporter on every unit;
    * and may ``GET`` the proxied worker metrics on the coordinator's Service, on the ports the
      published scrape jobs point at: ``http_port`` without TLS, ``https_port`` with it (both
      are allowed, so switching TLS on or off needs no policy change and opens no deny window).
    """
    return [
        UnitPolicy(relation=metrics_endpoint, ports=[EXPORTER_PORT]),
        AppPolicy(
            relation=metrics_endpoint,
            endpoints=[
                Endpoint(
                    ports=sorted({proxy.http_port, proxy.https_port}),
                    methods=[Method.get],
                    paths=[WORKER_METRICS_PATH_PATTERN],
                )
            ],
        ),
    ]


def _tracing_protocols(spec: CoordinatorSpec, snapshot: Snapshot) -> dict[str, tuple[str, ...]]:
    endpoints = snapshot.endpoints
    workload = ("otlp_http", "otlp_grpc") if spec.proxy_config.grpc_port else ("otlp_http",)
    return {endpoints.charm_tracing: ("otlp_http",), endpoints.workload_tracing: workload}


def _unique(problems: Sequence[Problem]) -> tuple[Problem, ...]:
    return tuple(dict.fromkeys(problems))


def decide(spec: CoordinatorSpec, snapshot: Snapshot) -> Decision:
    """What the coordinator wants, given what it observed (pure)."""
    app = snapshot.identity.app_name
    certificate = snapshot.tls.certificate
    trust = snapshot.tls.upstream_trust
    proxy = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=snapshot.identity,
            config=spec.proxy_config,
            workers=snapshot.workers,
            backend_loki_urls=snapshot.backend_loki_urls,
            backend_remote_write_urls=snapshot.backend_remote_write_urls,
            backend_charm_tracing_receivers=snapshot.backend_charm_tracing_receivers,
            backend_workload_tracing_receivers=snapshot.backend_workload_tracing_receivers,
            resolvers=snapshot.resolvers,
            endpoints=snapshot.endpoints,
            worker_query_api=spec.query_api,
            server_ca_cert=certificate.ca if certificate is not None else None,
            upstream_trust=bool(trust),
        )
    )
    settings = spec.nginx_settings
    backends = tls_backends(proxy)
    files = tls_files(
        certificate if proxy.tls else None,
        # Only nginx's TLS backend locations read the trust file: without one, no file to keep.
        trust if backends else "",
        server_cert_path=settings.server_cert_path,
        server_key_path=settings.server_key_path,
        server_ca_path=server_ca_path(settings),
        upstream_ca_path=settings.upstream_ca_path,
    )
    stale = (
        ()
        if proxy.tls
        else (
            settings.server_key_path,
            settings.server_cert_path,
            server_ca_path(settings),
        )
    )
    labels = pod_labels(app, snapshot.mesh.labels if snapshot.mesh.active else None)
    app_data = CoordinatorAppData.compose(
        worker_labels=labels,
        worker_config=snapshot.worker_config,
        telemetry=proxy.proxied_telemetry,
    )
    return Decision(
        proxy=proxy,
        nginx_config=render_nginx_config(proxy, spec.nginx_settings),
        ports=tuple(sorted(proxy.listen_ports | {EXPORTER_PORT})),
        labels=labels,
        cluster_policies=tuple(
            build_cluster_policies(
                coordinator_app=app,
                namespace=snapshot.identity.model_name,
                worker_apps=snapshot.worker_apps,
            )
        ),
        app_data=app_data,
        tracing_protocols=_tracing_protocols(spec, snapshot),
        tls_backends=backends,
        tls_files=files,
        stale_tls_paths=stale,
        problems=_unique([*snapshot.problems, *proxy.problems]),
    )
