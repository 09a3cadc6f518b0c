"""The coordinator of a coordinated-worker cluster: one holistic reconcile on every hook.

A coordinator charm creates one :class:`Coordinator` in its constructor and nothing else::

    class MyCoordinatorCharm(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            self.coordinator = Coordinator(
                self,
                worker_telemetry_proxy_config=WorkerTelemetryProxyConfig(
                    http_port=8080, https_port=8080, grpc_port=4317
                ),
                worker_query_api=WorkerQueryApi(),  # /query/... -> the workers' Prometheus API
                charm_mesh_policies=[
                    AppPolicy(
                        relation="grafana-source",
                        endpoints=[
                            Endpoint(
                                ports=[8080], methods=[Method.get, Method.post], paths=["/query/*"]
                            )
                        ],
                    ),
                ],
                worker_config=lambda: WORKER_CONFIG,
            )

On every Juju event it runs :meth:`Coordinator.reconcile` once (whatever the event; actions and
``collect-status`` excepted):

every unit
    renders the telemetry proxy's nginx configuration and pushes it (``nginx -s reload``) only when
    the text in the container differs; keeps the nginx and exporter Pebble layers (replanning only
    when they change); opens the proxy ports (HTTP, and gRPC when configured) and the exporter
    port; with a ``worker_query_api``, publishes the query URL (or ``""`` while no worker can
    serve queries) in its ``grafana-source`` unit databags;
the leader only
    patches the pod labels of its own StatefulSet and Service (cluster membership, plus the mesh's
    enrolment labels while the mesh is active), applies the cluster-internal policies while the
    mesh is active (and while pods are still enrolled after it went, see below), publishes the
    external policies to the beacon, writes the ``cluster`` application databag (labels, workload
    configuration, proxied telemetry URLs), the scrape jobs, the Loki metadata, the tracing
    requests and the Grafana datasource metadata, each only when changed.

Non-leader units write nothing but their own workload files and their own unit databags (no
application databag, no Kubernetes object). Kubernetes failures (403 without ``--trust``, Istio's
CRD missing, API errors) never fail a hook: they are logged and shown as a status; what was
applied before stays.

Joining the mesh: policies first, then the mesh labels (ours, then the workers' through the
``cluster`` databag), so no pod enrols before the traffic it needs is allowed. While the policies
cannot be applied (Istio's CRD missing, no trust, API errors), the mesh labels are held back:
ours and the workers' stay as they were applied or published before (none on a first hook), so no
pod enrols without its policies and none leaves on a transient failure; the cluster membership
label (``app.kubernetes.io/part-of``) is still applied and published, so a StatefulSet Juju reset
gets it back.

Leaving the mesh (the ``service-mesh`` relation goes, or the beacon's data stops being ready):
the mesh labels are removed from our pods and from the ``worker_labels`` at once (that is what
makes the pods leave: they are re-created without them), but a pod keeps its enrolment until it
is re-created, and every pod of a namespace labelled ``istio.io/dataplane-mode=ambient`` (the
beacon's ``model-on-mesh``) stays enrolled whatever its own labels. Deleting the cluster-internal
policies at once would deny the cluster's own traffic in hardened mode until then. So, off the
mesh, the leader lists the policies it owns in its namespace (the read it makes on every hook)
and, only if there are any, lists the cluster's pods (label ``app.kubernetes.io/part-of``) and,
when a pod's own label does not settle it, reads the namespace's labels. While any live cluster
pod is enrolled by Istio's rule (:func:`~coordinated_mesh.coordinator_plan.in_ambient_mesh`), the
policies stay, kept equal to what the current workers need (recomputed rather than frozen, so a
worker application that left the cluster loses its policies; nothing is rewritten otherwise),
and the status says so (active:
``mesh removed: keeping 5 internal policies until 3 pods leave the mesh``). On the first hook
where no cluster pod is enrolled they are deleted. A failed read (a 403 on the pods or the
namespace included) deletes nothing and shows the usual Kubernetes status. Pods leaving the mesh
cause no hook in the coordinator: Juju's ``update-status`` hook (every 5 minutes by default,
model setting ``update-status-hook-interval``) re-runs the check, as does any other hook. The
check needs the rights to list pods and to read the Namespace (``juju trust <app>
--scope=cluster`` gives them); without them the policies stay and the status shows the command.
Off the mesh with no owned policy left, nothing more than that one list is read; with the mesh
active, neither pods nor namespace are read. What this does not cover: the external policies are
the beacon's, withdrawn with the relation, so until they leave the mesh the enrolled pods accept
only the cluster's own principals (the kept policies select them).

Removal: on the ``remove`` event of the application's last units (``planned_units() == 0``) the
leader deletes every ``AuthorizationPolicy`` it owns. The labels it set need no clean-up: Juju
deletes the StatefulSet and Service with the application. Relations are broken before ``remove``,
so the policies are often gone already; this also removes those kept for pods still enrolled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ops

from coordinated_mesh.charm.metadata import require_declared
from coordinated_mesh.coordinator.decide import default_mesh_policies
from coordinated_mesh.coordinator.kubernetes import (
    KubernetesBackend,
    LightkubeBackend,
    make_kubernetes_backend,
)
from coordinated_mesh.coordinator.status import (
    DrainStatus,
    KubernetesProblem,
    KubernetesProblemKind,
    Observations,
    unit_statuses,
)
from coordinated_mesh.k8s.client import (
    ClientFactory,
    CRDMissingError,
    ForbiddenError,
    KubernetesError,
)
from coordinated_mesh.mesh.cluster_policies import (
    build_cluster_policies,
    cluster_member_labels,
    held_labels,
    pod_labels,
)
from coordinated_mesh.mesh.consumer import ServiceMeshConsumer
from coordinated_mesh.mesh.drain import ClusterPod, mesh_drain, namespace_decides
from coordinated_mesh.mesh.policies import AppPolicy, MeshPolicy, UnitPolicy
from coordinated_mesh.parse import Problem, is_dns_name, nameservers_from_resolv_conf, unit_fqdn
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import render_nginx_config
from coordinated_mesh.proxy.pebble import (
    EXPORTER_PORT,
    NGINX_CONFIG_PATH,
    exporter_layer,
    nginx_layer,
)
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    TelemetryProxyPlan,
    build_telemetry_proxy,
)
from coordinated_mesh.relations.cluster import CoordinatorAppData, WorkerUnitData
from coordinated_mesh.relations.databag import DatabagError
from coordinated_mesh.relations.endpoints import CoordinatorEndpoints
from coordinated_mesh.relations.grafana_source import publish_grafana_source
from coordinated_mesh.relations.loki_push_api import publish_loki_metadata, read_loki_push_urls
from coordinated_mesh.relations.prometheus_scrape import publish_scrape_jobs
from coordinated_mesh.relations.remote_write import read_remote_write_urls
from coordinated_mesh.relations.tracing import read_tracing_receivers, request_tracing_protocols

__all__ = [
    "Coordinator",
    "KubernetesBackend",
    "LightkubeBackend",
    "WorkerQueryApi",
    "make_kubernetes_backend",
]

logger = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"
"""The charm container's resolver configuration; the pod's containers share it."""


# --- What one reconcile reads ------------------------------------------------------------------


@dataclass(frozen=True)
class _Cluster:
    """The workers, as read from the cluster relations (invalid units left out)."""

    apps: tuple[str, ...] = ()
    units: tuple[WorkerUnitData, ...] = ()


@dataclass
class _Desired:
    """Everything the coordinator wants this hook, computed from what it read."""

    proxy: TelemetryProxyPlan
    nginx_config: str
    labels: dict[str, str]
    """Our pods' labels: membership, plus the beacon's while the mesh is active."""
    cluster_policies: list[MeshPolicy]
    """What the cluster needs: applied while the mesh is active, kept after it while pods of the
    cluster are still enrolled, deleted once none is."""
    app_data: CoordinatorAppData


class Coordinator(ops.Object):
    """Runs a coordinated-worker cluster's coordinator: proxy, labels, policies, statuses.

    Args:
        charm: the coordinator charm.
        worker_telemetry_proxy_config: the telemetry proxy's ports.
        charm_mesh_policies: the charm's own external policies (who else may reach it), added to
            the defaults (metrics scraping of the exporter and of the proxied worker metrics).
        worker_config: returns the workload configuration text handed to the workers (``None``:
            the coordinator publishes none).
        worker_query_api: a query API every worker serves, to offer through the proxy (one
            route spread over the worker units) and as a Grafana datasource on
            ``grafana_source_endpoint``; ``None`` (the default) offers none.
        cluster_endpoint: the relation to the workers.
        metrics_endpoint: the ``prometheus_scrape`` relation (provides).
        logging_endpoint: the ``loki_push_api`` relation (requires).
        remote_write_endpoint: the ``prometheus_remote_write`` relation (requires).
        charm_tracing_endpoint: the ``tracing`` relation for the workers' charm traces.
        workload_tracing_endpoint: the ``tracing`` relation for the workers' workload traces.
        grafana_source_endpoint: the ``grafana_datasource`` relation (provides) on which the
            ``worker_query_api`` is published; ``None`` serves the route without publishing it.
            Unused without ``worker_query_api``.
        mesh_endpoint: the ``service_mesh`` relation to the beacon.
        cross_model_mesh_requires_endpoint: the ``cross_model_mesh`` relation we require.
        cross_model_mesh_provides_endpoint: the ``cross_model_mesh`` relation we provide.
        nginx_container: the container running nginx.
        exporter_container: the container running ``nginx-prometheus-exporter``.
        show_mesh_action: the action printing labels and policies, wanted and actual (``None``
            when the charm does not declare it).
        kubernetes_client_factory: builds the lightkube client (default: in-cluster).
        kubernetes_backend_factory: builds the whole Kubernetes backend (tests pass a fake);
            takes precedence over ``kubernetes_client_factory``.
        resolv_conf: where to read the DNS resolvers nginx uses (default :data:`RESOLV_CONF`).
        cluster_domain: the Kubernetes cluster's DNS domain, in the Service and unit names
            handed to workers and scrapers.

    Raises:
        ValueError: the charm does not declare one of the endpoints, containers or the action
            named here (``grafana_source_endpoint`` only counts with ``worker_query_api``).
    """

    def __init__(
        self,
        charm: ops.CharmBase,
        *,
        worker_telemetry_proxy_config: WorkerTelemetryProxyConfig,
        charm_mesh_policies: Sequence[AppPolicy | UnitPolicy] = (),
        worker_config: Callable[[], str] | None = None,
        worker_query_api: WorkerQueryApi | None = None,
        cluster_endpoint: str = "cluster",
        metrics_endpoint: str = "metrics-endpoint",
        logging_endpoint: str = "logging",
        remote_write_endpoint: str = "send-remote-write",
        charm_tracing_endpoint: str = "charm-tracing",
        workload_tracing_endpoint: str = "workload-tracing",
        grafana_source_endpoint: str | None = "grafana-source",
        mesh_endpoint: str = "service-mesh",
        cross_model_mesh_requires_endpoint: str = "require-cmr-mesh",
        cross_model_mesh_provides_endpoint: str = "provide-cmr-mesh",
        nginx_container: str = "nginx",
        exporter_container: str = "nginx-prometheus-exporter",
        show_mesh_action: str | None = "show-mesh",
        kubernetes_client_factory: ClientFactory | None = None,
        kubernetes_backend_factory: Callable[..., KubernetesBackend] | None = None,
        resolv_conf: str | None = None,
        cluster_domain: str = "cluster.local",
    ):
        super().__init__(charm, "coordinator")
        self._charm = charm
        self._proxy_config = worker_telemetry_proxy_config
        self._worker_config = worker_config
        self._query_api = worker_query_api
        relations = {
            cluster_endpoint: "cluster_endpoint",
            metrics_endpoint: "metrics_endpoint",
            logging_endpoint: "logging_endpoint",
            remote_write_endpoint: "remote_write_endpoint",
            charm_tracing_endpoint: "charm_tracing_endpoint",
            workload_tracing_endpoint: "workload_tracing_endpoint",
        }
        if worker_query_api is not None and grafana_source_endpoint is not None:
            relations[grafana_source_endpoint] = (
                "grafana_source_endpoint, where worker_query_api is published "
                "(interface grafana_datasource; or pass grafana_source_endpoint=None)"
            )
        require_declared(
            charm,
            relations=relations,
            containers={
                nginx_container: "nginx_container",
                exporter_container: "exporter_container",
            },
            actions={show_mesh_action: "show_mesh_action"} if show_mesh_action else None,
        )
        self._grafana_source_endpoint = (
            grafana_source_endpoint if worker_query_api is not None else None
        )
        self._endpoints = CoordinatorEndpoints(
            cluster=cluster_endpoint,
            metrics=metrics_endpoint,
            logging=logging_endpoint,
            remote_write=remote_write_endpoint,
            charm_tracing=charm_tracing_endpoint,
            workload_tracing=workload_tracing_endpoint,
            grafana_source=grafana_source_endpoint,
            mesh=mesh_endpoint,
            cross_model_mesh_requires=cross_model_mesh_requires_endpoint,
            cross_model_mesh_provides=cross_model_mesh_provides_endpoint,
        )
        self._metrics_endpoint = metrics_endpoint
        self._mesh_endpoint = mesh_endpoint
        self._cmr_provides_endpoint = cross_model_mesh_provides_endpoint
        self._nginx_container = nginx_container
        self._exporter_container = exporter_container
        self._client_factory = kubernetes_client_factory
        self._backend_factory = kubernetes_backend_factory
        self._resolv_conf = resolv_conf
        if not is_dns_name(cluster_domain):
            raise ValueError(f"invalid cluster domain: {cluster_domain!r}")
        self._cluster_domain = cluster_domain
        self._backend: KubernetesBackend | None = None
        self._observations: Observations | None = None
        self._reconciled = False

        self.external_policies: list[AppPolicy | UnitPolicy] = [
            *default_mesh_policies(
                worker_telemetry_proxy_config, metrics_relation=metrics_endpoint
            ),
            *charm_mesh_policies,
        ]
        """What the beacon is asked to allow: the defaults, then the charm's own policies."""
        self.mesh = ServiceMeshConsumer(
            charm,
            policies=self.external_policies,
            mesh_relation_name=mesh_endpoint,
            cross_model_mesh_requires_name=cross_model_mesh_requires_endpoint,
            cross_model_mesh_provides_name=cross_model_mesh_provides_endpoint,
        )
        """The ``service_mesh`` consumer: the beacon's labels, and our external policies."""

        self._observe_every_hook()
        framework = charm.framework
        framework.observe(charm.on.collect_unit_status, self._on_collect_unit_status)
        framework.observe(charm.on.collect_app_status, self._on_collect_app_status)
        if show_mesh_action is not None:
            framework.observe(charm.on[show_mesh_action].action, self._on_show_mesh)

    # --- Events ---------------------------------------------------------------------------------

    def _observe_every_hook(self) -> None:
        skipped = (ops.CollectStatusEvent, ops.CollectMetricsEvent, ops.ActionEvent)
        for bound in self._charm.on.events().values():
            if issubclass(bound.event_type, skipped):
                continue
            if issubclass(bound.event_type, ops.RemoveEvent):
                self.framework.observe(bound, self._on_remove)
            else:
                self.framework.observe(bound, self._on_hook)

    def _on_hook(self, _: ops.EventBase) -> None:
        if not self._reconciled:
            self._reconciled = True
            self.reconcile()

    def _on_remove(self, _: ops.RemoveEvent) -> None:
        if self._reconciled:
            return
        self._reconciled = True
        if self._charm.app.planned_units() > 0 or not self._charm.unit.is_leader():
            return  # scaling down, or another unit is in charge: nothing is ours to delete
        logger.info("last unit of %s removed: deleting its Kubernetes objects", self._app_name)
        # Failures are logged; no status is set on a unit that is going away.
        self._k8s(
            self._new_observations(),
            lambda backend: backend.delete_policies(),
            crd_missing_ok=True,
        )

    # --- Reconcile ------------------------------------------------------------------------------

    @property
    def _app_name(self) -> str:
        return self._charm.app.name

    @property
    def _namespace(self) -> str:
        return self._charm.model.name

    def _new_observations(self) -> Observations:
        return Observations(app_name=self._app_name, is_leader=self._charm.unit.is_leader())

    def reconcile(self) -> None:
        """Bring everything to its desired state; called once per hook, safe to call again."""
        obs = self._new_observations()
        desired = self._desired(obs)
        self._apply_workload(desired, obs)
        if obs.is_leader:
            self._apply_leader(desired, obs)
        self._observations = obs

    def _desired(self, obs: Observations) -> _Desired:
        cluster = self._read_cluster(obs)
        obs.worker_apps = len(cluster.apps)
        obs.worker_units = len(cluster.units)
        self._read_mesh(obs)
        proxy = build_telemetry_proxy(self._proxy_inputs(cluster, obs))
        self._record_problems(obs, proxy.problems)
        labels = pod_labels(self._app_name, self._mesh_labels() if obs.mesh_active else None)
        cluster_policies = build_cluster_policies(
            coordinator_app=self._app_name, namespace=self._namespace, worker_apps=cluster.apps
        )
        if obs.mesh_active and obs.is_leader:
            obs.internal_policies = len(cluster_policies)
        app_data = CoordinatorAppData.compose(
            worker_labels=labels,
            worker_config=self._worker_config() if self._worker_config else None,
            telemetry=proxy.proxied_telemetry,
        )
        return _Desired(
            proxy=proxy,
            nginx_config=render_nginx_config(proxy),
            labels=labels,
            cluster_policies=cluster_policies,
            app_data=app_data,
        )

    def _read_cluster(self, obs: Observations) -> _Cluster:
        apps: set[str] = set()
        units: list[WorkerUnitData] = []
        for relation in self.model.relations.get(self._endpoints.cluster, ()):
            apps.add(relation.app.name)
            for unit in sorted(relation.units, key=lambda u: u.name):
                try:
                    data = dict(relation.data[unit])
                except ops.ModelError as e:
                    obs.relations.append(
                        Problem(self._endpoints.cluster, unit.name, f"unreadable: {e}")
                    )
                    continue
                if not data:
                    continue  # joined but not yet published: not an error
                try:
                    worker = WorkerUnitData.load(data)
                except DatabagError as e:
                    obs.relations.append(Problem(self._endpoints.cluster, unit.name, str(e)))
                    continue
                topology = worker.juju_topology
                if topology.unit != unit.name or topology.application != relation.app.name:
                    obs.relations.append(
                        Problem(
                            self._endpoints.cluster,
                            unit.name,
                            f"juju_topology names {topology.unit} of {topology.application}",
                        )
                    )
                    continue
                units.append(worker)
        return _Cluster(apps=tuple(sorted(apps)), units=tuple(units))

    def _read_resolvers(self) -> list[str]:
        path = self._resolv_conf or RESOLV_CONF
        try:
            with open(path) as f:
                return nameservers_from_resolv_conf(f.read())
        except OSError as e:
            logger.warning("cannot read %s: %s", path, e)
            return []

    def _proxy_inputs(self, cluster: _Cluster, obs: Observations) -> TelemetryProxyInputs:
        relations = self.model.relations
        names = self._endpoints
        problems: list[Problem] = []
        loki, found = read_loki_push_urls(relations.get(names.logging, ()))
        problems += found
        remote_write, found = read_remote_write_urls(relations.get(names.remote_write, ()))
        problems += found
        charm_tracing, found = read_tracing_receivers(relations.get(names.charm_tracing, ()))
        problems += found
        workload_tracing, found = read_tracing_receivers(relations.get(names.workload_tracing, ()))
        problems += found
        self._record_problems(obs, problems)
        return TelemetryProxyInputs(
            identity=CoordinatorIdentity(
                app_name=self._app_name,
                model_name=self._namespace,
                model_uuid=self.model.uuid,
                cluster_domain=self._cluster_domain,
            ),
            config=self._proxy_config,
            workers=cluster.units,
            backend_loki_urls=loki,
            backend_remote_write_urls=remote_write,
            backend_charm_tracing_receivers=charm_tracing,
            backend_workload_tracing_receivers=workload_tracing,
            resolvers=self._read_resolvers(),
            endpoints=names,
            worker_query_api=self._query_api,
        )

    @staticmethod
    def _record_problems(obs: Observations, problems: Sequence[Problem]) -> None:
        """File telemetry problems: the proxy's own inputs apart, relation data by relation."""
        for problem in problems:
            if not problem.endpoint:
                obs.proxy.append(f"{problem.item}: {problem.reason}")
            elif problem not in obs.relations:
                obs.relations.append(problem)

    def _tracing_protocols(self, endpoint: str) -> list[str]:
        """What to request from a tracing provider: what the proxy can forward."""
        protocols = ["otlp_http"]
        if endpoint == self._endpoints.workload_tracing and self._proxy_config.grpc_port:
            protocols.append("otlp_grpc")
        return protocols

    def _unit_address(self) -> str:
        """The unit's DNS name in Juju's headless Service (where ``*:PORT`` targets go)."""
        return unit_fqdn(
            self._charm.unit.name,
            app_name=self._app_name,
            model_name=self._namespace,
            cluster_domain=self._cluster_domain,
        )

    # --- Mesh -----------------------------------------------------------------------------------

    def _read_mesh(self, obs: Observations) -> None:
        obs.mesh_related = self.mesh.enabled
        obs.mesh_ready = obs.mesh_related and self.mesh.ready
        obs.mesh_type = self.mesh.mesh_type() if obs.mesh_ready else None
        obs.mesh_problem = self.mesh.problem if obs.mesh_related else None
        for problem in self.mesh.cross_model_problems:
            obs.relations.append(Problem(self._cmr_provides_endpoint, "cmr_data", problem))

    def _mesh_labels(self) -> dict[str, str]:
        return self.mesh.labels()

    # --- Applying: every unit -------------------------------------------------------------------

    def _apply_workload(self, desired: _Desired, obs: Observations) -> None:
        self._charm.unit.set_ports(*sorted(self._proxy_config.ports | {EXPORTER_PORT}))
        # Every unit publishes its own address (its unit databag) so that the exporter job's
        # ``*:9113`` target reaches each unit; the jobs themselves are written by the leader.
        publish_scrape_jobs(
            self.model,
            desired.proxy.scrape_jobs,
            charm_name=self._charm.meta.name,
            unit_address=self._unit_address(),
            relation_name=self._metrics_endpoint,
        )
        if self._query_api is not None and self._grafana_source_endpoint is not None:
            # Every unit publishes the same Service URL (the leader also the metadata): Grafana
            # makes one datasource per unit. "" while no worker can serve queries.
            publish_grafana_source(
                self.model,
                url=desired.proxy.query_url,
                source_type=self._query_api.datasource_type,
                relation_name=self._grafana_source_endpoint,
            )
        nginx = self._charm.unit.get_container(self._nginx_container)
        exporter = self._charm.unit.get_container(self._exporter_container)
        for container, apply in (
            (nginx, lambda: self._apply_nginx(nginx, desired.nginx_config, obs)),
            (
                exporter,
                lambda: self._apply_layer(exporter, exporter_layer(desired.proxy.status_port)),
            ),
        ):
            if not container.can_connect():
                obs.workload.append(container.name)
                continue
            try:
                apply()
            except ops.pebble.ConnectionError:
                obs.workload.append(container.name)  # Pebble went away mid-hook: next hook
            except (ops.pebble.APIError, ops.pebble.ChangeError) as e:
                logger.error("%s: %s", container.name, e)
                obs.proxy.append(f"{container.name}: {_first_line(str(e))}")

    def _apply_nginx(self, container: ops.Container, config: str, obs: Observations) -> None:
        """Push the configuration and reload nginx, only if the file in the container differs."""
        try:
            current = container.pull(NGINX_CONFIG_PATH).read()
        except ops.pebble.PathError:
            current = None
        config_changed = current != config
        if config_changed:
            container.push(NGINX_CONFIG_PATH, config, make_dirs=True)
            logger.info("nginx configuration changed (%d bytes)", len(config))
        replanned = self._apply_layer(container, nginx_layer())
        if config_changed and not replanned and self._running(container, "nginx"):
            try:
                container.exec(["nginx", "-s", "reload"]).wait_output()
            except ops.pebble.ExecError as e:
                stderr = e.stderr if isinstance(e.stderr, str) else ""
                logger.error("nginx -s reload failed (%s): %s", e.exit_code, stderr)
                detail = _first_line(stderr) or f"exit code {e.exit_code}"
                obs.proxy.append(
                    f"nginx reload failed, the previous configuration serves: {detail}"
                )

    @staticmethod
    def _running(container: ops.Container, service: str) -> bool:
        services = container.get_services(service)
        return service in services and services[service].is_running()

    def _apply_layer(self, container: ops.Container, layer: ops.pebble.LayerDict) -> bool:
        """Add ``layer`` and replan only when the plan would change; True if it replanned.

        A service that is not running (it crashed, or was never started) also causes a replan.
        """
        wanted = ops.pebble.Layer(layer)
        plan = container.get_plan()
        services = wanted.services
        unchanged = all(plan.services.get(name) == service for name, service in services.items())
        if unchanged and all(self._running(container, name) for name in services):
            return False
        container.add_layer(container.name, wanted, combine=True)
        container.replan()
        logger.info("replanned %s", container.name)
        return True

    # --- Applying: the leader -------------------------------------------------------------------

    def _k8s(
        self,
        obs: Observations,
        action: Callable[[KubernetesBackend], object],
        *,
        crd_missing_ok: bool = False,
    ) -> bool:
        """Run one Kubernetes action, turning its failure into a problem; True if it succeeded."""
        if any(p.kind is KubernetesProblemKind.forbidden for p in obs.kubernetes):
            return False  # same credentials, same answer: don't ask again this hook
        try:
            action(self._kubernetes())
        except ForbiddenError as e:
            logger.error("Kubernetes: %s", e)
            obs.kubernetes.append(KubernetesProblem(KubernetesProblemKind.forbidden, str(e)))
            return False
        except CRDMissingError as e:
            if crd_missing_ok:
                return True
            logger.error("Kubernetes: %s", e)
            obs.kubernetes.append(KubernetesProblem(KubernetesProblemKind.crd_missing, str(e)))
            return False
        except KubernetesError as e:
            logger.error("Kubernetes: %s", e)
            obs.kubernetes.append(KubernetesProblem(KubernetesProblemKind.api_error, str(e)))
            return False
        return True

    def _kubernetes(self) -> KubernetesBackend:
        if self._backend is None:
            if self._backend_factory is not None:
                self._backend = self._backend_factory(
                    app_name=self._app_name, namespace=self._namespace
                )
            else:
                self._backend = make_kubernetes_backend(
                    app_name=self._app_name,
                    namespace=self._namespace,
                    client_factory=self._client_factory,
                )
        return self._backend

    def _apply_leader(self, desired: _Desired, obs: Observations) -> None:
        if obs.mesh_active:
            app_data = self._join_mesh(desired, obs)
        else:
            app_data = desired.app_data
            # Leaving the mesh: labels first (what makes pods leave), then the policies, which
            # stay while pods are still enrolled.
            self._k8s(obs, lambda backend: backend.reconcile_labels(desired.labels))
            self._drain_policies(desired.cluster_policies, obs)
        if self.mesh.publish_policies():
            logger.info("published the external policies on %s", self._mesh_endpoint)
        self.mesh.publish_cmr_data()
        publish_loki_metadata(
            self.model, charm_name=self._charm.meta.name, relation_name=self._endpoints.logging
        )
        for endpoint in (self._endpoints.charm_tracing, self._endpoints.workload_tracing):
            request_tracing_protocols(self.model, endpoint, self._tracing_protocols(endpoint))
        for relation in self.model.relations.get(self._endpoints.cluster, ()):
            if app_data.write(relation.data[self._charm.app]):
                logger.info("updated the %s databag of relation %d", relation.name, relation.id)

    def _join_mesh(self, desired: _Desired, obs: Observations) -> CoordinatorAppData:
        """Policies first, then the mesh labels; the cluster databag to write.

        If the policies could not be applied, the mesh labels are held back (ours and the
        workers' stay as applied or published before) while membership is still applied and
        published (:func:`~coordinated_mesh.coordinator_plan.held_labels`).
        """
        policies = desired.cluster_policies
        if self._k8s(obs, lambda backend: backend.reconcile_policies(policies)):
            self._k8s(obs, lambda backend: backend.reconcile_labels(desired.labels))
            return desired.app_data

        def hold(backend: KubernetesBackend) -> None:
            backend.reconcile_labels(held_labels(backend.managed_labels(), self._app_name))

        self._k8s(obs, hold)
        worker_labels = held_labels(self._published_labels(), self._app_name)
        return desired.app_data.model_copy(update={"worker_labels": worker_labels})

    def _drain_policies(self, policies: Sequence[MeshPolicy], obs: Observations) -> None:
        """Off the mesh: keep the owned policies while a cluster pod is enrolled, else delete them.

        Reads nothing but the owned policies in our namespace unless there are some; deletes
        nothing unless every read succeeded and showed no enrolled pod.
        """
        listed: list[dict[str, Any]] = []
        if not self._k8s(
            obs, lambda backend: listed.extend(backend.local_policies()), crd_missing_ok=True
        ):
            return
        if not listed:
            return  # the steady state off the mesh: nothing owned, nothing else to read
        pods: list[ClusterPod] = []
        selector = cluster_member_labels(self._app_name)
        if not self._k8s(obs, lambda backend: pods.extend(backend.cluster_pods(selector))):
            return
        namespace: dict[str, str] = {}
        if namespace_decides(pods) and not self._k8s(
            obs, lambda backend: namespace.update(backend.namespace_labels())
        ):
            return
        drain = mesh_drain(pods, namespace)
        if drain.done:
            logger.info("no pod of the cluster is on the mesh: deleting the internal policies")
            self._k8s(
                obs,
                lambda backend: backend.reconcile_policies([], listed=listed),
                crd_missing_ok=True,
            )
            return
        logger.info(
            "off the mesh, but %d cluster pods are still enrolled (%s): keeping the internal "
            "policies",
            len(drain.enrolled),
            ", ".join(drain.enrolled),
        )
        kept = len(listed)
        if self._k8s(obs, lambda backend: backend.reconcile_policies(policies, listed=listed)):
            kept = len(policies)
        obs.draining = DrainStatus(
            policies=kept, pods=len(drain.enrolled), namespace_enrolled=drain.namespace_enrolled
        )

    def _published_labels(self) -> dict[str, str] | None:
        """The worker labels already in the cluster databags (the first valid one), if any."""
        relations = self.model.relations.get(self._endpoints.cluster, ())
        for relation in sorted(relations, key=lambda r: r.id):
            try:
                published = CoordinatorAppData.load(relation.data[self._charm.app])
            except DatabagError:
                continue
            if published.worker_labels is not None:
                return published.worker_labels
        return None

    # --- Status and action ----------------------------------------------------------------------

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        if self._observations is None:
            return  # no reconcile this dispatch (an action): keep the status as it is
        for status in unit_statuses(self._observations):
            event.add_status(status)

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        self._on_collect_unit_status(event)

    def _on_show_mesh(self, event: ops.ActionEvent) -> None:
        """Print the effective labels and policies: wanted, and what Kubernetes holds."""
        obs = self._new_observations()
        desired = self._desired(obs)
        external = [p.to_wire() for p in self.mesh.mesh_policies()]
        wanted_internal = [p.to_wire() for p in desired.cluster_policies if obs.mesh_active]
        results: dict[str, Any] = {
            "mesh": json.dumps(
                {"related": obs.mesh_related, "ready": obs.mesh_ready, "type": obs.mesh_type}
            ),
            "labels-wanted": json.dumps(desired.labels, sort_keys=True),
            "external-policies-wanted": json.dumps(external, sort_keys=True),
            "cluster-policies-wanted": json.dumps(wanted_internal, sort_keys=True),
        }
        event.log(f"mesh: {results['mesh']}")
        event.log(f"labels wanted: {results['labels-wanted']}")
        event.log(f"{len(external)} external and {len(wanted_internal)} cluster policies wanted")
        actual: dict[str, Any] = {}

        def read(backend: KubernetesBackend) -> None:
            actual["labels"] = backend.managed_labels()
            actual["policies"] = backend.owned_policies()

        if self._k8s(obs, read, crd_missing_ok=True):
            policies = actual.get("policies", [])
            results["labels-in-kubernetes"] = json.dumps(actual.get("labels", {}), sort_keys=True)
            results["cluster-policies-in-kubernetes"] = json.dumps(
                [_summarize_policy(obj) for obj in policies], sort_keys=True
            )
            event.log(f"labels in Kubernetes: {results['labels-in-kubernetes']}")
            event.log(f"{len(policies)} cluster policies in Kubernetes")
            if policies and not obs.mesh_active:
                event.log(
                    "off the mesh: they stay while pods of the cluster are still enrolled "
                    "(the leader's status says how many; update-status checks again)"
                )
        else:
            problem = obs.kubernetes[-1]
            results["kubernetes-error"] = problem.detail
            event.log(f"cannot read Kubernetes: {problem.detail}")
        event.set_results(results)


def _first_line(text: str) -> str:
    """The first non-empty line of ``text``, stripped."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _summarize_policy(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an ``AuthorizationPolicy`` object an operator reads: name, namespace, spec."""
    metadata = obj.get("metadata") or {}
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "spec": obj.get("spec"),
    }
