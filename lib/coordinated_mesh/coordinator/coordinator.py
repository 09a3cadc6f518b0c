"""The coordinator of a coordinated-worker cluster: observe, decide, apply on every hook.

A coordinator charm creates one :class:`Coordinator` in its constructor; see
``docs/how-to/add-mesh-support.md``. Every unit runs the proxy; the leader also applies labels and
policies and writes the application databags; non-leaders write no application databag and make
no Kubernetes request. Behaviour and rationale: ``docs/explanation/``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import ops

from coordinated_mesh.charm.metadata import require_declared
from coordinated_mesh.charm.reconciler import Reconciler
from coordinated_mesh.charm.tracing import charm_traces_url, send_charm_traces_to
from coordinated_mesh.coordinator.apply import (
    KubernetesCalls,
    Outcome,
    apply_leader,
    apply_workload,
)
from coordinated_mesh.coordinator.decide import (
    CoordinatorSpec,
    Decision,
    decide,
    default_mesh_policies,
)
from coordinated_mesh.coordinator.kubernetes import KubernetesBackend, make_kubernetes_backend
from coordinated_mesh.coordinator.snapshot import Snapshot, TlsSources, observe
from coordinated_mesh.coordinator.status import Observations, unit_statuses
from coordinated_mesh.coordinator.tls import backend_checks_key, check_tls_backends
from coordinated_mesh.k8s.client import ClientFactory
from coordinated_mesh.mesh.consumer import ServiceMeshConsumer
from coordinated_mesh.mesh.policies import AppPolicy, UnitPolicy
from coordinated_mesh.parse import parse_cluster_domain, shorten, unit_fqdn
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import NginxSettings
from coordinated_mesh.proxy.tls import check_backend_tls
from coordinated_mesh.relations.certificate_transfer import TrustedCas
from coordinated_mesh.relations.certificates import ServerCertificates
from coordinated_mesh.relations.endpoints import CoordinatorEndpoints

__all__ = ["Coordinator"]

logger = logging.getLogger(__name__)

MAX_ACTION_LOG = 500
"""The longest line ``show-mesh`` logs (action output reaches ``juju`` as an argument)."""


class Coordinator(Reconciler[KubernetesBackend]):
    """Runs a coordinated-worker cluster's coordinator: proxy, labels, policies, statuses.

    On every hook :meth:`reconcile` observes (:func:`~.snapshot.observe`), decides
    (:func:`~.decide.decide`, pure) and applies (:mod:`~.apply`, only the difference). What it
    does and in which order: ``docs/explanation/joining-and-leaving-the-mesh.md``.

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
        certificates_endpoint: the ``tls-certificates`` relation for the proxy's server
            certificate (each unit requests one for the Service FQDN and its own FQDN); while a
            certificate is served, every proxied URL is ``https``. ``None``: never TLS.
        receive_ca_cert_endpoint: the ``certificate_transfer`` relation whose CAs the proxy
            trusts, besides the system bundle, to verify TLS backends. ``None``: the system
            bundle only.
        cross_model_mesh_requires_endpoint: the ``cross_model_mesh`` relation we require.
        cross_model_mesh_provides_endpoint: the ``cross_model_mesh`` relation we provide.
        nginx_container: the container running nginx.
        exporter_container: the container running ``nginx-prometheus-exporter``.
        show_mesh_action: the action printing labels and policies, wanted and actual (``None``
            when the charm does not declare it).
        kubernetes_client_factory: builds the lightkube client (default: in-cluster).
        kubernetes_backend_factory: builds the whole Kubernetes backend (tests pass a fake);
            takes precedence over ``kubernetes_client_factory``.
        resolv_conf: where to read the DNS resolvers nginx uses (default ``/etc/resolv.conf``).
        system_ca_bundle: the system CA bundle trusted for TLS backends (default the charm
            container's ``/etc/ssl/certs/ca-certificates.crt``).
        tls_backend_check: how a TLS backend is verified for the status, called as
            ``check(host, port, server_name=, trusted_pem=, timeout=)`` and returning why it
            fails or ``None`` (default :func:`~coordinated_mesh.proxy.tls.check_backend_tls`, one
            bounded handshake trusting what nginx trusts); tests pass a stand-in.
        cluster_domain: the Kubernetes cluster's DNS domain, in the Service and unit names
            handed to workers and scrapers.
        nginx_upstream_resolve: the ``nginx_container`` image's nginx is 1.27.3 or newer
            (``server host:port resolve`` in an ``upstream``): connections to every backend are
            pooled and kept alive, names still resolved at run time. Leave ``False`` for an
            older nginx (1.22, 1.24), which would refuse that configuration; then every
            proxied request opens a new connection. See ``docs/explanation/telemetry-proxy.md``.

    Raises:
        ValueError: the charm does not declare one of the endpoints, containers or the action
            named here (``grafana_source_endpoint`` only counts with ``worker_query_api``).
    """

    # Unit-local: whether this unit found nothing of coordinated-workers left to take over. A
    # cache: losing it (a new pod) costs one more look, three requests.
    _migration = ops.StoredState()
    # Unit-local: the last verification of the TLS backends, and what it was made for.
    _backend_checks = ops.StoredState()
    # Unit-local: an nginx reload failed and is to be tried again (nginx serves the older text).
    _nginx = ops.StoredState()

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
        certificates_endpoint: str | None = "certificates",
        receive_ca_cert_endpoint: str | None = "receive-ca-cert",
        cross_model_mesh_requires_endpoint: str = "require-cmr-mesh",
        cross_model_mesh_provides_endpoint: str = "provide-cmr-mesh",
        nginx_container: str = "nginx",
        exporter_container: str = "nginx-prometheus-exporter",
        show_mesh_action: str | None = "show-mesh",
        kubernetes_client_factory: ClientFactory | None = None,
        kubernetes_backend_factory: Callable[..., KubernetesBackend] | None = None,
        resolv_conf: str | None = None,
        system_ca_bundle: str | None = None,
        tls_backend_check: Callable[..., str | None] | None = None,
        cluster_domain: str = "cluster.local",
        nginx_upstream_resolve: bool = False,
    ):
        endpoints = CoordinatorEndpoints(
            cluster=cluster_endpoint,
            metrics=metrics_endpoint,
            logging=logging_endpoint,
            remote_write=remote_write_endpoint,
            charm_tracing=charm_tracing_endpoint,
            workload_tracing=workload_tracing_endpoint,
            grafana_source=grafana_source_endpoint if worker_query_api is not None else None,
            mesh=mesh_endpoint,
            cross_model_mesh_requires=cross_model_mesh_requires_endpoint,
            cross_model_mesh_provides=cross_model_mesh_provides_endpoint,
            certificates=certificates_endpoint,
            receive_ca_cert=receive_ca_cert_endpoint,
        )
        relations = {
            cluster_endpoint: "cluster_endpoint",
            metrics_endpoint: "metrics_endpoint",
            logging_endpoint: "logging_endpoint",
            remote_write_endpoint: "remote_write_endpoint",
            charm_tracing_endpoint: "charm_tracing_endpoint",
            workload_tracing_endpoint: "workload_tracing_endpoint",
        }
        if certificates_endpoint is not None:
            relations[certificates_endpoint] = (
                "certificates_endpoint (interface tls-certificates; or pass None)"
            )
        if receive_ca_cert_endpoint is not None:
            relations[receive_ca_cert_endpoint] = (
                "receive_ca_cert_endpoint (interface certificate_transfer; or pass None)"
            )
        if endpoints.grafana_source is not None:
            relations[endpoints.grafana_source] = (
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

        def default_backend(**names: str) -> KubernetesBackend:
            # Built on first use, after the Reconciler made the memory.
            return make_kubernetes_backend(
                client_factory=kubernetes_client_factory,
                label_cache=self.memory.label_memory(),
                policy_cache=self.memory.policy_memory(),
                **names,
            )

        super().__init__(charm, "coordinator", kubernetes_backend_factory or default_backend)
        self._spec = CoordinatorSpec(
            proxy_config=worker_telemetry_proxy_config,
            query_api=worker_query_api,
            nginx_settings=NginxSettings(upstream_resolve=nginx_upstream_resolve),
        )
        self._endpoints = endpoints
        self._worker_config = worker_config
        self._nginx_container = nginx_container
        self._exporter_container = exporter_container
        self._resolv_conf = resolv_conf
        self._system_ca_bundle = system_ca_bundle
        self._tls_backend_check = tls_backend_check or check_backend_tls
        self._cluster_domain = parse_cluster_domain(cluster_domain)
        self._observations: Observations | None = None
        self._migration.set_default(checked=False)
        self._backend_checks.set_default(key="", failures=[])
        self._nginx.set_default(reload_pending=False)
        identity_names = self._certificate_names
        self.certificates = (
            ServerCertificates(charm, names=identity_names, endpoint=certificates_endpoint)
            if certificates_endpoint is not None
            else None
        )
        """The proxy's server certificate (``None`` without ``certificates_endpoint``)."""
        self.trusted_cas = (
            TrustedCas(charm, endpoint=receive_ca_cert_endpoint)
            if receive_ca_cert_endpoint is not None
            else None
        )
        """The CAs trusted for TLS backends (``None`` without ``receive_ca_cert_endpoint``)."""

        self.external_policies: list[AppPolicy | UnitPolicy] = [
            *default_mesh_policies(
                worker_telemetry_proxy_config, metrics_endpoint=metrics_endpoint
            ),
            *charm_mesh_policies,
        ]
        """What the beacon is asked to allow: the defaults, then the charm's own policies."""
        self.mesh = ServiceMeshConsumer(
            charm,
            policies=self.external_policies,
            mesh_endpoint=mesh_endpoint,
            cross_model_mesh_requires_endpoint=cross_model_mesh_requires_endpoint,
            cross_model_mesh_provides_endpoint=cross_model_mesh_provides_endpoint,
        )
        """The ``service_mesh`` consumer: the beacon's labels, and our external policies."""
        if show_mesh_action is not None:
            self.framework.observe(charm.on[show_mesh_action].action, self._on_show_mesh)

    # --- Reconcile ------------------------------------------------------------------------------

    def _certificate_names(self) -> list[str]:
        """What the unit's certificate covers: the Service FQDN (what clients use), its FQDN."""
        model = self._charm.model
        app = self._charm.app.name
        service = f"{app}.{model.name}.svc.{self._cluster_domain}"
        unit = unit_fqdn(
            self._charm.unit.name,
            app_name=app,
            model_name=model.name,
            cluster_domain=self._cluster_domain,
        )
        return [service, unit]

    def observe(self) -> Snapshot:
        """Everything this hook reads, once (see :class:`~.snapshot.Snapshot`)."""
        return observe(
            self._charm,
            self.mesh,
            endpoints=self._endpoints,
            cluster_domain=self._cluster_domain,
            worker_config=self._worker_config,
            resolv_conf=self._resolv_conf,
            tls=TlsSources(
                certificates=self.certificates,
                trusted_cas=self.trusted_cas,
                nginx_container=self._nginx_container,
                nginx_settings=self._spec.nginx_settings,
                system_ca_bundle=self._system_ca_bundle,
            ),
        )

    def reconcile(self) -> None:
        """Observe, decide, apply; called once per hook, safe to call again."""
        snapshot = self.observe()
        # The coordinator's own spans go straight to its charm-tracing backend, verified with
        # the CAs received on receive-ca-cert (and the system's) when there are some.
        send_charm_traces_to(
            charm_traces_url(snapshot.backend_charm_tracing_receivers),
            ca=snapshot.tls.upstream_trust if snapshot.tls.trusted_cas else None,
        )
        decision = decide(self._spec, snapshot)
        outcome = Outcome()
        apply_workload(
            self._charm,
            self._spec,
            snapshot,
            decision,
            outcome=outcome,
            nginx_container=self._nginx_container,
            exporter_container=self._exporter_container,
            memory=self.memory,
            reload_pending=bool(self._nginx.reload_pending),
        )
        failed = outcome.nginx_reload_failed
        if failed is not None and failed != self._nginx.reload_pending:
            self._nginx.reload_pending = failed
        if snapshot.is_leader:
            calls = KubernetesCalls(lambda: self.backend, outcome.kubernetes)
            apply_leader(
                self._charm,
                self.mesh,
                snapshot,
                decision,
                calls=calls,
                outcome=outcome,
                migrate=not self._migration.checked,
                memory=self.memory,
            )
            if outcome.migrated:
                self._migration.checked = True  # this unit need not look again
        outcome.proxy += self._check_tls_backends(snapshot, decision)
        self._observations = _observations(snapshot, decision, outcome)

    def _check_tls_backends(self, snapshot: Snapshot, decision: Decision) -> list[str]:
        """The TLS backends that fail verification as nginx verifies them, for the status.

        Checked (one bounded handshake each) when the backends or the trust changed, and on the
        periodic check (``update-status``); otherwise the last result is shown again.
        """
        # Without any trust the plan already refuses (and names) every TLS backend.
        backends = decision.tls_backends if decision.proxy.upstream_trust else ()
        trust = snapshot.tls.upstream_trust
        key = backend_checks_key(backends, trust) if backends else ""
        stored = self._backend_checks
        if key != stored.key or (backends and self.memory.periodic_hook):
            failures = (
                check_tls_backends(backends, trust, check=self._tls_backend_check)
                if backends
                else []
            )
            if key != stored.key or failures != list(stored.failures):
                stored.key, stored.failures = key, failures
        else:
            failures = [str(f) for f in stored.failures]
        return [f"TLS backend refused, its requests get 502: {f}" for f in failures]

    def statuses(self) -> Sequence[ops.StatusBase]:
        """The statuses of the last reconcile (none when nothing was reconciled)."""
        return unit_statuses(self._observations) if self._observations is not None else ()

    def on_remove(self) -> None:
        """On the removal of the application's last unit, delete every object it owns.

        Its cluster-internal policies and its label memory, in its namespace.
        """
        if self._charm.app.planned_units() > 0 or not self._charm.unit.is_leader():
            return  # scaling down, or another unit is in charge: nothing is ours to delete
        logger.info(
            "last unit of %s removed: deleting its Kubernetes objects", self._charm.app.name
        )
        # Failures are logged; no status is set on a unit that is going away.
        calls = KubernetesCalls(lambda: self.backend, [])
        calls.run(lambda backend: backend.delete_policies(), crd_missing_ok=True)
        calls.run(lambda backend: backend.delete_label_memory())

    # --- show-mesh ------------------------------------------------------------------------------

    def _on_show_mesh(self, event: ops.ActionEvent) -> None:
        """Print the effective labels and policies: wanted, and what Kubernetes holds."""
        snapshot = self.observe()
        decision = decide(self._spec, snapshot)
        external = [p.to_wire() for p in self.mesh.mesh_policies()]
        active = snapshot.mesh.active
        wanted_internal = [p.to_wire() for p in decision.cluster_policies if active]
        mesh = {"related": snapshot.mesh.related, "ready": snapshot.mesh.ready}
        results: dict[str, Any] = {
            "mesh": json.dumps({**mesh, "type": snapshot.mesh.type}),
            "labels-wanted": json.dumps(dict(decision.labels), sort_keys=True),
            "external-policies-wanted": json.dumps(external, sort_keys=True),
            "cluster-policies-wanted": json.dumps(wanted_internal, sort_keys=True),
        }

        def log(text: str) -> None:
            event.log(shorten(text, MAX_ACTION_LOG))

        results["tls"] = json.dumps(_tls_summary(snapshot, decision), sort_keys=True)
        log(f"mesh: {results['mesh']}")
        log(f"tls: {results['tls']}")
        log(f"labels wanted: {results['labels-wanted']}")
        log(f"{len(external)} external and {len(wanted_internal)} cluster policies wanted")
        failures: list[Any] = []
        calls = KubernetesCalls(lambda: self.backend, failures)
        read, actual = calls.run(
            lambda backend: (backend.managed_labels(), backend.owned_policies()),
            crd_missing_ok=True,
        )
        if read:
            labels, policies = actual or ({}, [])
            results["labels-in-kubernetes"] = json.dumps(labels, sort_keys=True)
            results["cluster-policies-in-kubernetes"] = json.dumps(
                [_summarize_policy(obj) for obj in policies], sort_keys=True
            )
            log(f"labels in Kubernetes: {results['labels-in-kubernetes']}")
            log(f"{len(policies)} cluster policies in Kubernetes")
            if policies and not active:
                log(
                    "off the mesh: they stay while pods of the cluster are still enrolled "
                    "(the leader's status says how many; update-status checks again)"
                )
        else:
            detail = failures[-1].detail
            results["kubernetes-error"] = shorten(detail, MAX_ACTION_LOG)
            log(f"cannot read Kubernetes: {detail}")
        event.set_results(results)


def _observations(snapshot: Snapshot, decision: Decision, outcome: Outcome) -> Observations:
    """What the statuses are computed from."""
    mesh = snapshot.mesh
    relation_problems = [p for p in decision.problems if p.endpoint]
    own = [f"{p.item}: {p.reason}" for p in decision.problems if not p.endpoint]
    return Observations(
        app_name=snapshot.identity.app_name,
        is_leader=snapshot.is_leader,
        endpoints=snapshot.endpoints,
        worker_apps=len(snapshot.worker_apps),
        worker_units=len(snapshot.workers),
        outdated_worker_apps=snapshot.outdated_worker_apps,
        mesh_related=mesh.related,
        mesh_ready=mesh.ready,
        mesh_type=mesh.type,
        mesh_problem=mesh.problem,
        internal_policies=(
            len(decision.cluster_policies) if mesh.active and snapshot.is_leader else None
        ),
        draining=outcome.draining,
        kubernetes=outcome.kubernetes,
        relations=relation_problems,
        workload=outcome.workload,
        proxy=[*own, *outcome.proxy],
        tls_waiting=snapshot.tls.waiting,
        tls_expiry=_served_expiry(snapshot, decision),
    )


def _served_expiry(snapshot: Snapshot, decision: Decision) -> datetime | None:
    certificate = snapshot.tls.certificate
    return certificate.expiry if decision.proxy.tls and certificate is not None else None


def _tls_summary(snapshot: Snapshot, decision: Decision) -> dict[str, Any]:
    """What ``show-mesh`` says of TLS: served or not, for which names, until when."""
    tls = snapshot.tls
    certificate = tls.certificate if decision.proxy.tls else None
    return {
        "related": tls.related,
        "served": certificate is not None,
        "names": list(certificate.dns_names) if certificate else [],
        "expiry": certificate.expiry.isoformat() if certificate else None,
        "renewal-pending": tls.kept,
        "trusted-cas": len(tls.trusted_cas),
    }


def _summarize_policy(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an ``AuthorizationPolicy`` object an operator reads: name, namespace, spec."""
    metadata = obj.get("metadata") or {}
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "spec": obj.get("spec"),
    }
