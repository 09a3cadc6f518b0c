"""coordinated_mesh.testing: valid cluster databags, and the migration seen through the fake.

The builders' output is read back by the library's own readers (what a coordinator and a worker
accept); the coordinator's first hook after a refresh from coordinated-workers takes over with
no deny window (the real API server's version: tests/envtest/test_migration.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from coordinated_mesh import ProxiedTelemetry
from coordinated_mesh.k8s.client import KubernetesError
from coordinated_mesh.mesh.cluster_policies import PART_OF_LABEL
from coordinated_mesh.mesh.drain import ClusterPod
from coordinated_mesh.relations.cluster import (
    CoordinatorAppData,
    WorkerAppData,
    WorkerUnitData,
    parse_proxied_telemetry,
)
from coordinated_mesh.relations.databag import DatabagError
from coordinated_mesh.testing import (
    FakeKubernetes,
    coordinator_app_data,
    worker_app_data,
    worker_unit_data,
)
from ops import testing

from tests.support.coordinator import APP, MESH_LABELS, mesh_relation, state, worker_relation

Ctx = testing.Context[Any]


# --- builders -------------------------------------------------------------------------------


def test_worker_unit_data_is_what_the_coordinator_reads():
    data = worker_unit_data("w1", 2, model="prod", metrics_port=8080, metrics_path="/m")
    unit = WorkerUnitData.load(data)
    assert unit.juju_topology.unit == "w1/2"
    assert unit.address == "w1-2.w1-endpoints.prod.svc.cluster.local"
    assert unit.metrics_endpoint is not None
    assert (unit.metrics_endpoint.port, unit.metrics_endpoint.path) == (8080, "/m")
    assert (
        WorkerUnitData.load(
            worker_unit_data("w1", 0, model="m", metrics_port=None)
        ).metrics_endpoint
        is None
    )


def test_worker_unit_data_refuses_what_the_coordinator_would_refuse():
    with pytest.raises(ValueError, match="application"):
        worker_unit_data("W1!", 0, model="m")


def test_worker_app_data_holds_the_role():
    assert WorkerAppData.load(worker_app_data("ingester")).role == "ingester"


def test_coordinator_app_data_is_what_the_worker_reads():
    telemetry = ProxiedTelemetry(
        loki_urls={"loki/0": "http://coord.m.svc.cluster.local:8080/proxy/loki/loki-0/push"},
        remote_write_urls=("http://coord.m.svc.cluster.local:8080/proxy/remote-write/p-0/write",),
    )
    data = coordinator_app_data(
        worker_labels={PART_OF_LABEL: "coord"}, worker_config="global: {}\n", telemetry=telemetry
    )
    loaded = CoordinatorAppData.load(data)
    assert loaded.worker_labels == {PART_OF_LABEL: "coord"}
    assert loaded.worker_config == "global: {}\n"
    parsed, problems = parse_proxied_telemetry(loaded)
    assert problems == []
    assert parsed == telemetry
    # Deterministic: the same input gives the same bytes (sorted JSON keys).
    assert (
        coordinator_app_data(
            worker_labels={PART_OF_LABEL: "coord"},
            worker_config="global: {}\n",
            telemetry=telemetry,
        )
        == data
    )


def test_coordinator_app_data_refuses_a_label_kubernetes_would_refuse():
    with pytest.raises(DatabagError):
        coordinator_app_data(worker_labels={"bad key!": "x"})


# --- the fake and the migration ---------------------------------------------------------------


def test_fake_takes_over_legacy_labels_once():
    fake = FakeKubernetes(labels={PART_OF_LABEL: APP}, legacy_labels={"istio.io/x": "y"})
    assert fake.adopt_legacy_labels()
    assert fake.managed_labels() == {PART_OF_LABEL: APP, "istio.io/x": "y"}
    assert not fake.adopt_legacy_labels()
    assert fake.writes == ["adopt-legacy-labels"]


def _legacy_kube(kube: FakeKubernetes) -> None:
    kube.labels = {PART_OF_LABEL: APP, **MESH_LABELS}
    kube.legacy_labels = {PART_OF_LABEL: APP, **MESH_LABELS}
    kube.legacy_policies = ["coord-old-a", "coord-old-b"]


def test_refresh_on_the_mesh_creates_ours_before_deleting_the_old(ctx: Ctx, kube: FakeKubernetes):
    _legacy_kube(kube)
    out = ctx.run(ctx.on.upgrade_charm(), state(worker_relation("w1"), mesh_relation()))
    assert isinstance(out.unit_status, testing.ActiveStatus), out.unit_status
    assert kube.writes == ["adopt-legacy-labels", "policies", "delete-legacy-policies"]
    assert kube.legacy_policies == [] and kube.legacy_labels is None
    # The unit remembers: the next hook does not look again.
    kube.calls.clear()
    ctx.run(ctx.on.update_status(), out)
    assert not [call for call in kube.calls if "legacy" in call]


def test_refresh_with_failing_policies_keeps_the_old_ones_and_retries(
    ctx: Ctx, kube: FakeKubernetes
):
    _legacy_kube(kube)
    kube.policies_fail_with = KubernetesError("Kubernetes API error 500: boom", status=500)
    out = ctx.run(ctx.on.upgrade_charm(), state(worker_relation("w1"), mesh_relation()))
    assert not isinstance(out.unit_status, testing.ActiveStatus)
    assert kube.legacy_policies == ["coord-old-a", "coord-old-b"]
    kube.policies_fail_with = None
    ctx.run(ctx.on.update_status(), out)
    assert kube.legacy_policies == []
    assert kube.writes[-2:] == ["policies", "delete-legacy-policies"]


def test_refresh_off_the_mesh_keeps_the_old_policies_while_pods_are_enrolled(
    ctx: Ctx, kube: FakeKubernetes
):
    _legacy_kube(kube)
    # Our policies exist (a first hook ran on the mesh) and a pod is still enrolled.
    out = ctx.run(ctx.on.upgrade_charm(), state(worker_relation("w1"), mesh_relation()))
    kube.legacy_policies = ["coord-old-a"]  # as if one had come back: the drain rule decides
    kube.pods = [ClusterPod("w1-0", {PART_OF_LABEL: APP, **MESH_LABELS}, "Running")]
    fresh = state(worker_relation("w1"))  # a new unit's state: it has not looked yet
    kube.calls.clear()
    out = ctx.run(ctx.on.config_changed(), fresh)
    assert kube.legacy_policies == ["coord-old-a"]
    assert "adopt_legacy_labels" in kube.calls
    assert "delete_legacy_policies" not in kube.calls
    kube.pods = []
    ctx.run(ctx.on.update_status(), out)
    assert kube.legacy_policies == []


def test_refresh_off_the_mesh_with_only_old_policies_keeps_them_while_pods_are_enrolled(
    ctx: Ctx, kube: FakeKubernetes
):
    # The mesh relation went away around the refresh: we own no policy, the old package's remain,
    # and a worker pod has not rolled out of the mesh yet.
    _legacy_kube(kube)
    kube.pods = [ClusterPod("w1-0", {PART_OF_LABEL: APP, **MESH_LABELS}, "Running")]
    out = ctx.run(ctx.on.upgrade_charm(), state(worker_relation("w1")))
    assert kube.legacy_policies == ["coord-old-a", "coord-old-b"]  # no deny window for w1-0
    assert kube.labels == {PART_OF_LABEL: APP}  # the stale mesh labels go at once
    kube.pods = [ClusterPod("w1-0", {PART_OF_LABEL: APP}, "Running")]  # rolled
    ctx.run(ctx.on.update_status(), out)
    assert kube.legacy_policies == []


def test_a_non_leader_takes_nothing_over(ctx: Ctx, kube: FakeKubernetes):
    _legacy_kube(kube)
    ctx.run(ctx.on.upgrade_charm(), state(worker_relation("w1"), mesh_relation(), leader=False))
    assert kube.calls == []
    assert kube.legacy_policies == ["coord-old-a", "coord-old-b"]
