"""What the worker does in Kubernetes, behind one narrow seam: its own pod labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from coordinated_mesh.k8s.client import AppClient, ClientFactory
from coordinated_mesh.k8s.labels import AppLabels

__all__ = ["LabelsBackend", "LegacyLabels", "WorkerLabels", "make_labels_backend"]


class LabelsBackend(Protocol):
    """The worker's labels in Kubernetes. Methods raise only ``KubernetesError`` (and subclasses)."""

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        """Make ``labels`` the labels managed on our StatefulSet and Service; True if it wrote."""
        ...

    def managed_labels(self) -> dict[str, str]:
        """The labels applied last (``{}`` when none)."""
        ...


@runtime_checkable
class LegacyLabels(Protocol):
    """Taking over the label memory ``coordinated-workers`` left (optional; leader only).

    A backend without it (an older test fake) skips the take-over; see
    :mod:`coordinated_mesh.k8s.migration`.
    """

    def adopt_legacy_labels(self) -> bool:
        """Make the labels the old package applied ours to manage; True if it wrote."""
        ...


class WorkerLabels(AppLabels):
    """:class:`~coordinated_mesh.k8s.labels.AppLabels` that can also take over the old memory."""

    def __init__(self, client: AppClient):
        super().__init__(client)
        self._app_client = client

    def adopt_legacy_labels(self) -> bool:  # noqa: D102
        from coordinated_mesh.k8s.migration import adopt_legacy_label_memory

        client = self._app_client
        return adopt_legacy_label_memory(
            client.get(), app_name=client.app_name, namespace=client.namespace, worker=True
        )


def make_labels_backend(
    *, app_name: str, namespace: str, client_factory: ClientFactory | None = None
) -> LabelsBackend:
    """The production backend: :class:`WorkerLabels` on a lazy client."""
    return WorkerLabels(AppClient(app_name=app_name, namespace=namespace, factory=client_factory))
