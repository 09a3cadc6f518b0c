"""loki_push_api requirer: read every Loki unit's push URL; publish our topology (leader only)."""

from __future__ import annotations

import json

import ops
import pytest
from coordinated_mesh.relations.loki_push_api import (
    parse_loki_unit_databag,
    publish_loki_metadata,
    read_loki_push_urls,
)
from ops import testing

META = {"name": "coordinator", "requires": {"logging": {"interface": "loki_push_api"}}}
MODEL = testing.Model("mymodel", uuid="12345678-1234-4234-8234-123456789abc")
PUSH = "http://loki-{}.loki-endpoints.cos.svc.cluster.local:3100/loki/api/v1/push"


class Charm(ops.CharmBase):
    pass


def endpoint(url: str) -> dict[str, str]:
    return {"endpoint": json.dumps({"url": url}), "public_address": "loki.cos"}


def test_reads_every_unit_and_drops_bad_ones():
    relation = testing.Relation(
        "logging",
        remote_app_name="loki",
        remote_units_data={
            0: endpoint(PUSH.format(0)),
            1: endpoint(PUSH.format(1)),
            2: {"endpoint": "{not json"},
            3: endpoint("http://evil; include /etc/passwd"),
            4: {"endpoint": json.dumps({"no_url": 1})},
            5: {},  # not ready yet: not a problem
            6: {"endpoint": json.dumps("just a string")},
        },
    )
    ctx = testing.Context(Charm, meta=META)
    with ctx(ctx.on.update_status(), testing.State(relations={relation})) as mgr:
        urls, problems = read_loki_push_urls(mgr.charm.model.relations["logging"])
    assert urls == {"loki/0": PUSH.format(0), "loki/1": PUSH.format(1)}
    assert [(p.endpoint, p.item) for p in problems] == [
        ("logging", "loki/2"),
        ("logging", "loki/3"),
        ("logging", "loki/4"),
        ("logging", "loki/6"),
    ]
    assert "not valid JSON" in problems[0].reason
    assert "is not an http(s)" in problems[1].reason
    assert "url" in problems[2].reason


def test_several_loki_applications():
    relations = {
        testing.Relation(
            "logging", remote_app_name="loki-b", remote_units_data={0: endpoint(PUSH.format("b"))}
        ),
        testing.Relation(
            "logging", remote_app_name="loki-a", remote_units_data={0: endpoint(PUSH.format("a"))}
        ),
    }
    ctx = testing.Context(Charm, meta=META)
    with ctx(ctx.on.update_status(), testing.State(relations=relations)) as mgr:
        urls, problems = read_loki_push_urls(mgr.charm.model.relations["logging"])
    assert urls == {"loki-a/0": PUSH.format("a"), "loki-b/0": PUSH.format("b")}
    assert list(urls) == sorted(urls)
    assert problems == []


@pytest.mark.parametrize(
    ("databag", "expected"),
    [
        ({}, None),
        ({"endpoint": ""}, None),
        (
            {"endpoint": json.dumps({"url": "http://10.0.0.1:3100/loki/api/v1/push"})},
            "http://10.0.0.1:3100/loki/api/v1/push",
        ),
        (
            {"endpoint": json.dumps({"url": "https://loki.example/push", "extra": 1})},
            "https://loki.example:443/push",
        ),
    ],
)
def test_parse_unit_databag(databag: dict[str, str], expected: str | None):
    assert parse_loki_unit_databag(databag) == expected


def test_huge_value_is_rejected():
    with pytest.raises(ValueError, match="bytes"):
        parse_loki_unit_databag({"endpoint": json.dumps({"url": "http://a/" + "b" * (1 << 21)})})


@pytest.mark.parametrize("leader", [True, False])
def test_publish_metadata_leader_only_and_only_when_changed(leader: bool):
    relation = testing.Relation("logging", remote_app_name="loki")
    ctx = testing.Context(Charm, meta=META, app_name="coordinator")
    state = testing.State(
        relations={relation},
        leader=leader,
        model=MODEL,
    )
    with ctx(ctx.on.update_status(), state) as mgr:
        first = publish_loki_metadata(mgr.charm.model, charm_name="mesh-coordinator-k8s")
        second = publish_loki_metadata(mgr.charm.model, charm_name="mesh-coordinator-k8s")
        out = mgr.run()
    app_data = out.get_relation(relation.id).local_app_data
    if not leader:
        assert (first, second) == (False, False)
        assert "metadata" not in app_data
        return
    assert (first, second) == (True, False)
    assert json.loads(app_data["metadata"]) == {
        "model": "mymodel",
        "model_uuid": "12345678-1234-4234-8234-123456789abc",
        "application": "coordinator",
        "unit": "coordinator/0",
        "charm_name": "mesh-coordinator-k8s",
    }
    assert "alert_rules" not in app_data


def test_deeply_nested_endpoint_is_a_value_error_not_a_crash():
    nested = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_loki_unit_databag({"endpoint": nested})
