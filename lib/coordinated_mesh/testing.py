"""Test helpers for charms built on this library: ``ops.testing`` without a cluster.

:class:`FakeKubernetes` stands in for a coordinator's Kubernetes (``kubernetes_backend_factory``),
:class:`FakeLabels` for a worker's (``labels_backend_factory``); both write only differences, as
the real backends do, and record every write. :func:`worker_unit_data`, :func:`worker_app_data`
and :func:`coordinator_app_data` build valid ``cluster`` databags for ``testing.Relation``; the
errors a fake raises to act like Kubernetes (``ForbiddenError``, ``CRDMissingError``) and the
pods it lists (``ClusterPod``) are re-exported.
Example: ``docs/how-to/test-your-charms.md``. Nothing in the library imports this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from coordinated_mesh.k8s.client import CRDMissingError, ForbiddenError, KubernetesError
from coordinated_mesh.mesh.drain import ClusterPod
from coordinated_mesh.mesh.policies import MeshPolicy
from coordinated_mesh.parse import unit_fqdn
from coordinated_mesh.relations.cluster import (
    DEFAULT_ROLE,
    CoordinatorAppData,
    JujuTopology,
    MetricsEndpoint,
    ProxiedTelemetry,
    WorkerAppData,
    WorkerUnitData,
)

__all__ = [
    "CRDMissingError",
    "ClusterPod",
    "FakeKubernetes",
    "FakeLabels",
    "ForbiddenError",
    "coordinator_app_data",
    "worker_app_data",
    "worker_unit_data",
]


@dataclasses.dataclass
class FakeLabels:
    """A worker's labels in Kubernetes (a ``worker.kubernetes.LabelsBackend``), in memory.

    Like :func:`~coordinated_mesh.k8s.labels.reconcile_charm_labels`: a reconcile writes only when
    the labels differ (``writes`` records each written set); ``error`` is raised by every call
    (for example ``ForbiddenError`` for an untrusted application). ``reads`` counts the calls.
    ``legacy_labels``: the label memory ``coordinated-workers`` left (``None``: none).
    """

    labels: dict[str, str] = dataclasses.field(default_factory=dict[str, str])
    writes: list[dict[str, str]] = dataclasses.field(default_factory=list[dict[str, str]])
    reads: int = 0
    error: Exception | None = None
    legacy_labels: dict[str, str] | None = None
    memory_deleted: bool = False

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        """Make ``labels`` the managed labels; True if they changed."""
        self.reads += 1
        if self.error is not None:
            raise self.error
        if dict(labels) == self.labels:
            return False
        self.labels = dict(labels)
        self.writes.append(dict(labels))
        return True

    def managed_labels(self) -> dict[str, str]:
        """The labels applied last."""
        self.reads += 1
        if self.error is not None:
            raise self.error
        return dict(self.labels)

    def delete_label_memory(self) -> bool:
        """Forget the labels applied (the application is removed); True (``memory_deleted``)."""
        if self.error is not None:
            raise self.error
        self.memory_deleted = True
        return True

    def adopt_legacy_labels(self) -> bool:
        """Take over the label memory of ``coordinated-workers``; True if there was one."""
        self.reads += 1
        if self.error is not None:
            raise self.error
        if self.legacy_labels is None:
            return False
        # Its labels are on the objects already: from now on they are ours to reconcile.
        self.labels = {**self.legacy_labels, **self.labels}
        self.legacy_labels = None
        return True


@dataclasses.dataclass
class FakeKubernetes:
    """A coordinator's Kubernetes (a ``coordinator.kubernetes.KubernetesBackend``), in memory.

    Holds the managed labels (``labels``: applied and remembered), the owned policies (by
    policy, as wire dicts), the namespace's pods and labels, and what ``coordinated-workers``
    left (``legacy_labels``: its label memory, ``None`` when there is none; ``legacy_policies``:
    the names of its policies). Writes happen only on a difference and are recorded in order in
    ``writes``; every call is recorded in ``calls``. Failures: ``fail_with`` (every call, like a
    missing trust), ``policies_fail_with`` (policy calls, like a missing CRD), ``fail_on`` (by
    call name).
    """

    labels: dict[str, str] = dataclasses.field(default_factory=dict[str, str])
    policies: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=dict[str, dict[str, Any]]
    )
    pods: list[ClusterPod] = dataclasses.field(default_factory=list[ClusterPod])
    """Every pod of the namespace (``cluster_pods`` filters them by label)."""
    namespace_labels_: dict[str, str] = dataclasses.field(default_factory=dict[str, str])
    """The labels of the model's namespace."""
    legacy_labels: dict[str, str] | None = None
    legacy_policies: list[str] = dataclasses.field(default_factory=list[str])
    writes: list[str] = dataclasses.field(default_factory=list[str])
    calls: list[str] = dataclasses.field(default_factory=list[str])
    fail_with: KubernetesError | None = None
    policies_fail_with: KubernetesError | None = None
    fail_on: dict[str, KubernetesError] = dataclasses.field(
        default_factory=dict[str, KubernetesError]
    )

    def _call(self, name: str, *, policies: bool = False) -> None:
        self.calls.append(name)
        if self.fail_with is not None:
            raise self.fail_with
        if policies and self.policies_fail_with is not None:
            raise self.policies_fail_with
        if name in self.fail_on:
            raise self.fail_on[name]

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        """Make ``labels`` the managed labels; True if it wrote."""
        self._call("reconcile_labels")
        if dict(labels) == self.labels:
            return False
        self.labels = dict(labels)
        self.writes.append("labels")
        return True

    def managed_labels(self) -> dict[str, str]:
        """The labels applied last."""
        self._call("managed_labels")
        return dict(self.labels)

    def reconcile_policies(
        self, policies: Sequence[MeshPolicy], *, listed: Sequence[Mapping[str, Any]] | None = None
    ) -> bool:
        """Make the owned policies exactly ``policies``; True if it wrote."""
        self._call("reconcile_policies", policies=True)
        wanted = {p.sort_key(): p.to_wire() for p in policies}
        if wanted == self.policies:
            return False
        self.policies = wanted
        self.writes.append("policies")
        return True

    def local_policies(self) -> list[dict[str, Any]]:
        """The owned policies."""
        self._call("local_policies", policies=True)
        return self.policy_wires()

    def cluster_pods(self, selector: Mapping[str, str]) -> list[ClusterPod]:
        """The pods carrying every label of ``selector``."""
        self._call("cluster_pods")
        return [pod for pod in self.pods if selector.items() <= pod.labels.items()]

    def namespace_labels(self) -> dict[str, str]:
        """The namespace's labels."""
        self._call("namespace_labels")
        return dict(self.namespace_labels_)

    def delete_policies(self) -> bool:
        """Delete every owned policy; True if there were some."""
        self._call("delete_policies", policies=True)
        if not self.policies:
            return False
        self.policies = {}
        self.writes.append("delete")
        return True

    def owned_policies(self) -> list[dict[str, Any]]:
        """The owned policies, sorted."""
        self._call("owned_policies", policies=True)
        return self.policy_wires()

    def delete_label_memory(self) -> bool:
        """Forget the labels applied (the application is removed); always True here."""
        self._call("delete_label_memory")
        self.writes.append("delete_label_memory")
        return True

    def adopt_legacy_labels(self) -> bool:
        """Take over the label memory of ``coordinated-workers``; True if there was one."""
        self._call("adopt_legacy_labels")
        if self.legacy_labels is None:
            return False
        # Its labels are on the objects already: from now on they are ours (``labels``), so the
        # next reconcile keeps the wanted ones and removes the rest, as the real one does.
        self.labels = {**self.legacy_labels, **self.labels}
        self.legacy_labels = None
        self.writes.append("adopt-legacy-labels")
        return True

    def legacy_policy_names(self) -> list[str]:
        """The names of the policies of ``coordinated-workers``, sorted."""
        self._call("legacy_policy_names", policies=True)
        return sorted(self.legacy_policies)

    def delete_legacy_policies(self) -> list[str]:
        """Delete the policies of ``coordinated-workers``; their names."""
        self._call("delete_legacy_policies", policies=True)
        deleted = sorted(self.legacy_policies)
        if deleted:
            self.legacy_policies = []
            self.writes.append("delete-legacy-policies")
        return deleted

    def policy_wires(self) -> list[dict[str, Any]]:
        """The owned policies, sorted (no call recorded)."""
        return [self.policies[k] for k in sorted(self.policies)]


def worker_unit_data(
    app: str,
    unit: int,
    *,
    model: str,
    charm_name: str = "mesh-worker-k8s",
    metrics_port: int | None = 9090,
    metrics_path: str = "/metrics",
    cluster_domain: str = "cluster.local",
) -> dict[str, str]:
    """A worker unit's ``cluster`` databag, as the :class:`~coordinated_mesh.Worker` writes it.

    ``metrics_port=None`` leaves out the metrics endpoint (a worker with nothing to scrape).
    """
    unit_name = f"{app}/{unit}"
    return WorkerUnitData(
        juju_topology=JujuTopology(application=app, unit=unit_name, charm_name=charm_name),
        address=unit_fqdn(unit_name, app_name=app, model_name=model, cluster_domain=cluster_domain),
        metrics_endpoint=None
        if metrics_port is None
        else MetricsEndpoint(port=metrics_port, path=metrics_path),
    ).dump()


def worker_app_data(role: str = DEFAULT_ROLE) -> dict[str, str]:
    """A worker application's ``cluster`` databag (its role)."""
    return WorkerAppData(role=role).dump()


def coordinator_app_data(
    *,
    worker_labels: Mapping[str, str] | None,
    worker_config: str | None = None,
    telemetry: ProxiedTelemetry | None = None,
) -> dict[str, str]:
    """The coordinator's ``cluster`` application databag, as its leader writes it.

    Args:
        worker_labels: the labels every worker pod must carry (``None``: not decided yet).
        worker_config: the workload configuration text.
        telemetry: the proxied telemetry URLs (none when ``None``).

    Raises:
        DatabagError: an invalid value (for example a label Kubernetes would reject).
    """
    from coordinated_mesh.relations.databag import DatabagError

    try:
        data = CoordinatorAppData.compose(
            worker_labels=worker_labels,
            worker_config=worker_config,
            telemetry=telemetry or ProxiedTelemetry(),
        )
    except ValueError as e:
        raise DatabagError(str(e)) from None
    return data.dump()
