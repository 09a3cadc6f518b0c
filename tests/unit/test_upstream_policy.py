"""The upstream policy: a telemetry backend is never this proxy, loopback, link-local, ...

The refused backend is dropped from the plan, named in a problem, and so in the coordinator's
status; the other backends keep working.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from coordinated_mesh.parse import check_backend_host, parse_host
from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    build_telemetry_proxy,
)
from ops import testing

from tests.support.coordinator import APP, MODEL, state, worker_relation

IDENTITY = CoordinatorIdentity("coord", "mymodel", "12345678-1234-4234-8234-123456789abc")

REFUSED = [
    "127.0.0.1",
    "127.1.2.3",
    "169.254.169.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
    "localhost",
    "LocalHost",
    "foo.localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "metadata.google.internal",
    "coord",
    "coord.mymodel",
    "coord.mymodel.svc",
    "coord.mymodel.svc.cluster.local",
    "coord-endpoints.mymodel.svc.cluster.local",
    "coord-0.coord-endpoints.mymodel.svc.cluster.local",
    "coord-12.coord-endpoints.mymodel.svc",
]
ALLOWED = [
    "10.1.2.3",
    "192.168.0.1",
    "loki-0.loki-endpoints.cos.svc.cluster.local",
    "coord.othermodel.svc.cluster.local",
    "coord2.mymodel.svc.cluster.local",
    "coordx",
    "kubernetes-dashboard.kube-system.svc.cluster.local",
]


@pytest.mark.parametrize("host", REFUSED)
def test_refused_hosts(host: str):
    with pytest.raises(ValueError, match="refused"):
        check_backend_host(parse_host(host), app_name="coord", model_name="mymodel")


@pytest.mark.parametrize("host", ALLOWED)
def test_allowed_hosts(host: str):
    assert check_backend_host(host, app_name="coord", model_name="mymodel") == host


@pytest.mark.parametrize("host", ["coord.mymodel.svc.k8s.example", "x.coord-endpoints.mymodel.svc"])
def test_own_names_follow_the_cluster_domain(host: str):
    with pytest.raises(ValueError, match="this proxy"):
        check_backend_host(
            host, app_name="coord", model_name="mymodel", cluster_domain="k8s.example"
        )


@pytest.mark.parametrize("host", REFUSED)
def test_every_kind_of_backend_applies_the_policy(host: str):
    inputs = TelemetryProxyInputs(
        identity=IDENTITY,
        config=WorkerTelemetryProxyConfig(http_port=8080, https_port=8443, grpc_port=4317),
        backend_loki_urls={"loki/0": f"http://{host}:3100/push", "loki/1": "http://10.0.0.1/p"},
        backend_remote_write_urls={"prom/0": f"http://{host}:9090/write"},
        backend_charm_tracing_receivers={"otlp_http": f"http://{host}:4318"},
        backend_workload_tracing_receivers={
            "otlp_http": f"http://{host}:4318",
            "otlp_grpc": f"{host}:4317",
        },
        resolvers=["10.152.183.10"],
    )
    plan = build_telemetry_proxy(inputs)
    assert [r.location for r in plan.http_routes] == ["/proxy/loki/loki-1/push"]
    assert plan.grpc_routes == ()
    refused = {(p.endpoint, p.item) for p in plan.problems if "refused" in p.reason}
    assert refused == {
        ("logging", "loki/0"),
        ("send-remote-write", "prom/0"),
        ("charm-tracing", "otlp_http"),
        ("workload-tracing", "otlp_http"),
        ("workload-tracing", "otlp_grpc"),
    }


def test_the_refused_backend_is_named_in_the_status(ctx: testing.Context[Any]):
    own = f"http://{APP}-0.{APP}-endpoints.{MODEL.name}.svc.cluster.local:8080/proxy/loki/x/push"
    loki = testing.Relation(
        "logging",
        remote_app_name="loki",
        remote_units_data={
            0: {"endpoint": json.dumps({"url": own})},
            1: {"endpoint": json.dumps({"url": "http://169.254.169.254/latest/meta-data"})},
        },
    )
    out = ctx.run(ctx.on.config_changed(), state(worker_relation("worker"), loki))
    messages = [out.unit_status.message]
    assert "loki/0" in messages[0] or "loki/1" in messages[0], messages
    assert "refused" in messages[0], messages
    assert len(messages[0]) <= 250
