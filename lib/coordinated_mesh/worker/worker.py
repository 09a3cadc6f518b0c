"""A worker of a coordinated-worker cluster: it applies what its coordinator sends, every hook.

A worker charm creates one :class:`Worker` and configures its workload in a callback; see
``docs/how-to/add-mesh-support.md``. The worker has no mesh logic of its own: the coordinator
decides its pods' labels and hands it proxied telemetry URLs. What happens when the coordinator's
data is missing, invalid or gone: ``docs/explanation/worker.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import ops
import pydantic

from coordinated_mesh.charm.memory import write_changed
from coordinated_mesh.charm.metadata import require_declared
from coordinated_mesh.charm.reconciler import Reconciler
from coordinated_mesh.charm.tracing import charm_traces_url, send_charm_traces_to
from coordinated_mesh.k8s.client import ClientFactory, ForbiddenError, KubernetesError
from coordinated_mesh.parse import is_juju_owned_label, parse_cluster_domain, show, unit_fqdn
from coordinated_mesh.relations.cluster import (
    DEFAULT_ROLE,
    CoordinatorAppData,
    JujuTopology,
    MetricsEndpoint,
    ProxiedTelemetry,
    WorkerAppData,
    WorkerUnitData,
    juju_topology_labels,
    parse_proxied_telemetry,
)
from coordinated_mesh.relations.databag import DatabagError
from coordinated_mesh.worker.kubernetes import LabelsBackend, LegacyLabels, make_labels_backend
from coordinated_mesh.worker.log_forwarding import (
    LAYER_LABEL,
    log_forwarding_layer,
    log_target_labels,
)
from coordinated_mesh.worker.status import WorkerObservations, worker_statuses
from coordinated_mesh.worker.trust import (
    CA_PATH,
    PEBBLE_ROOTS_PATH,
    TrustPlan,
    decide_trust,
    observe_trust,
    restart_note,
)

__all__ = ["ConfigureWorkload", "Worker", "WorkerContext"]

logger = logging.getLogger(__name__)


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
        juju_labels: this unit's Juju topology as Prometheus labels (``juju_model``,
            ``juju_model_uuid``, ``juju_application``, ``juju_unit``, ``juju_charm``): the labels
            the coordinator's scrape jobs give this unit's metrics. A workload that pushes
            samples itself (remote-write) attaches them, so every unit's series stay distinct.
        ca_path: where the proxy's CA is in the container while the proxy serves TLS
            (``telemetry.ca_cert`` is set and every proxied URL is ``https``), for the workload's
            own TLS settings (Prometheus: ``tls_config.ca_file``); ``None`` without TLS. The file
            is written before this callback runs and removed after it stopped being wanted.
    """

    container: ops.Container
    coordinator: str | None
    worker_config: str | None
    telemetry: ProxiedTelemetry
    role: str
    topology: JujuTopology
    address: str
    juju_labels: Mapping[str, str] = field(default_factory=lambda: {})
    ca_path: str | None = None


ConfigureWorkload = Callable[[WorkerContext], Iterable[str] | None]
"""Configures the workload; returns notes shown in the active status (problems it worked around)."""


class Worker(Reconciler[LabelsBackend]):
    """Joins a coordinated-worker cluster and applies what its coordinator sends.

    Args:
        charm: the worker charm.
        container_name: the workload container (Pebble log forwarding goes there).
        metrics_port: where the workload serves its Prometheus metrics (published to the
            coordinator, which scrapes it through its proxy).
        metrics_path: the metrics path.
        cluster_endpoint: the ``cluster`` relation (requires, limit 1).
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
            charm does not declare ``cluster_endpoint`` or ``container_name``.
    """

    # Unit-local: whether this unit took over (or found none of) coordinated-workers' label
    # memory. A cache: losing it (a new pod) costs one more look, one GET.
    _migration = ops.StoredState()

    def __init__(
        self,
        charm: ops.CharmBase,
        *,
        container_name: str,
        metrics_port: int,
        metrics_path: str = "/metrics",
        cluster_endpoint: str = "cluster",
        role: str | Callable[[], str] = DEFAULT_ROLE,
        configure_workload: ConfigureWorkload | None = None,
        cluster_domain: str = "cluster.local",
        kubernetes_client_factory: ClientFactory | None = None,
        labels_backend_factory: Callable[..., LabelsBackend] | None = None,
    ):
        require_declared(
            charm,
            relations={cluster_endpoint: "cluster_endpoint"},
            containers={container_name: "container_name"},
        )

        def default_backend(**names: str) -> LabelsBackend:
            # Built on first use, after the Reconciler made the memory.
            return make_labels_backend(
                client_factory=kubernetes_client_factory,
                label_cache=self.memory.label_memory(),
                **names,
            )

        super().__init__(
            charm, f"worker-{cluster_endpoint}", labels_backend_factory or default_backend
        )
        self._container_name = container_name
        try:
            self._metrics = MetricsEndpoint(port=metrics_port, path=metrics_path)
        except pydantic.ValidationError as e:
            raise ValueError(f"invalid metrics endpoint: {e}") from None
        self._endpoint = cluster_endpoint
        self._role = role
        self._configure = configure_workload
        self._cluster_domain = parse_cluster_domain(cluster_domain)
        self._observations: WorkerObservations | None = None
        self._migration.set_default(checked=False)

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
    def juju_labels(self) -> dict[str, str]:
        """The Juju topology of this unit as Prometheus labels (see :class:`WorkerContext`)."""
        return juju_topology_labels(
            self.topology, model_name=self.model.name, model_uuid=self.model.uuid
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

    def statuses(self) -> list[ops.StatusBase]:
        """The statuses of the last reconcile (none when nothing was reconciled)."""
        return worker_statuses(self._observations) if self._observations is not None else []

    # --- Reconcile --------------------------------------------------------------------------------

    def on_remove(self) -> None:
        """On the removal of the application's last unit, delete its label memory.

        Juju deletes the StatefulSet and Service with the application; the ConfigMap remembering
        the labels applied to them is ours to delete. Failures are logged only.
        """
        if self._charm.app.planned_units() > 0 or not self._charm.unit.is_leader():
            return  # scaling down, or another unit is in charge
        try:
            self.backend.delete_label_memory()
        except KubernetesError as e:
            logger.error("Kubernetes: %s", e)

    def reconcile(self) -> None:
        """Bring everything to its desired state; called once per hook, safe to call again."""
        obs = WorkerObservations(app_name=self._charm.app.name, endpoint=self._endpoint)
        self._observations = obs
        role = self._read_role(obs)
        relation = self._relation()
        if relation is not None:
            self._publish(relation, role)
        received = self._read(relation, obs)
        if received is not None:  # unusable data: keep sending where we did
            send_charm_traces_to(
                charm_traces_url(received.telemetry.charm_tracing_receivers),
                ca=received.telemetry.ca_cert,
            )
        if self._charm.unit.is_leader() and self._adopt_legacy_labels(obs):
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
        # The unit databag is for older coordinators only: this version derives the address
        # from the unit's name and reads the rest from the application databag.
        if unit_data.write(relation.data[self._charm.unit], self.memory):
            logger.info("published this unit's address and metrics endpoint")
        if not self._charm.unit.is_leader():
            return
        app_data = WorkerAppData(
            role=role or DEFAULT_ROLE,
            charm_name=self._charm.meta.name,
            metrics_endpoint=self._metrics,
        )
        wanted: dict[str, str | None] = dict(app_data.dump())
        if role is None:
            del wanted["role"]  # invalid now: publish no role (the status says why), keep the rest
        if write_changed(relation.data[self._charm.app], wanted, self.memory):
            logger.info("published %s", ", ".join(sorted(wanted)))

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
        owned = sorted(k for k in data.worker_labels or {} if is_juju_owned_label(k))
        if owned:
            # The coordinator may not take over Juju's labels (its selector): keep what we have.
            reason = f"worker_labels: {show(owned[0])} is a label Juju owns"
            logger.error(
                "invalid data from %s on relation %d: %s", coordinator, relation.id, reason
            )
            obs.data_problem = f"invalid data: {reason}"
            return None
        telemetry, problems = parse_proxied_telemetry(data)
        for problem in problems:
            logger.error("ignoring invalid data from %s: %s", coordinator, problem)
        obs.item_problems.extend(problems)
        return _Received(
            coordinator=coordinator,
            labels=data.worker_labels,
            worker_config=data.worker_config,
            telemetry=telemetry,
        )

    # --- Labels (leader) --------------------------------------------------------------------------

    def _adopt_legacy_labels(self, obs: WorkerObservations) -> bool:
        """Once per unit, take over coordinated-workers' label memory; False if that failed."""
        if self._migration.checked:
            return True
        try:
            backend = self.backend
            if isinstance(backend, LegacyLabels):
                backend.adopt_legacy_labels()
        except ForbiddenError as e:
            logger.error("Kubernetes: %s", e)
            obs.forbidden = True
            return False
        except KubernetesError as e:
            logger.error("Kubernetes: %s", e)
            obs.kubernetes_error = str(e)
            return False
        self._migration.checked = True
        return True

    def _reconcile_labels(self, received: _Received | None, obs: WorkerObservations) -> None:
        wanted = received.labels if received is not None else None
        try:
            backend = self.backend
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
        telemetry = received.telemetry
        try:
            trust = self._trust_before(container, telemetry)
            if trust.pebble_stale:
                obs.notes.append(
                    restart_note(
                        container=self._container_name,
                        unit=self._charm.unit.name,
                        model=self.model.name,
                    )
                )
            self._apply_log_forwarding(container, telemetry.loki_urls)
            if self._configure is not None:
                context = WorkerContext(
                    container=container,
                    coordinator=received.coordinator,
                    worker_config=received.worker_config,
                    telemetry=received.telemetry,
                    role=role or DEFAULT_ROLE,
                    topology=self.topology,
                    address=self.address,
                    juju_labels=self.juju_labels,
                    ca_path=CA_PATH if telemetry.ca_cert is not None else None,
                )
                obs.notes.extend(self._configure(context) or ())
            if trust.remove_ca:
                # Last: the workload's configuration no longer names the file.
                container.remove_path(CA_PATH)
                logger.info("%s: removed the proxy's CA %s", self._container_name, CA_PATH)
        except ops.pebble.Error as e:
            logger.error("configuring the %s container failed: %s", self._container_name, e)
            obs.workload_problem = (
                f"{self._container_name} not configured, retrying on the next hook: {e}"
            )

    def _trust_before(self, container: ops.Container, telemetry: ProxiedTelemetry) -> TrustPlan:
        """Write the proxy's CA and the record of Pebble's roots before anything uses them."""
        obs = observe_trust(container)
        tls_after = obs.pebble_uses_tls or any(
            url.startswith("https://") for url in telemetry.loki_urls.values()
        )
        trust = decide_trust(telemetry.ca_cert, obs, tls_after=tls_after)
        if trust.write_ca is not None:
            container.push(CA_PATH, trust.write_ca, make_dirs=True, permissions=0o644)
            logger.info("%s: wrote the proxy's CA to %s", self._container_name, CA_PATH)
        if trust.write_roots is not None:
            container.push(PEBBLE_ROOTS_PATH, trust.write_roots, make_dirs=True, permissions=0o644)
        if trust.pebble_stale:
            logger.warning(
                "%s: Pebble loaded its CAs before the proxy's current CA was written: log "
                "forwarding to https URLs fails verification until the container restarts "
                "(kubectl delete pod %s -n %s)",
                self._container_name,
                self._charm.unit.name.replace("/", "-"),
                self.model.name,
            )
        return trust

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
