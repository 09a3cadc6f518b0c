"""The worker's pure parts: unit FQDN, validation of the proxied URLs, statuses."""

from __future__ import annotations

import json

import ops
import pytest
from coordinated_mesh.parse import Problem, unit_fqdn
from coordinated_mesh.relations.cluster import CoordinatorAppData, parse_proxied_telemetry
from coordinated_mesh.worker.worker import WorkerObservations, worker_statuses

PROXY = "http://coord.mymodel.svc.cluster.local:8080"


def app_data(**fields: object) -> CoordinatorAppData:
    return CoordinatorAppData.load({key: json.dumps(value) for key, value in fields.items()})


def test_unit_fqdn():
    assert (
        unit_fqdn(
            "mesh-worker-k8s/3",
            app_name="mesh-worker-k8s",
            model_name="m",
            cluster_domain="cluster.local",
        )
        == "mesh-worker-k8s-3.mesh-worker-k8s-endpoints.m.svc.cluster.local"
    )


def test_valid_urls_are_kept_and_sorted():
    telemetry, problems = parse_proxied_telemetry(
        app_data(
            loki_endpoints={
                "loki/1": f"{PROXY}/proxy/loki/loki-1/push",
                "loki/0": f"{PROXY}/proxy/loki/loki-0/push",
            },
            remote_write_endpoints=[
                {"url": f"{PROXY}/proxy/remote-write/b-0/write"},
                {"url": f"{PROXY}/proxy/remote-write/a-0/write"},
                {"url": f"{PROXY}/proxy/remote-write/a-0/write"},
            ],
            workload_tracing_receivers={
                "otlp_http": f"{PROXY}/proxy/workload-tracing/otlp_http",
                "otlp_grpc": "coord.mymodel.svc.cluster.local:4317",
            },
            charm_tracing_receivers={"otlp_http": f"{PROXY}/proxy/charm-tracing/otlp_http"},
        )
    )
    assert problems == []
    assert list(telemetry.loki_urls) == ["loki/0", "loki/1"]
    assert telemetry.remote_write_urls == (
        f"{PROXY}/proxy/remote-write/a-0/write",
        f"{PROXY}/proxy/remote-write/b-0/write",
    )
    assert telemetry.workload_tracing_receivers == {
        "otlp_grpc": "coord.mymodel.svc.cluster.local:4317",
        "otlp_http": f"{PROXY}/proxy/workload-tracing/otlp_http",
    }
    assert telemetry.charm_tracing_receivers == {
        "otlp_http": f"{PROXY}/proxy/charm-tracing/otlp_http"
    }


def test_absent_keys_mean_no_urls():
    telemetry, problems = parse_proxied_telemetry(app_data(worker_labels={"a": "b"}))
    assert problems == []
    assert not telemetry.loki_urls
    assert telemetry.remote_write_urls == ()


@pytest.mark.parametrize(
    "fields, where",
    [
        ({"loki_endpoints": {"loki/0": "ftp://x/push"}}, "loki_endpoints['loki/0']"),
        ({"loki_endpoints": {"loki/0": "http://x/push\nlocation / {"}}, "loki_endpoints['loki/0']"),
        ({"remote_write_endpoints": [{"url": "http://user@x/write"}]}, "remote_write_endpoints"),
        (
            {"workload_tracing_receivers": {"otlp_grpc": "http://x:4317"}},
            "workload_tracing_receivers['otlp_grpc']",
        ),
        (
            {"charm_tracing_receivers": {"otlp_http": "x:4318"}},
            "charm_tracing_receivers['otlp_http']",
        ),
    ],
)
def test_invalid_items_are_dropped_and_named(fields: dict[str, object], where: str):
    good = {"loki/1": f"{PROXY}/proxy/loki/loki-1/push"}
    merged: dict[str, object] = {"loki_endpoints": good}
    for key, value in fields.items():
        merged[key] = (
            {**good, **value} if key == "loki_endpoints" and isinstance(value, dict) else value
        )
    telemetry, problems = parse_proxied_telemetry(app_data(**merged))
    assert len(problems) == 1
    assert str(problems[0]).startswith(where)
    assert telemetry.loki_urls.get("loki/1") == good["loki/1"]


def test_unknown_tracing_protocols_are_ignored_quietly():
    telemetry, problems = parse_proxied_telemetry(
        app_data(workload_tracing_receivers={"otlp_quantum": "whatever"})
    )
    assert problems == []
    assert telemetry.workload_tracing_receivers == {}


def test_too_many_urls_are_capped():
    urls = {f"loki/{n}": f"{PROXY}/proxy/loki/loki-{n}/push" for n in range(100)}
    telemetry, problems = parse_proxied_telemetry(app_data(loki_endpoints=urls))
    assert len(telemetry.loki_urls) == 64
    assert [str(p) for p in problems] == ["loki_endpoints: 100 URLs, only 64 used"]


def texts(statuses: list[ops.StatusBase]) -> list[tuple[str, str]]:
    return [(s.name, s.message) for s in statuses]


def test_healthy_worker_is_active():
    obs = WorkerObservations(app_name="w", coordinator="coord", role="all")
    assert texts(worker_statuses(obs)) == [("active", "coordinator: coord, role: all")]


def test_no_coordinator_says_how_to_relate():
    statuses = worker_statuses(WorkerObservations(app_name="w"))
    assert statuses[0] == ops.BlockedStatus(
        "relate to a coordinator: juju integrate w:cluster <coordinator>:cluster"
    )


def test_trust_comes_first_and_names_the_command():
    obs = WorkerObservations(app_name="w", coordinator="coord", forbidden=True, data_problem="x")
    statuses = worker_statuses(obs)
    assert statuses[0] == ops.BlockedStatus(
        "not allowed to label its pods: run juju trust w --scope=cluster"
    )


def test_waiting_statuses_name_relation_and_reason():
    obs = WorkerObservations(
        app_name="w",
        coordinator="coord",
        data_problem="invalid data: 'worker_labels' is not valid JSON",
        item_problems=[Problem("", "loki_endpoints['loki/0']", "bad")],
        kubernetes_error="Kubernetes API error 500: boom",
        workload_problem="waiting for the prometheus container",
    )
    assert texts(worker_statuses(obs))[:-1] == [
        (
            "waiting",
            "waiting for coord on relation cluster: invalid data: 'worker_labels' is not valid JSON",
        ),
        ("waiting", "ignoring invalid data on relation cluster: loki_endpoints['loki/0']: bad"),
        (
            "waiting",
            "Kubernetes API error, retrying on the next hook: Kubernetes API error 500: boom",
        ),
        ("waiting", "waiting for the prometheus container"),
    ]


def test_statuses_are_one_line_and_short():
    obs = WorkerObservations(app_name="w", coordinator="coord", data_problem="x\n" * 500)
    for status in worker_statuses(obs):
        assert "\n" not in status.message
        assert len(status.message) <= 160
