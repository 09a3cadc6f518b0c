"""Leaving the mesh without a deny window: which cluster pods Istio still captures (pure).

Pods keep their enrolment until they are re-created without the mesh labels, and every pod of a
namespace labelled for the mesh stays enrolled whatever its own labels, so the coordinator keeps
its cluster-internal policies while :func:`mesh_drain` finds an enrolled pod. The rule and its
sources: ``docs/explanation/joining-and-leaving-the-mesh.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

__all__ = [
    "AMBIENT",
    "DATAPLANE_MODE_LABEL",
    "OPTED_OUT",
    "ClusterPod",
    "MeshDrain",
    "in_ambient_mesh",
    "mesh_drain",
    "namespace_decides",
]

DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
"""The label, on a pod or on its namespace, that enrols pods in Istio's ambient mesh."""
AMBIENT = "ambient"
"""The :data:`DATAPLANE_MODE_LABEL` value that enrols (on the pod, or on its namespace)."""
OPTED_OUT = "none"
"""The :data:`DATAPLANE_MODE_LABEL` value on a pod that keeps it out of an enrolled namespace."""

_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclasses.dataclass(frozen=True)
class ClusterPod:
    """A pod of the cluster (any pod carrying the membership label), as Kubernetes lists it."""

    name: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict[str, str])
    phase: str | None = None
    """``status.phase`` (``Running``, ``Pending``, ...), ``None`` when not reported."""

    @property
    def live(self) -> bool:
        """Whether the pod may still send or receive traffic (it has not terminated for good)."""
        return self.phase not in _TERMINAL_PHASES


def in_ambient_mesh(pod_labels: Mapping[str, str], namespace_labels: Mapping[str, str]) -> bool:
    """Whether Istio captures a pod's traffic in the ambient mesh, by Istio's labelling rule.

    A pod is enrolled when it is labelled ``istio.io/dataplane-mode=ambient``, or when its
    namespace is and the pod has not opted out with ``istio.io/dataplane-mode=none``.
    """
    mode = pod_labels.get(DATAPLANE_MODE_LABEL)
    if mode == AMBIENT:
        return True
    return mode != OPTED_OUT and namespace_labels.get(DATAPLANE_MODE_LABEL) == AMBIENT


def namespace_decides(pods: Iterable[ClusterPod]) -> bool:
    """Whether the namespace's labels are needed to tell if any of ``pods`` is enrolled.

    Not when every live pod settles it with its own label (``ambient`` or ``none``), nor when
    there is no live pod: then the coordinator does not read the namespace.
    """
    return any(
        pod.live and pod.labels.get(DATAPLANE_MODE_LABEL) not in (AMBIENT, OPTED_OUT)
        for pod in pods
    )


@dataclasses.dataclass(frozen=True)
class MeshDrain:
    """Off the mesh: which pods of the cluster are still enrolled in it."""

    enrolled: tuple[str, ...] = ()
    """The names of the live cluster pods Istio still captures, sorted."""
    namespace_enrolled: bool = False
    """Whether the namespace itself is labelled for the ambient mesh (the beacon's
    ``model-on-mesh``): its pods stay enrolled until that label goes or they opt out."""

    @property
    def done(self) -> bool:
        """Whether no cluster pod is enrolled any more: the internal policies may go."""
        return not self.enrolled


def mesh_drain(
    pods: Iterable[ClusterPod], namespace_labels: Mapping[str, str] | None = None
) -> MeshDrain:
    """Which live ``pods`` are still enrolled in the ambient mesh (see :func:`in_ambient_mesh`).

    Args:
        pods: the cluster's pods (selected by the membership label).
        namespace_labels: the labels of their namespace; ``None`` when not read, which is only
            right when :func:`namespace_decides` is false for ``pods``.
    """
    namespace = dict(namespace_labels or {})
    enrolled = sorted(
        pod.name for pod in pods if pod.live and in_ambient_mesh(pod.labels, namespace)
    )
    return MeshDrain(
        enrolled=tuple(enrolled),
        namespace_enrolled=namespace.get(DATAPLANE_MODE_LABEL) == AMBIENT,
    )
