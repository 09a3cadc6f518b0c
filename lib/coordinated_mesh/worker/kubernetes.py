"""What the worker does in Kubernetes, behind one narrow seam: its own pod labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from coordinated_mesh.k8s.client import AppClient, ClientFactory
from coordinated_mesh.k8s.labels import AppLabels

__all__ = ["LabelsBackend", "make_labels_backend"]


class LabelsBackend(Protocol):
    """The worker's labels in Kubernetes. Methods raise only ``KubernetesError`` (and subclasses)."""

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        """Make ``labels`` the labels managed on our StatefulSet and Service; True if it wrote."""
        ...

    def managed_labels(self) -> dict[str, str]:
        """The labels applied last (``{}`` when none)."""
        ...

    def delete_label_memory(self) -> bool:
        """Forget the labels applied (on the application's removal); whether there was a memory."""
        ...


def make_labels_backend(
    *, app_name: str, namespace: str, client_factory: ClientFactory | None = None
) -> LabelsBackend:
    """The production backend: :class:`~coordinated_mesh.k8s.labels.AppLabels` on a lazy client."""
    return AppLabels(AppClient(app_name=app_name, namespace=namespace, factory=client_factory))
