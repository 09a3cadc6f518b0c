"""What the coordinator does in Kubernetes, behind one narrow seam.

:class:`KubernetesBackend` is everything the :class:`~coordinated_mesh.coordinator.Coordinator`
reads and writes in Kubernetes: its own pod labels, its cluster-internal policies, and (only while
leaving the mesh) its cluster's pods and namespace. :class:`LightkubeBackend` is the real one, on
:mod:`~coordinated_mesh.k8s.labels` and :mod:`~coordinated_mesh.k8s.policy_manager`; ``ops.testing``
tests replace :func:`make_kubernetes_backend` with an in-memory fake. Every method raises only
:class:`~coordinated_mesh.k8s.client.KubernetesError` (and subclasses) on failure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from coordinated_mesh.k8s.client import AppClient, ClientFactory, api_errors
from coordinated_mesh.k8s.labels import AppLabels, LabelCache
from coordinated_mesh.k8s.policy_manager import PolicyCache
from coordinated_mesh.mesh.drain import ClusterPod
from coordinated_mesh.mesh.policies import MeshPolicy

__all__ = ["KubernetesBackend", "LegacyMigration", "LightkubeBackend", "make_kubernetes_backend"]

logger = logging.getLogger(__name__)


class KubernetesBackend(Protocol):
    """What the coordinator does in Kubernetes: its own labels and its cluster-internal policies.

    Every method raises :class:`~coordinated_mesh.k8s.client.KubernetesError` (or a subclass) and
    nothing else on failure. Tests replace it with a fake; production uses :class:`LightkubeBackend`.
    Everything happens in the model's namespace, where the cluster-internal policies live: so
    the rights of a namespace-scoped role suffice to manage and delete them.
    """

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        """Make ``labels`` the labels we manage on our StatefulSet and Service; True if it wrote."""
        ...

    def managed_labels(self) -> dict[str, str]:
        """The labels we last applied (what Kubernetes holds)."""
        ...

    def reconcile_policies(
        self, policies: Sequence[MeshPolicy], *, listed: Sequence[Mapping[str, Any]] | None = None
    ) -> bool:
        """Make the owned cluster-internal policies exactly ``policies``; True if it wrote.

        ``listed``: what :meth:`local_policies` returned earlier in this hook. When it already
        matches ``policies``, nothing is read or written again. Without ``listed``, the leader's
        memory may say they are in place (then nothing is read, unless a check is due).
        """
        ...

    def local_policies(self) -> list[dict[str, Any]]:
        """The owned policy objects in our namespace (one list); ``[]`` without Istio's CRD.

        ``[]`` without a read when the leader's memory says none are owned and no check is due.
        """
        ...

    def cluster_pods(self, selector: Mapping[str, str]) -> list[ClusterPod]:
        """The pods in our namespace carrying every label of ``selector`` (one list)."""
        ...

    def namespace_labels(self) -> dict[str, str]:
        """The labels of our namespace (one read of the cluster-scoped Namespace object)."""
        ...

    def delete_policies(self) -> bool:
        """Delete every owned cluster-internal policy in our namespace; True if it deleted any."""
        ...

    def owned_policies(self) -> list[dict[str, Any]]:
        """The owned policy objects in our namespace, as they are in Kubernetes."""
        ...

    def delete_label_memory(self) -> bool:
        """Forget the labels applied (on the application's removal); whether there was a memory."""
        ...


@runtime_checkable
class LegacyMigration(Protocol):
    """What a backend does to take over from ``coordinated-workers`` (optional; leader only).

    A backend without these methods (an older test fake) skips the migration. Both raise only
    :class:`~coordinated_mesh.k8s.client.KubernetesError`; see :mod:`coordinated_mesh.k8s.migration`.
    """

    def adopt_legacy_labels(self) -> bool:
        """Make the labels the old package applied ours to manage; True if it wrote."""
        ...

    def legacy_policy_names(self) -> list[str]:
        """The names of the old package's cluster-internal policies (never ours), sorted."""
        ...

    def delete_legacy_policies(self) -> list[str]:
        """Delete the old package's cluster-internal policies (never ours); their names."""
        ...


class LightkubeBackend:
    """:class:`KubernetesBackend` on a lightkube client, the label helpers and the policy manager.

    The client is created on first use (:class:`~coordinated_mesh.k8s.client.AppClient`), so
    units that never touch Kubernetes never import lightkube's models. ``label_cache`` and
    ``policy_cache`` are the leader's memories of what it applied (``charm.memory``): with them a
    steady-state hook reads the StatefulSet and, on ``update-status``, one more object.
    """

    def __init__(
        self,
        *,
        app_name: str,
        namespace: str,
        client_factory: ClientFactory | None,
        label_cache: LabelCache | None = None,
        policy_cache: PolicyCache | None = None,
    ):
        self._client = AppClient(app_name=app_name, namespace=namespace, factory=client_factory)
        self._label_cache = label_cache
        self._policy_cache = policy_cache

    def _manager(self, *, cached: bool = True):
        from coordinated_mesh.k8s.policy_manager import PolicyResourceManager

        client = self._client
        return PolicyResourceManager(
            client.get(),
            app_name=client.app_name,
            namespace=client.namespace,
            logger=logger,
            cache=self._policy_cache if cached else None,
        )

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:  # noqa: D102
        return AppLabels(self._client, self._label_cache).reconcile_labels(labels)

    def managed_labels(self) -> dict[str, str]:  # noqa: D102
        return AppLabels(self._client).managed_labels()

    def reconcile_policies(  # noqa: D102
        self, policies: Sequence[MeshPolicy], *, listed: Sequence[Mapping[str, Any]] | None = None
    ) -> bool:
        return self._manager().reconcile(policies, listed=listed).changed

    def local_policies(self) -> list[dict[str, Any]]:  # noqa: D102
        return self._manager().list_local()

    def cluster_pods(self, selector: Mapping[str, str]) -> list[ClusterPod]:  # noqa: D102
        from lightkube.resources.core_v1 import Pod

        client = self._client
        pods: list[ClusterPod] = []
        with api_errors(app_name=client.app_name):
            for pod in client.get().list(Pod, namespace=client.namespace, labels=dict(selector)):
                metadata, status = pod.metadata, pod.status
                pods.append(
                    ClusterPod(
                        name=(metadata.name if metadata else None) or "",
                        labels=dict((metadata.labels if metadata else None) or {}),
                        phase=status.phase if status else None,
                    )
                )
        return sorted(pods, key=lambda pod: pod.name)

    def namespace_labels(self) -> dict[str, str]:  # noqa: D102
        from lightkube.resources.core_v1 import Namespace

        client = self._client
        with api_errors(app_name=client.app_name):
            metadata = client.get().get(Namespace, client.namespace).metadata
        return dict((metadata.labels if metadata else None) or {})

    def delete_policies(self) -> bool:  # noqa: D102
        return self._manager().delete_all([self._client.namespace]).changed

    def owned_policies(self) -> list[dict[str, Any]]:  # noqa: D102
        return self._manager(cached=False).list_owned([self._client.namespace])

    def delete_label_memory(self) -> bool:  # noqa: D102
        return AppLabels(self._client).delete_label_memory()

    def adopt_legacy_labels(self) -> bool:  # noqa: D102
        from coordinated_mesh.k8s.labels import managed_charm_labels
        from coordinated_mesh.k8s.migration import adopt_legacy_label_memory

        client = self._client
        wrote = adopt_legacy_label_memory(
            client.get(), app_name=client.app_name, namespace=client.namespace
        )
        if wrote and self._label_cache is not None:
            # Our memory now holds what the old package applied: the cached copy is stale.
            self._label_cache.remember(
                managed_charm_labels(
                    client.get(), app_name=client.app_name, namespace=client.namespace
                )
            )
        return wrote

    def legacy_policy_names(self) -> list[str]:  # noqa: D102
        from coordinated_mesh.k8s.migration import legacy_policies

        client = self._client
        found = legacy_policies(client.get(), app_name=client.app_name, namespace=client.namespace)
        return [str(obj["metadata"]["name"]) for obj in found]

    def delete_legacy_policies(self) -> list[str]:  # noqa: D102
        from coordinated_mesh.k8s.migration import delete_legacy_policies

        client = self._client
        return delete_legacy_policies(
            client.get(), app_name=client.app_name, namespace=client.namespace
        )


def make_kubernetes_backend(
    *,
    app_name: str,
    namespace: str,
    client_factory: ClientFactory | None = None,
    label_cache: LabelCache | None = None,
    policy_cache: PolicyCache | None = None,
) -> KubernetesBackend:
    """The production backend (the seam plain ``ops.testing`` tests replace with a fake).

    ``label_cache``, ``policy_cache``: the leader's memories of its labels and policies (see
    :class:`~coordinated_mesh.k8s.labels.LabelCache`,
    :class:`~coordinated_mesh.k8s.policy_manager.PolicyCache`).
    """
    return LightkubeBackend(
        app_name=app_name,
        namespace=namespace,
        client_factory=client_factory,
        label_cache=label_cache,
        policy_cache=policy_cache,
    )
