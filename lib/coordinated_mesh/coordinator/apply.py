"""Apply: the coordinator's writes, only the difference, in a safe order; each returns its problems.

:func:`apply_workload` (every unit) keeps the proxy's containers, ports and unit databags;
:func:`apply_leader` (the leader) applies labels and policies (policies first when joining the
mesh, labels first when leaving it) and writes the application databags. Kubernetes calls go
through :class:`KubernetesCalls`, which turns failures into
:class:`~coordinated_mesh.coordinator.status.KubernetesFailure` values instead of exceptions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ops

from coordinated_mesh.charm.memory import DatabagMemory
from coordinated_mesh.charm.pebble import ensure_layer, is_running, push_and_reload
from coordinated_mesh.coordinator.decide import CoordinatorSpec, Decision
from coordinated_mesh.coordinator.kubernetes import KubernetesBackend, LegacyMigration
from coordinated_mesh.coordinator.snapshot import Snapshot, read_published_labels
from coordinated_mesh.coordinator.status import (
    DrainStatus,
    KubernetesFailure,
    KubernetesFailureKind,
)
from coordinated_mesh.coordinator.tls import remove_tls_files, write_tls_files
from coordinated_mesh.k8s.client import CRDMissingError, ForbiddenError, KubernetesError
from coordinated_mesh.mesh.cluster_policies import cluster_member_labels, held_labels
from coordinated_mesh.mesh.consumer import ServiceMeshConsumer
from coordinated_mesh.mesh.drain import ClusterPod, MeshDrain, mesh_drain, namespace_decides
from coordinated_mesh.mesh.policies import MeshPolicy
from coordinated_mesh.parse import shorten, unit_fqdn
from coordinated_mesh.proxy.pebble import NGINX_CONFIG_PATH, exporter_layer, nginx_layer
from coordinated_mesh.relations.cluster import CoordinatorAppData
from coordinated_mesh.relations.grafana_source import publish_grafana_source
from coordinated_mesh.relations.loki_push_api import publish_loki_metadata
from coordinated_mesh.relations.prometheus_scrape import publish_scrape_jobs
from coordinated_mesh.relations.tracing import request_tracing_protocols

__all__ = ["KubernetesCalls", "Outcome", "apply_leader", "apply_workload"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Outcome:
    """What applying met: the problems to show, and what is kept while leaving the mesh."""

    kubernetes: list[KubernetesFailure] = field(default_factory=list[KubernetesFailure])
    workload: list[str] = field(default_factory=list[str])
    """Containers that could not be configured yet (Pebble not ready), by name."""
    proxy: list[str] = field(default_factory=list[str])
    """Problems of the proxy's own workload (a failed reload, a Pebble error)."""
    draining: DrainStatus | None = None
    """Off the mesh, the policies kept for pods still enrolled (``None``: none)."""
    migrated: bool = False
    """Nothing of ``coordinated-workers`` is left to take over (set when asked to migrate)."""
    nginx_reload_failed: bool | None = None
    """Whether ``nginx -s reload`` failed this hook (``None``: nginx was not configured)."""


class KubernetesCalls:
    """Runs Kubernetes actions, turning their failures into :class:`KubernetesFailure` values.

    After a 403 nothing more is asked this hook (same credentials, same answer).
    """

    def __init__(self, backend: Callable[[], KubernetesBackend], failures: list[KubernetesFailure]):
        self._backend = backend
        self.failures = failures

    def run(
        self, action: Callable[[KubernetesBackend], T], *, crd_missing_ok: bool = False
    ) -> tuple[bool, T | None]:
        """``(True, result)`` when the action succeeded, ``(False, None)`` when it failed.

        With ``crd_missing_ok``, a missing CRD counts as success with no result.
        """
        if any(f.kind is KubernetesFailureKind.forbidden for f in self.failures):
            return False, None
        try:
            return True, action(self._backend())
        except CRDMissingError as e:
            if crd_missing_ok:
                return True, None
            self._fail(KubernetesFailureKind.crd_missing, e)
        except ForbiddenError as e:
            self._fail(KubernetesFailureKind.forbidden, e)
        except KubernetesError as e:
            self._fail(KubernetesFailureKind.api_error, e)
        return False, None

    def _fail(self, kind: KubernetesFailureKind, error: KubernetesError) -> None:
        logger.error("Kubernetes: %s", shorten(str(error), 500))
        self.failures.append(KubernetesFailure(kind, str(error)))


# --- Every unit ---------------------------------------------------------------------------------


def _reload_nginx(container: ops.Container, outcome: Outcome) -> None:
    if not is_running(container, "nginx"):
        return
    try:
        container.exec(["nginx", "-s", "reload"]).wait_output()
    except ops.pebble.ExecError as e:
        stderr = e.stderr if isinstance(e.stderr, str) else ""
        logger.error("nginx -s reload failed (%s): %s", e.exit_code, shorten(stderr, 500))
        detail = shorten(stderr) or f"exit code {e.exit_code}"
        outcome.proxy.append(f"nginx reload failed, the previous configuration serves: {detail}")
        outcome.nginx_reload_failed = True


def _configure_nginx(
    container: ops.Container, decision: Decision, outcome: Outcome, *, reload_pending: bool
) -> bool:
    """TLS files, then the configuration and the layer; one reload for both; stale files last.

    The certificate and key are in place before nginx may read them; a renewed certificate
    alone (the configuration unchanged) is one reload, which keeps every connection. A reload
    that failed on an earlier hook (``reload_pending``) is tried again even when nothing changed
    since: nginx still serves the configuration before it, and the status says so until it
    succeeds. Files of a certificate no longer served are removed only after nginx stopped
    reading them.
    """
    outcome.nginx_reload_failed = False
    files_changed = write_tls_files(container, decision.tls_files)
    changed = push_and_reload(
        container,
        path=NGINX_CONFIG_PATH,
        text=decision.nginx_config,
        layer_label=container.name,
        layer=nginx_layer(),
        reload=lambda: _reload_nginx(container, outcome),
    )
    if (files_changed or reload_pending) and not changed:
        logger.info("reloading nginx: %s", "TLS files changed" if files_changed else "retrying")
        _reload_nginx(container, outcome)
    removed = remove_tls_files(container, decision.stale_tls_paths)
    return files_changed or changed or removed


def apply_workload(
    charm: ops.CharmBase,
    spec: CoordinatorSpec,
    snapshot: Snapshot,
    decision: Decision,
    *,
    outcome: Outcome,
    nginx_container: str,
    exporter_container: str,
    memory: DatabagMemory | None = None,
    reload_pending: bool = False,
) -> None:
    """Ports, unit databags, and the nginx and exporter containers of this unit.

    ``reload_pending``: an earlier hook's ``nginx -s reload`` failed (try it again).
    """
    charm.unit.set_ports(*decision.ports)
    endpoints = snapshot.endpoints
    identity = snapshot.identity
    # Every unit publishes its own address (its unit databag) so that the exporter job's
    # ``*:9113`` target reaches each unit; the jobs themselves are written by the leader.
    publish_scrape_jobs(
        charm.model,
        decision.proxy.scrape_jobs,
        charm_name=snapshot.charm_name,
        unit_address=unit_fqdn(
            snapshot.unit_name,
            app_name=identity.app_name,
            model_name=identity.model_name,
            cluster_domain=identity.cluster_domain,
        ),
        endpoint=endpoints.metrics,
        memory=memory,
    )
    if spec.query_api is not None and endpoints.grafana_source is not None:
        # Every unit publishes the same Service URL (the leader also the metadata): Grafana
        # makes one datasource per unit. "" while no worker can serve queries.
        publish_grafana_source(
            charm.model,
            url=decision.proxy.query_url,
            source_type=spec.query_api.datasource_type,
            ca_cert=decision.proxy.proxied_telemetry.ca_cert,
            endpoint=endpoints.grafana_source,
            memory=memory,
        )
    nginx = charm.unit.get_container(nginx_container)
    exporter = charm.unit.get_container(exporter_container)
    steps: list[tuple[ops.Container, Callable[[], object]]] = [
        (
            nginx,
            lambda: _configure_nginx(nginx, decision, outcome, reload_pending=reload_pending),
        ),
        (
            exporter,
            lambda: ensure_layer(
                exporter, exporter.name, exporter_layer(decision.proxy.status_port)
            ),
        ),
    ]
    for container, step in steps:
        if not container.can_connect():
            outcome.workload.append(container.name)
            continue
        try:
            step()
        except ops.pebble.ConnectionError:
            outcome.workload.append(container.name)  # Pebble went away mid-hook: next hook
        except (ops.pebble.APIError, ops.pebble.ChangeError) as e:
            logger.error("%s: %s", container.name, shorten(str(e), 500))
            outcome.proxy.append(f"{container.name}: {shorten(str(e))}")


# --- The leader ---------------------------------------------------------------------------------


def _join_mesh(snapshot: Snapshot, decision: Decision, calls: KubernetesCalls) -> bool:
    """Policies first, then the mesh labels; whether the policies are in place.

    If they could not be applied, the labels applied before are kept (only the membership label
    made sure of), so no pod enrols without its policies and none leaves on a transient failure.
    """
    policies = decision.cluster_policies
    if calls.run(lambda backend: backend.reconcile_policies(policies))[0]:
        calls.run(lambda backend: backend.reconcile_labels(decision.labels))
        return True
    read, applied = calls.run(lambda backend: backend.managed_labels())
    if read:
        held = held_labels(applied, snapshot.identity.app_name)
        calls.run(lambda backend: backend.reconcile_labels(held))
    return False


def _read_drain(snapshot: Snapshot, calls: KubernetesCalls) -> MeshDrain | None:
    """Which pods of the cluster are still enrolled in the mesh; ``None`` if a read failed."""
    selector = cluster_member_labels(snapshot.identity.app_name)
    read, found_pods = calls.run(lambda backend: backend.cluster_pods(selector))
    if not read:
        return None
    pods: list[ClusterPod] = found_pods or []
    namespace: Mapping[str, str] = {}
    if namespace_decides(pods):
        read, found_labels = calls.run(lambda backend: backend.namespace_labels())
        if not read:
            return None
        namespace = found_labels or {}
    return mesh_drain(pods, namespace)


def _drain_policies(
    snapshot: Snapshot, policies: Sequence[MeshPolicy], calls: KubernetesCalls
) -> DrainStatus | None:
    """Off the mesh: keep the owned policies while a cluster pod is enrolled, else delete them.

    Reads nothing but the owned policies in our namespace unless there are some (and not those
    when the leader's memory says none is owned and no check is due); deletes nothing unless
    every read of this hook succeeded and showed no enrolled pod. Returns what is kept, if any.
    """
    read, found = calls.run(lambda backend: backend.local_policies(), crd_missing_ok=True)
    listed: list[dict[str, Any]] = found or []
    if not read or not listed:
        return None  # the steady state off the mesh: nothing owned, nothing else to read
    drain = _read_drain(snapshot, calls)
    if drain is None:
        return None
    if drain.done:
        logger.info("no pod of the cluster is on the mesh: deleting the internal policies")
        calls.run(
            lambda backend: backend.reconcile_policies([], listed=listed), crd_missing_ok=True
        )
        return None
    logger.info(
        "off the mesh, but %d cluster pods are still enrolled (%s): keeping the internal policies",
        len(drain.enrolled),
        shorten(", ".join(drain.enrolled), 500),
    )
    kept = len(listed)
    if calls.run(lambda backend: backend.reconcile_policies(policies, listed=listed))[0]:
        kept = len(policies)
    return DrainStatus(
        policies=kept, pods=len(drain.enrolled), namespace_enrolled=drain.namespace_enrolled
    )


def _adopt_legacy_labels(backend: KubernetesBackend) -> bool:
    return isinstance(backend, LegacyMigration) and backend.adopt_legacy_labels()


def _legacy_policy_names(backend: KubernetesBackend) -> list[str]:
    return backend.legacy_policy_names() if isinstance(backend, LegacyMigration) else []


def _delete_legacy_policies(backend: KubernetesBackend) -> list[str]:
    return backend.delete_legacy_policies() if isinstance(backend, LegacyMigration) else []


def _finish_migration(
    snapshot: Snapshot, calls: KubernetesCalls, outcome: Outcome, *, in_place: bool
) -> bool:
    """Delete coordinated-workers' policies when that opens no deny window; True when done.

    On the mesh: once ours are in place. Off it: once no pod of the cluster is enrolled (the
    drain rule, checked only when there are old policies). Without Istio's CRD there are none.
    """
    if any(f.kind is KubernetesFailureKind.crd_missing for f in outcome.kubernetes):
        return True  # nothing of the kind is served, so no old policy exists
    if not in_place:
        return False
    if not snapshot.mesh.active:
        read, names = calls.run(_legacy_policy_names, crd_missing_ok=True)
        if not read:
            return False
        if not names:
            return True
        drain = _read_drain(snapshot, calls)
        if drain is None or not drain.done:
            logger.info("keeping coordinated-workers' policies while cluster pods are enrolled")
            return False
    # Ours allow what the old ones did (or nothing is enrolled): no deny window.
    return calls.run(_delete_legacy_policies, crd_missing_ok=True)[0]


def apply_leader(
    charm: ops.CharmBase,
    mesh: ServiceMeshConsumer,
    snapshot: Snapshot,
    decision: Decision,
    *,
    calls: KubernetesCalls,
    outcome: Outcome,
    migrate: bool = False,
    memory: DatabagMemory | None = None,
) -> None:
    """Labels, cluster-internal policies, and every application databag (leader only).

    With ``migrate``, it first takes over the label memory ``coordinated-workers`` left, and
    deletes that package's policies only once ours are in place (or, off the mesh, once none is
    kept for enrolled pods): :mod:`coordinated_mesh.k8s.migration`.
    """
    endpoints = snapshot.endpoints
    adopted = migrate and calls.run(_adopt_legacy_labels)[0]
    cluster = charm.model.relations.get(endpoints.cluster, ())
    held: dict[int, CoordinatorAppData] | None = None
    if snapshot.mesh.active:
        in_place = _join_mesh(snapshot, decision, calls)
        if not in_place:  # read what the workers were told only now: never in the steady state
            # Per relation: a worker application that joined since has nothing published, and
            # gets no other relation's mesh labels (its pods would enrol without policies).
            published = read_published_labels(list(cluster), charm.app)
            app = snapshot.identity.app_name
            held = {r.id: decision.held_app_data(published.get(r.id), app) for r in cluster}
    else:
        # Leaving the mesh: labels first (what makes pods leave), then the policies, which stay
        # while pods are still enrolled.
        calls.run(lambda backend: backend.reconcile_labels(decision.labels))
        outcome.draining = _drain_policies(snapshot, decision.cluster_policies, calls)
        in_place = outcome.draining is None and not outcome.kubernetes
    if adopted:
        outcome.migrated = _finish_migration(snapshot, calls, outcome, in_place=in_place)
    if mesh.publish_policies(memory):
        logger.info("published the external policies on %s", endpoints.mesh)
    mesh.publish_cmr_data(memory)
    publish_loki_metadata(
        charm.model, charm_name=snapshot.charm_name, endpoint=endpoints.logging, memory=memory
    )
    for endpoint, protocols in decision.tracing_protocols.items():
        request_tracing_protocols(charm.model, endpoint, protocols, memory)
    for relation in cluster:
        app_data = decision.app_data if held is None else held[relation.id]
        if app_data.write(relation.data[charm.app], memory):
            logger.info("updated the %s databag of relation %d", relation.name, relation.id)
