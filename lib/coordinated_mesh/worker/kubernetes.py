"""What the worker does in Kubernetes, behind one narrow seam: its own pod labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from coordinated_mesh.k8s.client import AppClient, ClientFactory
from coordinated_mesh.k8s.labels import AppLabels, LabelCache

__all__ = ["LabelsBackend", "make_labels_backend"]


class LabelsBackend(Protocol):
    """The worker's labels in Kubernetes. Methods raise only ``KubernetesError`` (and subclasses)."""

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        """Make ``labels`` the labels managed on our StatefulSet and Service; True if it wrote."""
        ...

    def managed_labels(self) -> dict[str, str]:
        """The labels applied last (``{}`` when none)."""
        ...


def make_labels_backend(
    *,
    app_name: str,
    namespace: str,
    client_factory: ClientFactory | None = None,
    label_cache: LabelCache | None = None,
) -> LabelsBackend:
    """The production backend: :class:`~coordinated_mesh.k8s.labels.AppLabels` on a lazy client.

    ``label_cache``: the leader's copy of its label memory (see ``k8s.labels.LabelCache``).
    """
    client = AppClient(app_name=app_name, namespace=namespace, factory=client_factory)
    return AppLabels(client, label_cache)
