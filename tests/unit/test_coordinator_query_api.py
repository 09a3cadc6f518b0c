"""The coordinator charm's query API under ``ops.testing``: the route and the Grafana datasource.

The reference charm turns on ``WorkerQueryApi()``: nginx serves ``/query/`` over the workers, and
``grafana-source`` carries the datasource (metadata from the leader, the Service URL from every
unit, withdrawn while no worker can answer). Every configuration rendered is checked with the
real ``nginx -t``; statuses are the same as without the relation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import charmlibs.interfaces.service_mesh as real_mesh
import ops
import pytest
import yaml
from coordinated_mesh.coordinator.coordinator import Coordinator
from coordinated_mesh.mesh.authorization import render_authorization_policy
from coordinated_mesh.mesh.policies import MeshPolicy
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from ops import testing

from tests.support.charm_loader import ROOT
from tests.support.coordinator import (
    APP,
    CHARM,
    MODEL,
    FakeKubernetes,
    check_nginx,
    containers,
    mesh_relation,
    nginx_config,
    relation,
    running_containers,
    state,
    worker_relation,
)

Ctx = testing.Context[Any]
URL = f"http://{APP}.{MODEL.name}.svc.cluster.local:8080/query"
SOURCE_DATA = {
    "application": APP,
    "model": MODEL.name,
    "model_uuid": MODEL.uuid,
    "type": "prometheus",
}


def grafana_relation(**kwargs: Any) -> testing.Relation:
    return testing.Relation("grafana-source", remote_app_name="grafana", **kwargs)


def run(ctx: Ctx, event: Any, st: testing.State) -> tuple[testing.State, str]:
    out = ctx.run(event, st)
    config = nginx_config(ctx, out)
    assert config is not None
    check_nginx(config)
    return out, config


def grafana(out: testing.State) -> tuple[dict[str, str], dict[str, str]]:
    """Our application and unit databags on the grafana-source relation."""
    found = relation(out, "grafana-source")
    assert isinstance(found, testing.Relation)
    return dict(found.local_app_data), dict(found.local_unit_data)


# --- Leader and non-leader ------------------------------------------------------------------


def test_leader_publishes_the_datasource_and_nginx_serves_it(ctx: Ctx, kube: FakeKubernetes):
    out, config = run(
        ctx, ctx.on.config_changed(), state(worker_relation("w1", 2), grafana_relation())
    )
    app, unit = grafana(out)
    assert json.loads(app["grafana_source_data"]) == SOURCE_DATA
    assert unit["grafana_source_host"] == URL  # the Service, a plain string
    assert "location /query/ {" in config
    # Each share names the worker's pooled upstream block (the image's nginx is 1.28).
    assert '50.00% "http_w1-0.w1-endpoints.mymodel.svc.cluster.local_9090";' in config
    assert '* "http_w1-1.w1-endpoints.mymodel.svc.cluster.local_9090";' in config
    assert "server w1-1.w1-endpoints.mymodel.svc.cluster.local:9090 resolve;" in config
    assert out.unit_status == testing.ActiveStatus("1 worker app (2 units), mesh: none")


def test_non_leader_publishes_only_its_unit_url(ctx: Ctx, kube: FakeKubernetes):
    out, config = run(
        ctx,
        ctx.on.config_changed(),
        state(worker_relation("w1"), grafana_relation(), mesh_relation(), leader=False),
    )
    app, unit = grafana(out)
    assert app == {}
    assert unit["grafana_source_host"] == URL  # every unit: the same URL
    assert kube.calls == []
    assert "location /query/ {" in config


def test_every_unit_publishes_the_same_url(ctx: Ctx, kube: FakeKubernetes):
    hosts: set[str] = set()
    for unit_id, leader in [(0, True), (1, False), (7, False)]:
        context = testing.Context(CHARM.MeshCoordinatorCharm, app_name=APP, unit_id=unit_id)
        out = context.run(
            context.on.update_status(),
            state(worker_relation("w1"), grafana_relation(), leader=leader),
        )
        hosts.add(grafana(out)[1]["grafana_source_host"])
    assert hosts == {URL}


# --- Workers coming and going ---------------------------------------------------------------


def test_without_workers_no_route_and_no_datasource(ctx: Ctx, kube: FakeKubernetes):
    out, config = run(ctx, ctx.on.install(), state(grafana_relation()))
    app, unit = grafana(out)
    assert json.loads(app["grafana_source_data"]) == SOURCE_DATA
    # The empty value: Juju keeps it as no key, and Grafana skips the unit either way.
    assert "grafana_source_host" not in unit
    assert "/query/" not in config
    assert "split_clients" not in config
    assert out.unit_status == testing.BlockedStatus(
        f"no workers: run juju integrate {APP}:cluster <worker-app>:cluster"
    )


def test_workers_leaving_withdraw_the_datasource_and_coming_back_restore_it(
    ctx: Ctx, kube: FakeKubernetes, tmp_path: Path
):
    workers = worker_relation("w1", 2)
    st = testing.State(
        leader=True,
        model=MODEL,
        relations=[workers, grafana_relation()],
        containers=running_containers(tmp_path / "etc-nginx", None),
    )
    out, _ = run(ctx, ctx.on.config_changed(), st)
    assert grafana(out)[1]["grafana_source_host"] == URL

    out, config = run(ctx, ctx.on.relation_broken(relation(out, "cluster")), out)
    assert "grafana_source_host" not in grafana(out)[1]
    assert "/query/" not in config

    again = worker_relation("w2")
    others = [r for r in out.relations if r.endpoint != "cluster"]
    st = testing.State(
        leader=True, model=MODEL, relations=[*others, again], containers=out.containers
    )
    out, config = run(ctx, ctx.on.relation_changed(again, remote_unit=0), st)
    assert grafana(out)[1]["grafana_source_host"] == URL
    assert '* "http_w2-0.w2-endpoints.mymodel.svc.cluster.local_9090";' in config
    assert "w1-" not in config


def test_workers_with_invalid_data_serve_no_queries(ctx: Ctx, kube: FakeKubernetes):
    bad = testing.Relation(
        "cluster",
        remote_app_name="w1",
        remote_units_data={
            0: {
                "juju_topology": json.dumps(
                    {"application": "w1", "unit": "w1/0", "charm_name": "mesh-worker-k8s"}
                ),
                "address": json.dumps("w1-0;} server {"),
            }
        },
    )
    out, config = run(ctx, ctx.on.config_changed(), state(bad, grafana_relation()))
    assert "grafana_source_host" not in grafana(out)[1]
    assert "/query/" not in config
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "invalid data on relation cluster (w1/0)" in out.unit_status.message


# --- Grafana's side and the statuses ----------------------------------------------------------


def test_whatever_grafana_writes_changes_nothing(ctx: Ctx, kube: FakeKubernetes):
    garbage = grafana_relation(
        remote_app_data={
            "grafana_uid": "\x00",
            "datasource_uids": "{not json",
            "grafana_base_url": "x" * 5000,
        },
        remote_units_data={0: {"grafana_source_host": "http://evil", "anything": "[1, 2"}},
    )
    out, _ = run(
        ctx, ctx.on.relation_changed(garbage, remote_unit=0), state(worker_relation("w1"), garbage)
    )
    assert grafana(out)[1]["grafana_source_host"] == URL
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("leader", [True, False])
def test_statuses_are_the_same_with_and_without_grafana(
    ctx: Ctx, kube: FakeKubernetes, workers: int, leader: bool
):
    cluster = [worker_relation("w1", workers)] if workers else []
    without = ctx.run(ctx.on.update_status(), state(*cluster, leader=leader))
    with_grafana = ctx.run(
        ctx.on.update_status(), state(*cluster, grafana_relation(), leader=leader)
    )
    assert with_grafana.unit_status == without.unit_status
    assert with_grafana.app_status == without.app_status


def test_grafana_leaving_is_quiet(ctx: Ctx, kube: FakeKubernetes):
    source = grafana_relation()
    out, _ = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), source))
    out, _ = run(ctx, ctx.on.relation_broken(relation(out, "grafana-source")), out)
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")


def test_an_unchanged_hook_rewrites_nothing_and_reloads_nothing(
    ctx: Ctx, kube: FakeKubernetes, tmp_path: Path
):
    st = testing.State(
        leader=True,
        model=MODEL,
        relations=[worker_relation("w1", 3), grafana_relation(), mesh_relation()],
        containers=running_containers(tmp_path / "etc-nginx", None),
    )
    out, config = run(ctx, ctx.on.config_changed(), st)
    writes = list(kube.writes)
    ctx.exec_history.clear()
    again, config_again = run(ctx, ctx.on.update_status(), out)
    assert grafana(again) == grafana(out)
    assert config_again == config
    assert kube.writes == writes
    assert ctx.exec_history.get("nginx", []) == []


# --- The mesh policy for Grafana --------------------------------------------------------------


def _published_policies(ctx: Ctx) -> list[dict[str, Any]]:
    out, _ = run(
        ctx,
        ctx.on.config_changed(),
        state(worker_relation("w1"), grafana_relation(), mesh_relation()),
    )
    return json.loads(relation(out, "service-mesh").local_app_data["policies"])


def _istio_path_matches(pattern: str, path: str) -> bool:
    """Istio's AuthorizationPolicy path match (no templates): exact, ``x*``, ``*x`` or ``*``."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return path.endswith(pattern[1:])
    return path == pattern


def test_grafana_may_query_and_do_nothing_else(ctx: Ctx, kube: FakeKubernetes):
    (policy,) = [p for p in _published_policies(ctx) if p["source_app_name"] == "grafana"]
    assert policy["target_app_name"] == APP
    assert policy["target_type"] == "app"
    mesh_policy = MeshPolicy.model_validate(policy)
    rendered = render_authorization_policy(mesh_policy, name="x", labels={})
    (rule,) = rendered["spec"]["rules"]
    assert rendered["spec"]["targetRefs"] == [{"group": "", "kind": "Service", "name": APP}]
    assert rule["to"] == [
        {
            "operation": {
                "ports": ["8080", "8443"],
                "methods": ["GET", "POST"],
                "paths": ["/query/*"],
            }
        }
    ]
    (pattern,) = rule["to"][0]["operation"]["paths"]
    grafana_paths = [
        "/query/api/v1/query",
        "/query/api/v1/query_range",
        "/query/api/v1/status/buildinfo",
        "/query/api/v1/labels",
        "/query/api/v1/label/job/values",
        "/query/api/v1/series",
        "/query/api/v1/metadata",
    ]
    assert all(_istio_path_matches(pattern, path) for path in grafana_paths)
    for denied in ["/proxy/worker/w1-0/metrics", "/proxy/loki/loki-0/push", "/query", "/q", "/"]:
        assert not _istio_path_matches(pattern, denied), denied


def test_the_real_beacon_library_reads_the_grafana_policy(ctx: Ctx, kube: FakeKubernetes):
    """What istio-beacon-k8s runs parses our Grafana policy into the same endpoint."""
    policies = [p for p in _published_policies(ctx) if p["source_app_name"] == "grafana"]

    class Beacon(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            self.mesh = real_mesh.ServiceMeshProvider(
                self, labels={}, mesh_type=real_mesh.MeshType.istio
            )

    meta = {"name": "beacon", "provides": {"service-mesh": {"interface": "service_mesh"}}}
    mesh = testing.Relation(
        "service-mesh", remote_app_name=APP, remote_app_data={"policies": json.dumps(policies)}
    )
    beacon = testing.Context(Beacon, meta=meta, app_name="beacon")
    with beacon(beacon.on.update_status(), testing.State(leader=True, relations=[mesh])) as mgr:
        (parsed,) = mgr.charm.mesh.mesh_info()
    assert [e.model_dump(mode="json") for e in parsed.endpoints] == [
        {"hosts": None, "ports": [8080, 8443], "methods": ["GET", "POST"], "paths": ["/query/*"]}
    ]


# --- A charm author's mistakes and choices -----------------------------------------------------

_META: dict[str, Any] = yaml.safe_load((ROOT / "coordinator" / "charmcraft.yaml").read_text())


def _meta_without_grafana() -> dict[str, Any]:
    meta = {k: v for k, v in _META.items() if k not in ("actions",)}
    meta["provides"] = {k: v for k, v in meta["provides"].items() if k != "grafana-source"}
    return meta


class _Author(ops.CharmBase):
    endpoint: str | None = "grafana-source"

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.coordinator = Coordinator(
            self,
            worker_telemetry_proxy_config=WorkerTelemetryProxyConfig(8080, 8080),
            worker_query_api=WorkerQueryApi(),
            grafana_source_endpoint=self.endpoint,
            show_mesh_action=None,
        )


def test_query_api_on_an_undeclared_endpoint_is_a_charm_error(kube: FakeKubernetes):
    context = testing.Context(_Author, meta=_meta_without_grafana(), app_name=APP)
    with pytest.raises(testing.errors.UncaughtCharmError) as caught:
        context.run(context.on.install(), testing.State(model=MODEL, containers=containers()))
    assert isinstance(caught.value.__cause__, ValueError)
    assert "grafana_source_endpoint=None" in str(caught.value.__cause__)


def test_query_api_without_publishing_it(monkeypatch: pytest.MonkeyPatch, kube: FakeKubernetes):
    monkeypatch.setattr(_Author, "endpoint", None)
    context = testing.Context(_Author, meta=_meta_without_grafana(), app_name=APP)
    out = context.run(
        context.on.config_changed(),
        testing.State(
            leader=True, model=MODEL, relations=[worker_relation("w1")], containers=containers()
        ),
    )
    config = nginx_config(context, out)
    assert config is not None
    assert "location /query/ {" in config
    check_nginx(config)
