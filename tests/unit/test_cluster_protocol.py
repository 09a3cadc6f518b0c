"""The ``cluster`` protocol's hot path: per-application facts, unit addresses derived from names.

The coordinator reads one application databag and the unit list per worker application; a
worker unit's databag is read only for an older worker (no ``charm_name`` in its application
databag), once, and that application is named as outdated in the status. The counting hooks into
``ops.testing``'s model backend, where ``ops`` would run ``relation-get``.
"""

from __future__ import annotations

import json
from typing import Any

from coordinated_mesh.relations.cluster import WorkerAppData
from ops import testing

from tests.support.coordinator import (
    MODEL,
    FakeKubernetes,
    metrics_relation,
    nginx_config,
    outdated_worker_relation,
    state,
    worker_app_data,
    worker_relation,
    worker_unit_data,
)

Ctx = testing.Context[Any]


def test_current_workers_unit_databags_are_not_read(
    ctx: Ctx, kube: FakeKubernetes, bags_read: list[str]
):
    w1, w2 = worker_relation("w1", 5), worker_relation("w2", 3)
    out = ctx.run(ctx.on.update_status(), state(w1, w2))
    assert out.unit_status == testing.ActiveStatus("2 worker apps (8 units), mesh: none")
    worker_units = [name for name in bags_read if name.startswith(("w1/", "w2/"))]
    assert worker_units == []
    assert bags_read.count("w1") == 1 and bags_read.count("w2") == 1
    config = nginx_config(ctx, out)
    assert config is not None
    for app, units in (("w1", 5), ("w2", 3)):
        for i in range(units):
            # The derived address is the route's backend (pooled: ``server <it> resolve;``).
            assert f"{app}-{i}.{app}-endpoints.{MODEL.name}.svc.cluster.local:9090" in config


def test_a_published_address_is_never_used(ctx: Ctx, kube: FakeKubernetes):
    """The address is fixed by the unit's name: what a unit claims cannot redirect the proxy."""
    hostile = worker_unit_data("w1", 0)
    hostile["address"] = json.dumps("metadata.google.internal")
    rel = testing.Relation(
        "cluster",
        remote_app_name="w1",
        remote_app_data=worker_app_data(),
        remote_units_data={0: hostile},
    )
    out = ctx.run(ctx.on.update_status(), state(rel))
    config = nginx_config(ctx, out)
    assert config is not None
    assert "metadata.google.internal" not in config
    assert f"w1-0.w1-endpoints.{MODEL.name}.svc.cluster.local:9090" in config


def test_the_application_databag_sets_every_units_metrics_endpoint(ctx: Ctx, kube: FakeKubernetes):
    rel = testing.Relation(
        "cluster",
        remote_app_name="w1",
        remote_app_data=worker_app_data(port=9100, charm="other-charm"),
        remote_units_data={0: {}, 1: {}},  # no unit data at all: not needed
    )
    out = ctx.run(ctx.on.update_status(), state(rel, metrics_relation()))
    assert out.unit_status == testing.ActiveStatus("1 worker app (2 units), mesh: none")
    config = nginx_config(ctx, out)
    assert config is not None
    assert f"w1-1.w1-endpoints.{MODEL.name}.svc.cluster.local:9100" in config
    metrics = next(r for r in out.relations if r.endpoint == "metrics-endpoint")
    jobs = json.loads(metrics.local_app_data["scrape_jobs"])
    charms = {
        c["replacement"]
        for job in jobs
        for c in job.get("relabel_configs", [])
        if c["target_label"] == "juju_charm"
    }
    assert charms == {"other-charm"}


def test_an_outdated_worker_is_understood_read_once_and_named(
    ctx: Ctx, kube: FakeKubernetes, bags_read: list[str]
):
    old, new = outdated_worker_relation("old", 4), worker_relation("new", 2)
    out = ctx.run(ctx.on.update_status(), state(old, new))
    assert out.unit_status == testing.ActiveStatus(
        "2 worker apps (6 units), mesh: none, outdated workers (juju refresh): old"
    )
    assert [name for name in bags_read if name.startswith("old/")] == ["old/0"]
    assert [name for name in bags_read if name.startswith("new/")] == []
    config = nginx_config(ctx, out)
    assert config is not None
    assert f"old-3.old-endpoints.{MODEL.name}.svc.cluster.local:9090" in config


def test_an_outdated_worker_with_invalid_unit_data_uses_the_next_valid_unit(
    ctx: Ctx, kube: FakeKubernetes
):
    rel = testing.Relation(
        "cluster",
        remote_app_name="old",
        remote_app_data={"role": json.dumps("all")},
        remote_units_data={0: {"juju_topology": "{not json"}, 1: worker_unit_data("old", 1)},
    )
    out = ctx.run(ctx.on.update_status(), state(rel))
    assert out.unit_status.name == "blocked"
    assert "invalid data on relation cluster (old/0)" in out.unit_status.message
    config = nginx_config(ctx, out)
    assert config is not None
    assert f"old-0.old-endpoints.{MODEL.name}.svc.cluster.local:9090" in config


def test_invalid_application_data_drops_that_application_only(ctx: Ctx, kube: FakeKubernetes):
    bad = testing.Relation(
        "cluster",
        remote_app_name="bad",
        remote_app_data={**worker_app_data(), "charm_name": json.dumps("Not A Charm")},
        remote_units_data={0: worker_unit_data("bad", 0)},
    )
    out = ctx.run(ctx.on.update_status(), state(bad, worker_relation("good", 1)))
    assert out.unit_status.name == "blocked"
    assert "invalid data on relation cluster (bad): charm_name" in out.unit_status.message
    config = nginx_config(ctx, out)
    assert config is not None
    assert "bad-0" not in config and "good-0" in config


def test_worker_app_data_current_means_charm_name_published():
    assert not WorkerAppData.load({"role": json.dumps("all")}).current
    assert WorkerAppData.load(worker_app_data()).current
