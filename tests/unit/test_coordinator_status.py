"""Pure parts of the coordinator: statuses from observations, and the plan helpers."""

from __future__ import annotations

import ops
import pytest
from coordinated_mesh.coordinator.decide import default_mesh_policies
from coordinated_mesh.coordinator.status import (
    DrainStatus,
    KubernetesFailure,
    KubernetesFailureKind,
    Observations,
    active_summary,
    unit_statuses,
)
from coordinated_mesh.mesh.cluster_policies import PART_OF_LABEL, held_labels, pod_labels
from coordinated_mesh.mesh.drain import (
    ClusterPod,
    MeshDrain,
    in_ambient_mesh,
    mesh_drain,
    namespace_decides,
)
from coordinated_mesh.mesh.policies import AppPolicy, Method, UnitPolicy
from coordinated_mesh.parse import Problem
from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.pebble import exporter_layer, nginx_layer


def healthy(**kwargs: object) -> Observations:
    obs = Observations(app_name="coord", is_leader=True, worker_apps=2, worker_units=3)
    for key, value in kwargs.items():
        setattr(obs, key, value)
    return obs


def winner(obs: Observations) -> ops.StatusBase:
    """What ops would set: the highest priority, the first added among equals."""
    statuses = unit_statuses(obs)
    return ops.StatusBase._get_highest_priority(statuses)


def test_active_summary_with_mesh():
    obs = healthy(mesh_related=True, mesh_ready=True, mesh_type="istio", internal_policies=5)
    assert winner(obs) == ops.ActiveStatus(
        "2 worker apps (3 units), mesh: istio, 5 internal policies"
    )


def test_active_summary_singular_and_without_mesh():
    obs = healthy(worker_apps=1, worker_units=1)
    assert active_summary(obs) == "1 worker app (1 unit), mesh: none"
    obs = healthy(mesh_related=True, mesh_ready=True, mesh_type="istio", internal_policies=1)
    assert active_summary(obs).endswith("1 internal policy")


def test_no_workers():
    assert winner(healthy(worker_apps=0, worker_units=0)) == ops.BlockedStatus(
        "no workers: run juju integrate coord:cluster <worker-app>:cluster"
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            KubernetesFailureKind.forbidden,
            ops.BlockedStatus(
                "not allowed to manage its Kubernetes objects: run juju trust coord --scope=cluster"
            ),
        ),
        (
            KubernetesFailureKind.crd_missing,
            ops.BlockedStatus(
                "Istio AuthorizationPolicy CRD missing: deploy istio-k8s (--trust) "
                "or remove the service-mesh relation"
            ),
        ),
        (
            KubernetesFailureKind.api_error,
            ops.WaitingStatus("Kubernetes API error, retrying on the next hook: boom"),
        ),
    ],
)
def test_kubernetes_problems(kind: KubernetesFailureKind, expected: ops.StatusBase):
    assert winner(healthy(kubernetes=[KubernetesFailure(kind, "boom")])) == expected


def test_trust_comes_before_everything_else():
    obs = healthy(
        worker_apps=0,
        kubernetes=[KubernetesFailure(KubernetesFailureKind.forbidden, "403")],
        relations=[Problem("logging", "loki/0", "bad url")],
    )
    assert "juju trust" in winner(obs).message


def test_relation_problem_names_relation_and_item_and_is_one_line():
    problem = Problem("logging", "loki/1", "bad\nurl " + "x" * 300)
    status = winner(healthy(relations=[problem]))
    assert status.name == "blocked"
    assert status.message.startswith("invalid data on relation logging (loki/1): bad url")
    assert "\n" not in status.message
    assert len(status.message) <= 160


def test_mesh_not_ready_waits_with_the_reason():
    obs = healthy(mesh_related=True, mesh_problem="waiting for beacon to publish the labels")
    assert winner(obs) == ops.WaitingStatus(
        "waiting for service-mesh: waiting for beacon to publish the labels"
    )


def test_blocked_beats_waiting():
    obs = healthy(mesh_related=True, relations=[Problem("cluster", "w/0", "bad")])
    assert winner(obs).name == "blocked"


def test_containers_not_ready():
    assert winner(healthy(workload=["nginx"])) == ops.WaitingStatus(
        "waiting for the nginx container"
    )


def test_default_mesh_policies():
    policies = default_mesh_policies(
        WorkerTelemetryProxyConfig(http_port=8080, https_port=8443), metrics_endpoint="metrics"
    )
    unit, app = policies
    assert unit == UnitPolicy(relation="metrics", ports=[9113])
    assert isinstance(app, AppPolicy)
    (endpoint,) = app.endpoints
    assert endpoint.ports == [8080, 8443]  # where the scrape jobs point, without and with TLS
    assert endpoint.methods == [Method.get]
    assert endpoint.paths == ["/proxy/worker/{*}/metrics"]


def test_pod_labels():
    assert pod_labels("coord", None) == {PART_OF_LABEL: "coord"}
    mesh = {"istio.io/dataplane-mode": "ambient", PART_OF_LABEL: "someone-else"}
    assert pod_labels("coord", mesh) == {
        PART_OF_LABEL: "coord",
        "istio.io/dataplane-mode": "ambient",
    }


def test_layers():
    exporter = ops.pebble.Layer(exporter_layer(8081)).services["nginx-prometheus-exporter"]
    assert exporter.command == (
        "nginx-prometheus-exporter --web.listen-address=:9113 "
        "--nginx.scrape-uri=http://127.0.0.1:8081/status"
    )
    nginx = ops.pebble.Layer(nginx_layer()).services["nginx"]
    assert nginx.command == "nginx -c /etc/nginx/nginx.conf -g 'daemon off;'"
    assert nginx.startup == "enabled"


MODE = "istio.io/dataplane-mode"


@pytest.mark.parametrize(
    ("pod", "namespace", "enrolled"),
    [
        ({}, {}, False),
        ({MODE: "ambient"}, {}, True),
        ({MODE: "ambient"}, {MODE: "ambient"}, True),
        ({}, {MODE: "ambient"}, True),
        ({MODE: "none"}, {MODE: "ambient"}, False),
        ({MODE: "none"}, {}, False),
        ({"istio.io/use-waypoint": "w"}, {}, False),  # a waypoint label alone enrols nothing
        ({}, {MODE: "none"}, False),
    ],
)
def test_in_ambient_mesh_follows_istios_rule(
    pod: dict[str, str], namespace: dict[str, str], enrolled: bool
):
    assert in_ambient_mesh(pod, namespace) is enrolled


def test_the_namespace_is_read_only_when_a_live_pod_leaves_it_open():
    assert not namespace_decides([])
    assert not namespace_decides(
        [ClusterPod("a", {MODE: "ambient"}), ClusterPod("b", {MODE: "none"})]
    )
    assert not namespace_decides([ClusterPod("a", {}, phase="Succeeded")])
    assert namespace_decides([ClusterPod("a", {MODE: "ambient"}), ClusterPod("b", {})])


def test_mesh_drain_lists_live_enrolled_pods_sorted():
    pods = [
        ClusterPod("w-1", {MODE: "ambient"}),
        ClusterPod("w-0", {}),
        ClusterPod("c-0", {MODE: "none"}),
        ClusterPod("w-2", {MODE: "ambient"}, phase="Failed"),
        ClusterPod("w-3", {}, phase=None),
    ]
    assert mesh_drain(pods) == MeshDrain(enrolled=("w-1",))
    assert mesh_drain(pods, {MODE: "ambient"}) == MeshDrain(
        enrolled=("w-0", "w-1", "w-3"), namespace_enrolled=True
    )
    assert mesh_drain([], {MODE: "ambient"}).done
    assert not mesh_drain(pods).done


def test_held_labels_keep_what_was_applied_and_add_membership():
    assert held_labels(None, "coord") == {PART_OF_LABEL: "coord"}
    applied = {MODE: "ambient", PART_OF_LABEL: "coord"}
    assert held_labels(applied, "coord") == applied
    assert held_labels({"x": "y"}, "coord") == {PART_OF_LABEL: "coord", "x": "y"}


def test_draining_summary():
    obs = healthy(draining=DrainStatus(policies=5, pods=3))
    assert winner(obs) == ops.ActiveStatus(
        "2 worker apps (3 units), mesh removed: keeping 5 internal policies "
        "until 3 pods leave the mesh"
    )
    obs = healthy(draining=DrainStatus(policies=1, pods=1, namespace_enrolled=True))
    assert active_summary(obs).endswith(
        "mesh removed: keeping 1 internal policy until 1 pod leaves the mesh "
        "(the namespace is labelled istio.io/dataplane-mode=ambient)"
    )


def test_draining_is_not_a_problem_that_hides_others():
    obs = healthy(
        draining=DrainStatus(policies=5, pods=3),
        kubernetes=[KubernetesFailure(KubernetesFailureKind.api_error, "boom")],
    )
    assert winner(obs).name == "waiting"
    assert winner(healthy(draining=DrainStatus(policies=5, pods=3), workload=["nginx"])) == (
        ops.WaitingStatus("waiting for the nginx container")
    )
