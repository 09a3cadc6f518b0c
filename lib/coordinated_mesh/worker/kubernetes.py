"""What the worker does in Kubernetes, behind one narrow seam: its own pod labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from coordinated_mesh.k8s.client import AppClient, ClientFactory
from coordinated_mesh.k8s.labels import AppLabels, LabelCache

__all__ = ["LabelsBackend", "LegacyLabels", "WorkerLabels", "make_labels_backend"]


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

    def __init__(self, client: AppClient, cache: LabelCache | None = None):
        super().__init__(client, cache)
        self._app_client = client
        self._worker_cache = cache

    def adopt_legacy_labels(self) -> bool:  # noqa: D102
        from coordinated_mesh.k8s.labels import managed_charm_labels
        from coordinated_mesh.k8s.migration import adopt_legacy_label_memory

        client = self._app_client
        wrote = adopt_legacy_label_memory(
            client.get(), app_name=client.app_name, namespace=client.namespace, worker=True
        )
        if wrote and self._worker_cache is not None:
            # Our memory now holds what the old package applied: the cached copy is stale.
            self._worker_cache.remember(
                managed_charm_labels(
                    client.get(), app_name=client.app_name, namespace=client.namespace
                )
            )
        return wrote


def make_labels_backend(
    *,
    app_name: str,
    namespace: str,
    client_factory: ClientFactory | None = None,
    label_cache: LabelCache | None = None,
) -> LabelsBackend:
    """The production backend: :class:`WorkerLabels` on a lazy client.

    ``label_cache``: the leader's copy of its label memory (see ``k8s.labels.LabelCache``).
    """
    client = AppClient(app_name=app_name, namespace=namespace, factory=client_factory)
    return WorkerLabels(client, label_cache)
