"""A worker of a coordinated-worker cluster: one holistic reconcile on every hook.

A worker charm creates one :class:`Worker` in its constructor and configures its workload in a
callback::

    class MyWorkerCharm(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            self.worker = Worker(
                self,
                container_name="prometheus",
                metrics_port=9090,
                role=lambda: str(self.config["role"]),
                configure_workload=self._configure,
            )

        def _configure(self, context: WorkerContext) -> list[str]:
            ...  # render the workload's configuration from context.worker_config and
            ...  # context.telemetry, push it, (re)start the service; return notes for the status

The worker has no mesh-specific code: the coordinator decides the labels its pods carry (cluster
membership, and mesh enrolment while the cluster is on the mesh) and hands out *proxied*
telemetry URLs; the worker applies what it receives.

On every Juju event (``collect-status``, actions and ``remove`` excepted) :meth:`Worker.reconcile`

every unit
    publishes the unit's Juju topology, address (its FQDN) and metrics endpoint in its unit
    databag of the ``cluster`` relation; keeps the Pebble log forwarding layer of the workload
    container pointing at the proxied Loki URLs (one ``loki`` log target per URL; a target no
    longer wanted is stopped with ``services: ["-all"]``); calls ``configure_workload``;
the leader only
    publishes the role in the application databag, and makes the coordinator's ``worker_labels``
    the labels it manages on its application's StatefulSet (pod template) and Service.

Every write happens only when something differs. What happens when the coordinator's data is
not usable:

* **related, data missing or invalid**: nothing received is changed. The workload keeps its
  configuration and log targets; the leader re-applies the labels it applied last (as remembered
  in Kubernetes), so a Juju reset of the StatefulSet is healed, but it never drops them: dropping
  and re-adding labels would roll every pod twice. Status: waiting, with the reason.
* **no coordinator** (never related, or the relation is broken): the worker leaves the cluster.
  Log forwarding stops, the workload is configured with no telemetry URLs and no configuration,
  and the leader **removes the labels it manages**: a worker outside the cluster must neither
  claim membership (``app.kubernetes.io/part-of``) nor stay enrolled in a mesh whose policies no
  longer cover it, where hardened mode would deny all its traffic. Labels set by others stay.
  Status: blocked, naming the ``juju integrate`` command.

Kubernetes failures never fail a hook: a 403 (deployed without ``--trust``) is a blocked status
naming ``juju trust <app> --scope=cluster``; other API errors are a waiting status, retried on the
next hook. Invalid items in the coordinator's data (a malformed URL) are dropped and named in a
waiting status; the rest keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import ops
import pydantic

from coordinated_mesh.charm.metadata import require_declared
from coordinated_mesh.k8s.client import AppClient, ClientFactory, ForbiddenError, KubernetesError
from coordinated_mesh.k8s.labels import AppLabels
from coordinated_mesh.parse import is_dns_name, show, unit_fqdn
from coordinated_mesh.relations.cluster import (
    DEFAULT_ROLE,
    CoordinatorAppData,
    JujuTopology,
    MetricsEndpoint,
    ProxiedTelemetry,
    WorkerAppData,
    WorkerUnitData,
    parse_proxied_telemetry,
)
from coordinated_mesh.relations.databag import DatabagError
from coordinated_mesh.worker.log_forwarding import (
    LAYER_LABEL,
    log_forwarding_layer,
    log_target_labels,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "LabelsBackend",
    "Worker",
    "WorkerContext",
    "WorkerObservations",
    "make_labels_backend",
    "worker_statuses",
]

logger = logging.getLogger(__name__)

_MAX_DETAIL = 120


def _short(text: str, limit: int = _MAX_DETAIL) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


@dataclass(frozen=True)
class _Received:
    """What the worker acts on this hook: the coordinator's data, or "no coordinator"."""

    coordinator: str | None
    """The coordinator application, ``None`` when not related."""
    labels: Mapping[str, str] | None
    """The labels to manage; ``None``: the coordinator has not said, keep the last ones."""
    worker_config: str | None = None
    telemetry: ProxiedTelemetry = field(default_factory=ProxiedTelemetry)


@dataclass(frozen=True)
class WorkerContext:
    """What ``configure_workload`` configures the workload from.

    Attributes:
        container: the workload container (connected: Pebble is reachable).
        coordinator: the coordinator application, or ``None`` when the worker is not related to
            one (then there is no configuration and no telemetry URL).
        worker_config: the workload configuration text from the coordinator (``None``: none).
        telemetry: the proxied telemetry URLs to use.
        role: the role of this worker application.
        topology: this unit's Juju topology.
        address: this unit's FQDN.
    """

    container: ops.Container
    coordinator: str | None
    worker_config: str | None
    telemetry: ProxiedTelemetry
    role: str
    topology: JujuTopology
    address: str


ConfigureWorkload = Callable[[WorkerContext], Iterable[str] | None]
"""Configures the workload; returns notes shown in the active status (problems it worked around)."""


# --- Kubernetes: one narrow seam ------------------------------------------------------------------


class LabelsBackend(Protocol):
    """The worker's labels in Kubernetes. Methods raise only ``KubernetesError`` (and subclasses)."""

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        """Make ``labels`` the labels managed on our StatefulSet and Service; True if it wrote."""
        ...

    def managed_labels(self) -> dict[str, str]:
        """The labels applied last (``{}`` when none)."""
        ...


def make_labels_backend(
    *, app_name: str, namespace: str, client_factory: ClientFactory | None = None
) -> LabelsBackend:
    """The production backend (the seam ``ops.testing`` tests replace with a fake)."""
    return AppLabels(AppClient(app_name=app_name, namespace=namespace, factory=client_factory))


# --- Statuses (pure) -----------------------------------------------------------------------------


@dataclass
class WorkerObservations:
    """What one reconcile saw, the input of :func:`worker_statuses`."""

    app_name: str
    endpoint: str = "cluster"
    coordinator: str | None = None
    """The related coordinator application (``None``: not related)."""
    data_problem: str | None = None
    """Why the coordinator's data is not usable (missing or invalid); ``None`` when it is."""
    item_problems: list[str] = field(default_factory=list[str])
    """Items of the coordinator's data that were dropped, and why."""
    role: str = DEFAULT_ROLE
    role_problem: str | None = None
    forbidden: bool = False
    """The Kubernetes API answered 403: the application is not trusted."""
    kubernetes_error: str | None = None
    workload_problem: str | None = None
    """Why the workload container could not be configured (``None``: it was, or it was kept)."""
    notes: list[str] = field(default_factory=list[str])
    """What ``configure_workload`` reported."""


def worker_statuses(obs: WorkerObservations) -> list[ops.StatusBase]:
    """The statuses to add in ``collect-status``, most important first (never empty).

    ops keeps the highest priority (blocked > waiting > active); among equals, the first added.
    Every non-active status says what is wrong and what fixes it.
    """
    statuses: list[ops.StatusBase] = []
    if obs.forbidden:
        statuses.append(
            ops.BlockedStatus(
                f"not allowed to label its pods: run juju trust {obs.app_name} --scope=cluster"
            )
        )
    if obs.coordinator is None:
        statuses.append(
            ops.BlockedStatus(
                f"relate to a coordinator: juju integrate {obs.app_name}:{obs.endpoint} "
                f"<coordinator>:{obs.endpoint}"
            )
        )
    if obs.role_problem is not None:
        statuses.append(ops.BlockedStatus(_short(f"invalid role config: {obs.role_problem}")))
    if obs.coordinator is not None and obs.data_problem is not None:
        statuses.append(
            ops.WaitingStatus(
                _short(
                    f"waiting for {obs.coordinator} on relation {obs.endpoint}: {obs.data_problem}",
                    160,
                )
            )
        )
    statuses.extend(
        ops.WaitingStatus(_short(f"ignoring invalid data on relation {obs.endpoint}: {p}", 160))
        for p in obs.item_problems
    )
    if obs.kubernetes_error is not None:
        statuses.append(
            ops.WaitingStatus(
                _short(
                    f"Kubernetes API error, retrying on the next hook: {obs.kubernetes_error}", 160
                )
            )
        )
    if obs.workload_problem is not None:
        statuses.append(ops.WaitingStatus(_short(obs.workload_problem)))
    summary = f"coordinator: {obs.coordinator or 'none'}, role: {obs.role}"
    statuses.append(ops.ActiveStatus(_short("; ".join([summary, *obs.notes]), 160)))
    return statuses


# --- The worker ------------------------------------------------------------------------------------


class Worker(ops.Object):
    """Joins a coordinated-worker cluster and applies what its coordinator sends.

    Args:
        charm: the worker charm.
        container_name: the workload container (Pebble log forwarding goes there).
        metrics_port: where the workload serves its Prometheus metrics (published to the
            coordinator, which scrapes it through its proxy).
        metrics_path: the metrics path.
        endpoint: the ``cluster`` relation (requires, limit 1).
        role: the role of this application, or a callable returning it (read on every hook, for
            example from the charm's config).
        configure_workload: called on every hook while the workload container is reachable and
            the coordinator's data is usable (or there is no coordinator), to (re)configure the
            workload. It must be idempotent and write only what changes. It may return notes
            (problems it worked around) shown in the active status. Pebble errors it raises are
            caught and shown as a waiting status.
        cluster_domain: the Kubernetes cluster's DNS domain (unit FQDNs end in it).
        kubernetes_client_factory: builds the lightkube client (default: in-cluster).
        labels_backend_factory: builds the whole labels backend (tests pass a fake); called as
            ``factory(app_name=..., namespace=...)``; takes precedence over
            ``kubernetes_client_factory``.

    Raises:
        ValueError: ``metrics_port``, ``metrics_path`` or ``cluster_domain`` is invalid, or the
            charm does not declare ``endpoint`` or ``container_name``.
    """

    def __init__(
        self,
        charm: ops.CharmBase,
        *,
        container_name: str,
        metrics_port: int,
        metrics_path: str = "/metrics",
        endpoint: str = "cluster",
        role: str | Callable[[], str] = DEFAULT_ROLE,
        configure_workload: ConfigureWorkload | None = None,
        cluster_domain: str = "cluster.local",
        kubernetes_client_factory: ClientFactory | None = None,
        labels_backend_factory: Callable[..., LabelsBackend] | None = None,
    ):
        super().__init__(charm, f"worker-{endpoint}")
        require_declared(
            charm,
            relations={endpoint: "endpoint"},
            containers={container_name: "container_name"},
        )
        self._charm = charm
        self._container_name = container_name
        try:
            self._metrics = MetricsEndpoint(port=metrics_port, path=metrics_path)
        except pydantic.ValidationError as e:
            raise ValueError(f"invalid metrics endpoint: {e}") from None
        self._endpoint = endpoint
        self._role = role
        self._configure = configure_workload
        if not is_dns_name(cluster_domain):
            raise ValueError(f"invalid cluster domain: {cluster_domain!r}")
        self._cluster_domain = cluster_domain
        self._client_factory = kubernetes_client_factory
        self._backend_factory = labels_backend_factory
        self._backend: LabelsBackend | None = None
        self._observations: WorkerObservations | None = None
        self._reconciled = False

        skipped = (
            ops.CollectStatusEvent,
            ops.CollectMetricsEvent,
            ops.ActionEvent,
            ops.RemoveEvent,
        )
        for bound in charm.on.events().values():
            if not issubclass(bound.event_type, skipped):
                self.framework.observe(bound, self._on_hook)
        self.framework.observe(charm.on.collect_unit_status, self._on_collect_unit_status)
        self.framework.observe(charm.on.collect_app_status, self._on_collect_app_status)

    # --- Identity ---------------------------------------------------------------------------------

    @property
    def topology(self) -> JujuTopology:
        """The Juju topology of this unit."""
        return JujuTopology(
            application=self._charm.app.name,
            unit=self._charm.unit.name,
            charm_name=self._charm.meta.name,
        )

    @property
    def address(self) -> str:
        """The FQDN of this unit (``<app>-<n>.<app>-endpoints.<model>.svc.<cluster domain>``)."""
        return unit_fqdn(
            self._charm.unit.name,
            app_name=self._charm.app.name,
            model_name=self.model.name,
            cluster_domain=self._cluster_domain,
        )

    @property
    def observations(self) -> WorkerObservations | None:
        """What the last reconcile of this dispatch saw (``None`` before the first)."""
        return self._observations

    # --- Events -----------------------------------------------------------------------------------

    def _on_hook(self, _: ops.EventBase) -> None:
        if not self._reconciled:
            self._reconciled = True
            self.reconcile()

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        if self._observations is None:
            return
        for status in worker_statuses(self._observations):
            event.add_status(status)

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        self._on_collect_unit_status(event)

    # --- Reconcile --------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Bring everything to its desired state; called once per hook, safe to call again."""
        obs = WorkerObservations(app_name=self._charm.app.name, endpoint=self._endpoint)
        self._observations = obs
        role = self._read_role(obs)
        relation = self._relation()
        if relation is not None:
            self._publish(relation, role)
        received = self._read(relation, obs)
        if self._charm.unit.is_leader():
            self._reconcile_labels(received, obs)
        self._reconcile_workload(received, role, obs)

    def _relation(self) -> ops.Relation | None:
        relations = sorted(self.model.relations.get(self._endpoint, ()), key=lambda r: r.id)
        if len(relations) > 1:
            logger.warning(
                "%d %s relations; using relation %d",
                len(relations),
                self._endpoint,
                relations[0].id,
            )
        return relations[0] if relations else None

    def _read_role(self, obs: WorkerObservations) -> str | None:
        role = self._role() if callable(self._role) else self._role
        try:
            WorkerAppData(role=role)
        except pydantic.ValidationError:
            obs.role_problem = (
                f"{show(role)}: lower-case letters, digits and '-', starting with a letter"
            )
            return None
        obs.role = role
        return role

    def _publish(self, relation: ops.Relation, role: str | None) -> None:
        unit_data = WorkerUnitData(
            juju_topology=self.topology, address=self.address, metrics_endpoint=self._metrics
        )
        if unit_data.write(relation.data[self._charm.unit]):
            logger.info("published this unit's address and metrics endpoint")
        is_leader = self._charm.unit.is_leader()
        if (
            role is not None
            and is_leader
            and WorkerAppData(role=role).write(relation.data[self._charm.app])
        ):
            logger.info("published role %s", role)

    def _read(self, relation: ops.Relation | None, obs: WorkerObservations) -> _Received | None:
        """The coordinator's usable data; ``None`` when it is missing or invalid (keep)."""
        if relation is None:
            return _Received(coordinator=None, labels={})
        coordinator = relation.app.name
        obs.coordinator = coordinator
        try:
            databag = dict(relation.data[relation.app])
        except ops.ModelError as e:
            logger.error("cannot read data from %s on relation %d: %s", coordinator, relation.id, e)
            obs.data_problem = f"cannot read its data: {e}"
            return None
        if not databag:
            obs.data_problem = "no data published yet"
            return None
        try:
            data = CoordinatorAppData.load(databag)
        except DatabagError as e:
            logger.error("invalid data from %s on relation %d: %s", coordinator, relation.id, e)
            obs.data_problem = f"invalid data: {e}"
            return None
        telemetry, problems = parse_proxied_telemetry(data)
        for problem in problems:
            logger.error("ignoring invalid data from %s: %s", coordinator, problem)
        obs.item_problems.extend(str(problem) for problem in problems)
        return _Received(
            coordinator=coordinator,
            labels=data.worker_labels,
            worker_config=data.worker_config,
            telemetry=telemetry,
        )

    # --- Labels (leader) --------------------------------------------------------------------------

    def _labels_backend(self) -> LabelsBackend:
        if self._backend is None:
            app_name, namespace = self._charm.app.name, self.model.name
            if self._backend_factory is not None:
                self._backend = self._backend_factory(app_name=app_name, namespace=namespace)
            else:
                self._backend = make_labels_backend(
                    app_name=app_name, namespace=namespace, client_factory=self._client_factory
                )
        return self._backend

    def _reconcile_labels(self, received: _Received | None, obs: WorkerObservations) -> None:
        wanted = received.labels if received is not None else None
        try:
            backend = self._labels_backend()
            if wanted:
                if backend.reconcile_labels(dict(sorted(wanted.items()))):
                    logger.info("pod labels now %s", dict(sorted(wanted.items())))
                return
            remembered = backend.managed_labels()
            if not remembered:
                return  # nothing of ours on the objects: no further request
            if wanted is None:
                # The coordinator's data is not usable: keep (and heal) what was applied last.
                backend.reconcile_labels(remembered)
            else:
                logger.info("removing the pod labels %s", remembered)
                backend.reconcile_labels({})
        except ForbiddenError as e:
            logger.error("Kubernetes: %s", e)
            obs.forbidden = True
        except KubernetesError as e:
            logger.error("Kubernetes: %s", e)
            obs.kubernetes_error = str(e)

    # --- Workload (every unit) --------------------------------------------------------------------

    def _reconcile_workload(
        self, received: _Received | None, role: str | None, obs: WorkerObservations
    ) -> None:
        container = self._charm.unit.get_container(self._container_name)
        if not container.can_connect():
            obs.workload_problem = f"waiting for the {self._container_name} container"
            return
        if received is None:
            return  # keep the workload as it is until the coordinator's data is usable
        try:
            self._apply_log_forwarding(container, received.telemetry.loki_urls)
            if self._configure is not None:
                context = WorkerContext(
                    container=container,
                    coordinator=received.coordinator,
                    worker_config=received.worker_config,
                    telemetry=received.telemetry,
                    role=role or DEFAULT_ROLE,
                    topology=self.topology,
                    address=self.address,
                )
                obs.notes.extend(self._configure(context) or ())
        except ops.pebble.Error as e:
            logger.error("configuring the %s container failed: %s", self._container_name, e)
            obs.workload_problem = (
                f"{self._container_name} not configured, retrying on the next hook: {e}"
            )

    def _apply_log_forwarding(self, container: ops.Container, urls: Mapping[str, str]) -> None:
        labels = log_target_labels(
            charm=self._charm.meta.name,
            model=self.model.name,
            model_uuid=self.model.uuid,
            application=self._charm.app.name,
            unit=self._charm.unit.name,
        )
        current = container.get_plan().log_targets
        layer = log_forwarding_layer(urls, current=current, labels=labels)
        if layer is None:
            return
        container.add_layer(LAYER_LABEL, layer, combine=True)
        logger.info(
            "log forwarding: %s",
            ", ".join(
                f"{name} {'stopped' if t.get('services') == ['-all'] else 'to ' + t.get('location', '')}"
                for name, t in layer.get("log-targets", {}).items()
            ),
        )
