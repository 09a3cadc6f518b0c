"""Observe: everything the coordinator reads in one hook, once, as a frozen :class:`Snapshot`.

:func:`observe` reads the relations, the beacon's data, the DNS resolvers, the labels already
published to the workers and the charm's workload configuration; remote data is parsed on the way
in and what is dropped becomes a :class:`~coordinated_mesh.parse.Problem`. Nothing here writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import ops

from coordinated_mesh.coordinator.tls import (
    SYSTEM_CA_BUNDLE,
    TlsState,
    read_system_ca_bundle,
    served_certificate,
    server_ca_path,
)
from coordinated_mesh.mesh.consumer import ServiceMeshConsumer
from coordinated_mesh.parse import Problem, nameservers_from_resolv_conf, unit_fqdn
from coordinated_mesh.proxy.nginx import NginxSettings
from coordinated_mesh.proxy.plan import CoordinatorIdentity
from coordinated_mesh.relations.certificate_transfer import TrustedCas
from coordinated_mesh.relations.certificates import (
    ServerCertificates,
    certificate_covers,
    is_waiting,
)
from coordinated_mesh.relations.cluster import (
    CoordinatorAppData,
    JujuTopology,
    WorkerAppData,
    WorkerUnitData,
)
from coordinated_mesh.relations.databag import DatabagError
from coordinated_mesh.relations.endpoints import CoordinatorEndpoints
from coordinated_mesh.relations.loki_push_api import read_loki_push_urls
from coordinated_mesh.relations.remote_write import read_remote_write_urls
from coordinated_mesh.relations.tracing import read_tracing_receivers

__all__ = [
    "RESOLV_CONF",
    "MeshState",
    "Snapshot",
    "TlsSources",
    "observe",
    "read_published_labels",
]

logger = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"
"""The charm container's resolver configuration; the pod's containers share it."""


@dataclass(frozen=True)
class MeshState:
    """What the beacon says, as read through the ``service_mesh`` consumer."""

    related: bool = False
    ready: bool = False
    type: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict[str, str])
    """The beacon's enrolment labels (only while ready)."""
    problem: str | None = None
    """Why the mesh is related but not ready, as the consumer explains it."""

    @property
    def active(self) -> bool:
        """Whether the cluster should be on the mesh now (related and the beacon's data ready)."""
        return self.related and self.ready


@dataclass(frozen=True)
class Snapshot:
    """Everything one reconcile read (remote data already parsed; invalid items left out)."""

    identity: CoordinatorIdentity
    unit_name: str
    charm_name: str
    is_leader: bool
    endpoints: CoordinatorEndpoints
    worker_apps: tuple[str, ...] = ()
    """The related worker applications, sorted."""
    workers: tuple[WorkerUnitData, ...] = ()
    """Every worker unit's cluster data (derived from its name and application), by unit name."""
    outdated_worker_apps: tuple[str, ...] = ()
    """Worker applications that publish only unit data (an older worker charm), sorted."""
    backend_loki_urls: Mapping[str, str] = field(default_factory=dict[str, str])
    backend_remote_write_urls: Mapping[str, str] = field(default_factory=dict[str, str])
    backend_charm_tracing_receivers: Mapping[str, str] = field(default_factory=dict[str, str])
    backend_workload_tracing_receivers: Mapping[str, str] = field(default_factory=dict[str, str])
    resolvers: tuple[str, ...] = ()
    """The nameservers of ``/etc/resolv.conf`` (unparsed: the proxy planner parses them)."""
    mesh: MeshState = field(default_factory=MeshState)
    worker_config: str | None = None
    """The charm's workload configuration for the workers (its callback's result)."""
    tls: TlsState = field(default_factory=TlsState)
    """The server certificate to serve and the CAs to trust for TLS backends."""
    problems: tuple[Problem, ...] = ()
    """Remote data that was dropped while reading, in reading order."""


def _first_unit_data(
    relation: ops.Relation, endpoint: str, problems: list[Problem]
) -> WorkerUnitData | None:
    """An older worker's facts: its first valid unit databag, in unit order (read once)."""
    for unit in sorted(relation.units, key=lambda u: u.name):
        try:
            data = dict(relation.data[unit])
        except ops.ModelError as e:
            problems.append(Problem.of(endpoint, unit.name, f"unreadable: {e}"))
            continue
        if not data:
            continue  # joined but not yet published: not an error
        try:
            worker = WorkerUnitData.load(data)
        except DatabagError as e:
            problems.append(Problem.of(endpoint, unit.name, str(e)))
            continue
        topology = worker.juju_topology
        if topology.unit != unit.name or topology.application != relation.app.name:
            reason = f"juju_topology names {topology.unit} of {topology.application}"
            problems.append(Problem.of(endpoint, unit.name, reason))
            continue
        return worker
    return None


def _read_workers(
    relations: list[ops.Relation],
    endpoint: str,
    problems: list[Problem],
    *,
    model_name: str,
    cluster_domain: str,
) -> tuple[tuple[str, ...], tuple[WorkerUnitData, ...], tuple[str, ...]]:
    """The worker applications, their units' data and the outdated applications.

    Per relation: one application databag and the unit list. A unit's address is derived from
    its name (``unit_fqdn``), never read; only an older worker (no ``charm_name`` in its
    application databag) has one unit databag read, for its charm and metrics endpoint.
    """
    apps: set[str] = set()
    outdated: set[str] = set()
    units: list[WorkerUnitData] = []
    for relation in relations:
        app = relation.app.name
        apps.add(app)
        try:
            app_data = WorkerAppData.load(relation.data[relation.app])
        except ops.ModelError as e:
            problems.append(Problem.of(endpoint, app, f"unreadable: {e}"))
            continue
        except DatabagError as e:
            problems.append(Problem.of(endpoint, app, str(e)))
            continue
        if app_data.current:
            charm_name, metrics = app_data.charm_name, app_data.metrics_endpoint
        else:
            first = _first_unit_data(relation, endpoint, problems)
            if first is None:
                continue  # joined but nothing published yet
            outdated.add(app)
            charm_name, metrics = first.juju_topology.charm_name, first.metrics_endpoint
        for unit in relation.units:
            units.append(
                WorkerUnitData.model_construct(
                    juju_topology=JujuTopology.model_construct(
                        application=app, unit=unit.name, charm_name=charm_name
                    ),
                    address=unit_fqdn(
                        unit.name,
                        app_name=app,
                        model_name=model_name,
                        cluster_domain=cluster_domain,
                    ),
                    metrics_endpoint=metrics,
                )
            )
    units.sort(key=lambda worker: worker.juju_topology.unit)
    return tuple(sorted(apps)), tuple(units), tuple(sorted(outdated))


def read_published_labels(
    relations: list[ops.Relation], app: ops.Application
) -> dict[int, Mapping[str, str]]:
    """The worker labels already in each cluster relation's databag, by relation id.

    Per relation: a worker application that joined since has none (it is absent), and must not
    be given another relation's mesh labels while its policies cannot be written.
    """
    labels: dict[int, Mapping[str, str]] = {}
    for relation in sorted(relations, key=lambda r: r.id):
        try:
            published = CoordinatorAppData.load(relation.data[app])
        except DatabagError:
            continue
        if published.worker_labels is not None:
            labels[relation.id] = published.worker_labels
    return labels


def _read_resolvers(path: str) -> tuple[str, ...]:
    try:
        with open(path) as f:
            return tuple(nameservers_from_resolv_conf(f.read()))
    except OSError as e:
        logger.warning("cannot read %s: %s", path, e)
        return ()


def _read_mesh(mesh: ServiceMeshConsumer, endpoint: str, problems: list[Problem]) -> MeshState:
    related = mesh.enabled
    ready = related and mesh.ready
    for problem in mesh.cross_model_problems:
        problems.append(Problem(endpoint, "cmr_data", problem))
    return MeshState(
        related=related,
        ready=ready,
        type=mesh.mesh_type() if ready else None,
        labels=mesh.labels() if ready else {},
        problem=mesh.problem if related else None,
    )


@dataclass(frozen=True)
class TlsSources:
    """Where TLS is read from: the two relations' readers and the files nginx serves."""

    certificates: ServerCertificates | None
    trusted_cas: TrustedCas | None
    nginx_container: str
    nginx_settings: NginxSettings
    system_ca_bundle: str | None = None
    """The system CA bundle's path (default :data:`~.tls.SYSTEM_CA_BUNDLE`)."""


def _read_tls(
    charm: ops.CharmBase, sources: TlsSources, service_fqdn: str, problems: list[Problem]
) -> TlsState:
    """The certificate to serve (kept during a renewal) and the CAs to trust."""
    trusted: tuple[str, ...] = ()
    if sources.trusted_cas is not None:
        trusted, found = sources.trusted_cas.read()
        problems += found
    system = read_system_ca_bundle(sources.system_ca_bundle or SYSTEM_CA_BUNDLE)
    certificates = sources.certificates
    if certificates is None or not certificates.related:
        return TlsState(trusted_cas=trusted, system_bundle=system)
    certificate, found = certificates.read(service_fqdn)
    problems += [p for p in found if not is_waiting(p)]
    kept = False
    if certificate is None and found:
        # A renewal being issued, or a new certificate refused (its problem is shown): keep
        # serving what nginx serves while it is valid and still covers the Service name.
        container = charm.unit.get_container(sources.nginx_container)
        settings = sources.nginx_settings
        if container.can_connect():
            served = served_certificate(
                container,
                chain_path=settings.server_cert_path,
                key_path=settings.server_key_path,
                ca_path=server_ca_path(settings),
                now=datetime.now(UTC),
            )
            if served is not None and certificate_covers(served.dns_names, service_fqdn):
                certificate, kept = served, True
    return TlsState(
        related=True,
        certificate=certificate,
        waiting=certificate is None and any(is_waiting(p) for p in found),
        kept=kept,
        trusted_cas=trusted,
        system_bundle=system,
    )


def observe(
    charm: ops.CharmBase,
    mesh: ServiceMeshConsumer,
    *,
    endpoints: CoordinatorEndpoints,
    cluster_domain: str,
    worker_config: Callable[[], str] | None,
    resolv_conf: str | None = None,
    tls: TlsSources | None = None,
) -> Snapshot:
    """Read everything one reconcile needs (see :class:`Snapshot`); writes nothing."""
    model = charm.model
    relations = model.relations
    problems: list[Problem] = []
    cluster = list(relations.get(endpoints.cluster, ()))
    worker_apps, workers, outdated = _read_workers(
        cluster,
        endpoints.cluster,
        problems,
        model_name=model.name,
        cluster_domain=cluster_domain,
    )
    mesh_state = _read_mesh(mesh, endpoints.cross_model_mesh_provides, problems)
    loki, found = read_loki_push_urls(relations.get(endpoints.logging, ()))
    problems += found
    remote_write, found = read_remote_write_urls(relations.get(endpoints.remote_write, ()))
    problems += found
    charm_tracing, found = read_tracing_receivers(relations.get(endpoints.charm_tracing, ()))
    problems += found
    workload, found = read_tracing_receivers(relations.get(endpoints.workload_tracing, ()))
    problems += found
    is_leader = charm.unit.is_leader()
    identity = CoordinatorIdentity(
        app_name=charm.app.name,
        model_name=model.name,
        model_uuid=model.uuid,
        cluster_domain=cluster_domain,
    )
    tls_state = (
        TlsState() if tls is None else _read_tls(charm, tls, identity.service_fqdn, problems)
    )
    return Snapshot(
        identity=identity,
        unit_name=charm.unit.name,
        charm_name=charm.meta.name,
        is_leader=is_leader,
        endpoints=endpoints,
        worker_apps=worker_apps,
        workers=workers,
        outdated_worker_apps=outdated,
        backend_loki_urls=loki,
        backend_remote_write_urls=remote_write,
        backend_charm_tracing_receivers=charm_tracing,
        backend_workload_tracing_receivers=workload,
        resolvers=_read_resolvers(resolv_conf or RESOLV_CONF),
        mesh=mesh_state,
        worker_config=worker_config() if worker_config else None,
        tls=tls_state,
        problems=tuple(problems),
    )
