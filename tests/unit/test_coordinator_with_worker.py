"""The two charms of this repository talk to each other: the ``cluster`` protocol end to end.

The worker charm runs under ``ops.testing`` and what it publishes becomes the coordinator's input;
what the coordinator then publishes becomes the worker's input. Both Kubernetes sides are fakes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from coordinated_mesh.mesh.cluster_policies import PART_OF_LABEL
from ops import testing

from tests.support.charm_loader import load_charm_module
from tests.support.coordinator import (
    APP,
    MESH_LABELS,
    MODEL,
    FakeKubernetes,
    loki_relation,
    mesh_relation,
    nginx_config,
    state,
    tracing_relation,
)
from tests.support.worker import FakeLabels, worker_context

WORKER = load_charm_module("worker")
WORKER_APP = "w1"


@pytest.fixture
def worker_labels() -> FakeLabels:
    return FakeLabels()


def worker_state(tmp_path: Path, coordinator_data: Mapping[str, str]) -> testing.State:
    etc = tmp_path / "etc-prometheus"
    etc.mkdir(exist_ok=True)
    return testing.State(
        leader=True,
        model=MODEL,
        config={"role": "all"},
        relations=[
            testing.Relation("cluster", remote_app_name=APP, remote_app_data=dict(coordinator_data))
        ],
        containers=[
            testing.Container(
                "prometheus",
                can_connect=True,
                mounts={"config": testing.Mount(location="/etc/prometheus", source=etc)},
            )
        ],
    )


def test_worker_data_feeds_the_coordinator_and_back(
    ctx: testing.Context[Any],
    kube: FakeKubernetes,
    worker_labels: FakeLabels,
    tmp_path: Path,
):
    worker_ctx = worker_context(worker_labels, app_name=WORKER_APP)

    # 1. The worker joins: it publishes its topology, address and metrics endpoint.
    out = worker_ctx.run(worker_ctx.on.install(), worker_state(tmp_path, {}))
    (rel,) = out.relations
    published_by_worker = dict(rel.local_unit_data)
    assert {"juju_topology", "address", "metrics_endpoint"} <= set(published_by_worker)

    # 2. The coordinator reads it: a route, a policy pair, and data for the workers.
    cluster = testing.Relation(
        "cluster",
        remote_app_name=WORKER_APP,
        remote_app_data=dict(rel.local_app_data),
        remote_units_data={0: published_by_worker},
    )
    coord = ctx.run(
        ctx.on.config_changed(),
        state(cluster, mesh_relation(), loki_relation(), tracing_relation("workload-tracing")),
    )
    assert coord.unit_status == testing.ActiveStatus(
        "1 worker app (1 unit), mesh: istio, 3 internal policies"
    ), coord.unit_status
    config = nginx_config(ctx, coord)
    assert config is not None
    assert f"location = /proxy/worker/{WORKER_APP}-0/metrics" in config
    assert json.loads(published_by_worker["address"]) in config
    (coord_cluster,) = [r for r in coord.relations if r.endpoint == "cluster"]
    for_workers = dict(coord_cluster.local_app_data)

    # 3. The worker applies what the coordinator published: labels and proxied URLs.
    out = worker_ctx.run(worker_ctx.on.config_changed(), worker_state(tmp_path, for_workers))
    assert worker_labels.labels == {PART_OF_LABEL: APP, **MESH_LABELS}
    assert out.unit_status.name == "active", out.unit_status
    loki_url = json.loads(for_workers["loki_endpoints"])["loki/0"]
    assert loki_url == f"http://{APP}.{MODEL.name}.svc.cluster.local:8080/proxy/loki/loki-0/push"

    # 4. Tempo offers otlp_grpc: the worker's Prometheus sends its traces over gRPC to the
    # coordinator's gRPC port (through the coordinator's Service), which forwards to Tempo.
    grpc_address = f"{APP}.{MODEL.name}.svc.cluster.local:4317"
    receivers = json.loads(for_workers["workload_tracing_receivers"])
    assert receivers["otlp_grpc"] == grpc_address
    prometheus_yml = yaml.safe_load((tmp_path / "etc-prometheus" / "prometheus.yml").read_text())
    assert prometheus_yml["tracing"] == {
        "client_type": "grpc",
        "endpoint": grpc_address,
        "insecure": True,
        "sampling_fraction": 1.0,
    }
    assert "listen 4317;" in config and "http2 on;" in config
    assert "set $grpc_upstream grpc://grpc_tempo.cos.svc.cluster.local_4317;" in config
    assert "server tempo.cos.svc.cluster.local:4317 resolve;" in config
    assert 4317 in {port.port for port in coord.opened_ports}
    # On the mesh, the worker may reach the coordinator's Service (and every cluster pod) on any
    # port: the gRPC port needs no policy of its own.
    from_worker = [p for p in kube.policy_wires() if p["source_app_name"] == WORKER_APP]
    assert {(p["target_type"], p["target_app_name"]) for p in from_worker} == {
        ("app", APP),
        ("unit", None),
    }
    assert all(p["endpoints"] == [] for p in from_worker)
