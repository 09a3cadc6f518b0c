"""The cluster-internal mesh policies of a coordinated-worker cluster, and its labels (pure).

Every cluster pod carries ``app.kubernetes.io/part-of: <coordinator>``; the coordinator may reach
every cluster pod, each worker application every cluster pod and the coordinator's Service:
``1 + 2n`` policies for ``n`` worker applications, whatever their scale. :func:`pod_labels` and
:func:`held_labels` decide the labels while on, joining and failing to join the mesh
(``docs/explanation/joining-and-leaving-the-mesh.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from coordinated_mesh.mesh.policies import MeshPolicy, PolicyTargetType
from coordinated_mesh.parse import safe_label_value

__all__ = [
    "PART_OF_LABEL",
    "build_cluster_policies",
    "cluster_member_labels",
    "held_labels",
    "pod_labels",
]

PART_OF_LABEL = "app.kubernetes.io/part-of"
"""The label every pod of the cluster carries; its value is the coordinator's application name."""


def cluster_member_labels(coordinator_app: str) -> dict[str, str]:
    """The labels that make a pod a member of the cluster led by ``coordinator_app``.

    The value is the application name, shortened deterministically if it is not a valid label
    value (:func:`~coordinated_mesh.parse.safe_label_value`).
    """
    return {PART_OF_LABEL: safe_label_value(coordinator_app)}


def pod_labels(app_name: str, mesh_labels: Mapping[str, str] | None) -> dict[str, str]:
    """The labels every cluster pod carries: membership, plus the beacon's labels when meshed.

    ``mesh_labels`` is ``None`` (or empty) when the cluster is not on the mesh. The membership
    label wins over a beacon label of the same key.
    """
    labels = dict(sorted((mesh_labels or {}).items()))
    labels.update(cluster_member_labels(app_name))
    return dict(sorted(labels.items()))


def held_labels(applied: Mapping[str, str] | None, app_name: str) -> dict[str, str]:
    """The labels to apply while the mesh is wanted but its policies could not be applied.

    No pod may join the mesh before its policies exist, and none should leave it (a rolling
    restart) because of a failure that may be transient: so the labels applied (or published)
    before are kept as they are, mesh labels included, and only the cluster membership label is
    made sure of (Juju may have reset the StatefulSet; a first hook has applied nothing).

    Args:
        applied: what was applied (or published to the workers) before; ``None`` if nothing.
        app_name: the coordinator's application name.
    """
    labels = dict(applied or {})
    labels.update(cluster_member_labels(app_name))
    return dict(sorted(labels.items()))


def build_cluster_policies(
    *, coordinator_app: str, namespace: str, worker_apps: Iterable[str]
) -> list[MeshPolicy]:
    """The cluster-internal policies for a coordinator and its worker applications.

    Args:
        coordinator_app: the coordinator's application name.
        namespace: the Juju model (Kubernetes namespace) the whole cluster lives in.
        worker_apps: the worker applications currently related over the cluster relation; order
            and duplicates do not matter, and the coordinator itself is ignored if listed.

    Returns:
        ``1 + 2 * len(workers)`` policies, sorted by :meth:`MeshPolicy.sort_key`.
    """
    selector = cluster_member_labels(coordinator_app)
    workers = sorted(set(worker_apps) - {coordinator_app})
    policies = [
        MeshPolicy(
            source_namespace=namespace,
            source_app_name=source,
            target_namespace=namespace,
            target_selector_labels=dict(selector),
            target_type=PolicyTargetType.unit,
        )
        for source in [coordinator_app, *workers]
    ]
    policies.extend(
        MeshPolicy(
            source_namespace=namespace,
            source_app_name=worker,
            target_namespace=namespace,
            target_app_name=coordinator_app,
            target_type=PolicyTargetType.app,
        )
        for worker in workers
    )
    return sorted(policies, key=MeshPolicy.sort_key)
