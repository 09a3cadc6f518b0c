"""prometheus_remote_write requirer: read each provider unit's ``remote_write`` URL."""

from __future__ import annotations

import json

import ops
import pytest
from coordinated_mesh.relations.remote_write import (
    parse_remote_write_unit_databag,
    read_remote_write_urls,
)
from ops import testing

META = {
    "name": "coordinator",
    "requires": {"send-remote-write": {"interface": "prometheus_remote_write"}},
}
PROM = "http://prometheus-{}.prometheus-endpoints.cos.svc.cluster.local:9090/api/v1/write"


class Charm(ops.CharmBase):
    pass


def test_reads_prometheus_and_mimir_and_drops_bad_units():
    relations = {
        testing.Relation(
            "send-remote-write",
            remote_app_name="prometheus",
            remote_units_data={
                0: {"remote_write": json.dumps({"url": PROM.format(0)})},
                1: {"remote_write": json.dumps({"url": "http://prometheus-1:9090/$x"})},
                2: {"remote_write": json.dumps(["http://x"])},
            },
        ),
        testing.Relation(
            "send-remote-write",
            remote_app_name="mimir",
            remote_units_data={
                0: {"remote_write": json.dumps({"url": "http://mimir:8080/api/v1/push"})},
                1: {},
            },
        ),
    }
    ctx = testing.Context(Charm, meta=META)
    with ctx(ctx.on.update_status(), testing.State(relations=relations)) as mgr:
        urls, problems = read_remote_write_urls(mgr.charm.model.relations["send-remote-write"])
    assert urls == {"mimir/0": "http://mimir:8080/api/v1/push", "prometheus/0": PROM.format(0)}
    assert sorted((p.endpoint, p.item) for p in problems) == [
        ("send-remote-write", "prometheus/1"),
        ("send-remote-write", "prometheus/2"),
    ]


def test_parse_unit_databag_absent_and_bad_json():
    assert parse_remote_write_unit_databag({}) is None
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_remote_write_unit_databag({"remote_write": "{"})


def test_deeply_nested_remote_write_is_a_value_error_not_a_crash():
    nested = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_remote_write_unit_databag({"remote_write": nested})
