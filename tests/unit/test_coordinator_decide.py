"""The coordinator's decisions as a pure function of a snapshot: no ops.testing, no Kubernetes."""

from __future__ import annotations

import dataclasses

from coordinated_mesh.coordinator.decide import CoordinatorSpec, decide
from coordinated_mesh.coordinator.snapshot import MeshState, Snapshot
from coordinated_mesh.mesh.cluster_policies import PART_OF_LABEL
from coordinated_mesh.parse import Problem
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.plan import CoordinatorIdentity
from coordinated_mesh.relations.cluster import JujuTopology, MetricsEndpoint, WorkerUnitData
from coordinated_mesh.relations.endpoints import CoordinatorEndpoints

IDENTITY = CoordinatorIdentity(
    app_name="coord", model_name="mymodel", model_uuid="00000000-0000-4000-8000-000000000001"
)
SPEC = CoordinatorSpec(
    proxy_config=WorkerTelemetryProxyConfig(http_port=8080, https_port=8080, grpc_port=4317),
    query_api=WorkerQueryApi(),
)
MESH = MeshState(
    related=True, ready=True, type="istio", labels={"istio.io/dataplane-mode": "ambient"}
)


def worker(app: str, unit: int) -> WorkerUnitData:
    return WorkerUnitData(
        juju_topology=JujuTopology(application=app, unit=f"{app}/{unit}", charm_name="w"),
        address=f"{app}-{unit}.{app}-endpoints.mymodel.svc.cluster.local",
        metrics_endpoint=MetricsEndpoint(port=9090),
    )


def snapshot(**changes: object) -> Snapshot:
    base = Snapshot(
        identity=IDENTITY,
        unit_name="coord/0",
        charm_name="mesh-coordinator-k8s",
        is_leader=True,
        endpoints=CoordinatorEndpoints(),
        worker_apps=("wa", "wb"),
        workers=(worker("wa", 0), worker("wb", 0)),
        resolvers=("10.152.183.10",),
        worker_config="global: {}\n",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_on_the_mesh_labels_carry_the_beacons_and_policies_cover_every_worker_app():
    decision = decide(SPEC, snapshot(mesh=MESH))
    assert decision.labels == {PART_OF_LABEL: "coord", "istio.io/dataplane-mode": "ambient"}
    assert len(decision.cluster_policies) == 1 + 2 * 2
    assert decision.app_data.worker_labels == decision.labels
    assert decision.app_data.worker_config == "global: {}\n"


def test_off_the_mesh_only_membership_is_wanted():
    decision = decide(SPEC, snapshot(mesh=MeshState(related=True, ready=False)))
    assert decision.labels == {PART_OF_LABEL: "coord"}
    assert decision.app_data.worker_labels == {PART_OF_LABEL: "coord"}


def test_held_databag_keeps_what_was_published_and_ensures_membership():
    published = {"istio.io/dataplane-mode": "ambient", PART_OF_LABEL: "old"}
    decision = decide(SPEC, snapshot(mesh=MESH))
    held = decision.held_app_data(published, "coord")
    assert held.worker_labels == {PART_OF_LABEL: "coord", "istio.io/dataplane-mode": "ambient"}
    # Everything but the labels is the same as when the policies apply.
    assert held.model_copy(update={"worker_labels": None}) == (
        decision.app_data.model_copy(update={"worker_labels": None})
    )
    first_hook = decision.held_app_data(None, "coord")
    assert first_hook.worker_labels == {PART_OF_LABEL: "coord"}


def test_equal_snapshots_in_any_order_give_equal_decisions():
    one = decide(SPEC, snapshot(mesh=MESH))
    other = decide(
        SPEC,
        snapshot(mesh=MESH, worker_apps=("wa", "wb"), workers=(worker("wb", 0), worker("wa", 0))),
    )
    assert one.nginx_config == other.nginx_config
    assert one.app_data == other.app_data
    assert one.cluster_policies == other.cluster_policies


def test_ports_and_tracing_requests_follow_the_proxy_config():
    decision = decide(SPEC, snapshot())
    assert decision.ports == (4317, 8080, 9113)
    assert decision.tracing_protocols == {
        "charm-tracing": ("otlp_http",),
        "workload-tracing": ("otlp_http", "otlp_grpc"),
    }
    no_grpc = CoordinatorSpec(WorkerTelemetryProxyConfig(http_port=8080, https_port=8080))
    assert decide(no_grpc, snapshot()).tracing_protocols["workload-tracing"] == ("otlp_http",)


def test_problems_keep_reading_order_then_planning_without_duplicates():
    read = Problem("logging", "loki/0", "bad url")
    decision = decide(SPEC, snapshot(problems=(read, read), resolvers=()))
    assert decision.problems[0] == read
    assert decision.problems.count(read) == 1
    # No resolver: planning adds the proxy's own problem (endpoint "": not a relation).
    assert any(p.endpoint == "" and p.item == "resolver" for p in decision.problems)
