"""What the coordinator tells the operator: statuses from what one reconcile observed (pure).

:func:`unit_statuses` turns :class:`Observations` into the statuses to add in ``collect-status``,
most important first; every non-active status names what is wrong and the command that fixes it.
Leaving the mesh is reported in the *active* status (:class:`DrainStatus`); why:
``docs/explanation/joining-and-leaving-the-mesh.md``.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

import ops

from coordinated_mesh.charm.hints import integrate_hint, trust_hint
from coordinated_mesh.parse import Problem, shorten
from coordinated_mesh.relations.endpoints import CoordinatorEndpoints

__all__ = [
    "DrainStatus",
    "KubernetesFailure",
    "KubernetesFailureKind",
    "Observations",
    "active_summary",
    "unit_statuses",
]


class KubernetesFailureKind(enum.Enum):
    """The classes of Kubernetes failure an operator acts on differently."""

    forbidden = "forbidden"
    """HTTP 403: the application is not trusted."""
    crd_missing = "crd-missing"
    """The Istio AuthorizationPolicy CRD is not installed."""
    api_error = "api-error"
    """Any other API failure; usually transient."""


@dataclasses.dataclass(frozen=True)
class KubernetesFailure:
    """A Kubernetes failure met during a reconcile (it was logged; the hook did not fail)."""

    kind: KubernetesFailureKind
    detail: str
    """The error message, for the log and the API-error status."""


@dataclasses.dataclass(frozen=True)
class DrainStatus:
    """Off the mesh, the cluster-internal policies kept because cluster pods are still enrolled."""

    policies: int
    """How many policies are kept."""
    pods: int
    """How many pods of the cluster are still enrolled (at least one)."""
    namespace_enrolled: bool = False
    """Whether the namespace itself is labelled for the mesh (then pods stay enrolled)."""


@dataclasses.dataclass
class Observations:
    """What one reconcile saw and did, the input of :func:`unit_statuses`."""

    app_name: str
    is_leader: bool
    endpoints: CoordinatorEndpoints = dataclasses.field(default_factory=CoordinatorEndpoints)
    """The charm's endpoint names, used in the status texts."""
    worker_apps: int = 0
    worker_units: int = 0
    outdated_worker_apps: tuple[str, ...] = ()
    """Worker applications running an older charm (they publish only unit data)."""
    mesh_related: bool = False
    mesh_ready: bool = False
    mesh_type: str | None = None
    mesh_problem: str | None = None
    """Why the mesh is related but not ready, as the mesh consumer explains it."""
    internal_policies: int | None = None
    """Cluster-internal policies wanted (leader only; ``None`` when not computed)."""
    draining: DrainStatus | None = None
    """Off the mesh, the policies kept for pods still enrolled (leader only; ``None``: none)."""
    kubernetes: list[KubernetesFailure] = dataclasses.field(default_factory=list[KubernetesFailure])
    relations: list[Problem] = dataclasses.field(default_factory=list[Problem])
    workload: list[str] = dataclasses.field(default_factory=list[str])
    """Containers that could not be configured yet (Pebble not ready), by name."""
    proxy: list[str] = dataclasses.field(default_factory=list[str])
    """Problems of the telemetry proxy's own inputs and workload (no DNS resolver, a failed
    reload)."""
    tls_waiting: bool = False
    """The ``certificates`` relation exists and no certificate can be served yet."""
    tls_expiry: datetime | None = None
    """When the served certificate expires (``None``: the proxy serves plain HTTP)."""

    @property
    def mesh_active(self) -> bool:
        """Whether the cluster should be on the mesh now (related and the beacon's data ready)."""
        return self.mesh_related and self.mesh_ready


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def active_summary(obs: Observations) -> str:
    """The one-line summary of a healthy coordinator.

    For example ``2 worker apps (3 units), mesh: istio, 5 internal policies``, or while leaving
    the mesh ``2 worker apps (3 units), mesh removed: keeping 5 internal policies until 3 pods
    leave the mesh``.
    """
    apps = "1 worker app" if obs.worker_apps == 1 else f"{obs.worker_apps} worker apps"
    units = "1 unit" if obs.worker_units == 1 else f"{obs.worker_units} units"
    parts = [f"{apps} ({units})"]
    if obs.mesh_active:
        parts.append(f"mesh: {obs.mesh_type or 'unknown'}")
        if obs.internal_policies is not None:
            noun = "policy" if obs.internal_policies == 1 else "policies"
            parts.append(f"{obs.internal_policies} internal {noun}")
    elif obs.draining is not None:
        drain = obs.draining
        policies = _plural(drain.policies, "internal policy", "internal policies")
        pods = f"{_plural(drain.pods, 'pod')} {'leaves' if drain.pods == 1 else 'leave'}"
        text = f"mesh removed: keeping {policies} until {pods} the mesh"
        if drain.namespace_enrolled:
            text += " (the namespace is labelled istio.io/dataplane-mode=ambient)"
        parts.append(text)
    else:
        parts.append("mesh: none")
    if obs.tls_expiry is not None:
        parts.append(f"TLS until {obs.tls_expiry:%Y-%m-%d}")
    if obs.outdated_worker_apps:
        names = shorten(" ".join(obs.outdated_worker_apps), 60)
        parts.append(f"outdated workers (juju refresh): {names}")
    return ", ".join(parts)


def _kubernetes_status(obs: Observations, problem: KubernetesFailure) -> ops.StatusBase:
    if problem.kind is KubernetesFailureKind.forbidden:
        return ops.BlockedStatus(
            f"not allowed to manage its Kubernetes objects: run {trust_hint(obs.app_name)}"
        )
    if problem.kind is KubernetesFailureKind.crd_missing:
        return ops.BlockedStatus(
            "Istio AuthorizationPolicy CRD missing: deploy istio-k8s (--trust) "
            f"or remove the {obs.endpoints.mesh} relation"
        )
    return ops.WaitingStatus(
        f"Kubernetes API error, retrying on the next hook: {shorten(problem.detail, 80)}"
    )


def unit_statuses(obs: Observations) -> list[ops.StatusBase]:
    """The statuses to add in ``collect-status``, most important first (never empty).

    ops keeps the highest priority (blocked > waiting > active); among equals, the first added.
    """
    statuses: list[ops.StatusBase] = []
    cluster = obs.endpoints.cluster
    seen: set[KubernetesFailureKind] = set()
    for problem in obs.kubernetes:
        if problem.kind not in seen:
            seen.add(problem.kind)
            statuses.append(_kubernetes_status(obs, problem))
    if obs.worker_apps == 0:
        statuses.append(
            ops.BlockedStatus(
                "no workers: run " + integrate_hint(obs.app_name, cluster, "<worker-app>", cluster)
            )
        )
    statuses.extend(
        ops.BlockedStatus(
            shorten(f"invalid data on relation {p.endpoint} ({p.item}): {p.reason}", 160)
        )
        for p in obs.relations
    )
    statuses.extend(ops.BlockedStatus(shorten(f"telemetry proxy: {p}", 160)) for p in obs.proxy)
    if obs.mesh_related and not obs.mesh_ready:
        reason = obs.mesh_problem or "the beacon has not published its labels yet"
        statuses.append(
            ops.WaitingStatus(shorten(f"waiting for {obs.endpoints.mesh}: {reason}", 200))
        )
    if obs.tls_waiting and obs.endpoints.certificates is not None:
        statuses.append(
            ops.WaitingStatus(
                f"waiting for a certificate on {obs.endpoints.certificates} "
                "(serving plain HTTP meanwhile)"
            )
        )
    statuses.extend(ops.WaitingStatus(f"waiting for the {name} container") for name in obs.workload)
    statuses.append(ops.ActiveStatus(active_summary(obs)))
    return statuses
