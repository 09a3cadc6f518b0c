"""What the worker tells the operator: statuses from what one reconcile observed (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

import ops

from coordinated_mesh.charm.hints import integrate_hint, trust_hint
from coordinated_mesh.parse import Problem, shorten
from coordinated_mesh.relations.cluster import DEFAULT_ROLE

__all__ = ["WorkerObservations", "worker_statuses"]


@dataclass
class WorkerObservations:
    """What one reconcile saw, the input of :func:`worker_statuses`."""

    app_name: str
    endpoint: str = "cluster"
    coordinator: str | None = None
    """The related coordinator application (``None``: not related)."""
    data_problem: str | None = None
    """Why the coordinator's data is not usable (missing or invalid); ``None`` when it is."""
    item_problems: list[Problem] = field(default_factory=list[Problem])
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
            ops.BlockedStatus(f"not allowed to label its pods: run {trust_hint(obs.app_name)}")
        )
    if obs.coordinator is None:
        statuses.append(
            ops.BlockedStatus(
                "relate to a coordinator: "
                + integrate_hint(obs.app_name, obs.endpoint, "<coordinator>", obs.endpoint)
            )
        )
    if obs.role_problem is not None:
        statuses.append(ops.BlockedStatus(shorten(f"invalid role config: {obs.role_problem}")))
    if obs.coordinator is not None and obs.data_problem is not None:
        statuses.append(
            ops.WaitingStatus(
                shorten(
                    f"waiting for {obs.coordinator} on relation {obs.endpoint}: {obs.data_problem}",
                    160,
                )
            )
        )
    statuses.extend(
        ops.WaitingStatus(shorten(f"ignoring invalid data on relation {obs.endpoint}: {p}", 160))
        for p in obs.item_problems
    )
    if obs.kubernetes_error is not None:
        statuses.append(
            ops.WaitingStatus(
                shorten(
                    f"Kubernetes API error, retrying on the next hook: {obs.kubernetes_error}", 160
                )
            )
        )
    if obs.workload_problem is not None:
        statuses.append(ops.WaitingStatus(shorten(obs.workload_problem)))
    summary = f"coordinator: {obs.coordinator or 'none'}, role: {obs.role}"
    statuses.append(ops.ActiveStatus(shorten("; ".join([summary, *obs.notes]), 160)))
    return statuses
