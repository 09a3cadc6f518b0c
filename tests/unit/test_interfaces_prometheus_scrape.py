"""prometheus_scrape provider: jobs, metadata and rules (leader), unit address (every unit)."""

from __future__ import annotations

import json

import ops
import pytest
from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    build_telemetry_proxy,
)
from coordinated_mesh.relations._common import TopologyMetadata
from coordinated_mesh.relations.prometheus_scrape import (
    provider_app_databag,
    publish_scrape_jobs,
    sanitize_scrape_jobs,
)
from ops import testing

META = {"name": "coordinator", "provides": {"metrics-endpoint": {"interface": "prometheus_scrape"}}}
UUID = "12345678-1234-4234-8234-123456789abc"
MODEL = testing.Model("mymodel", uuid=UUID)
ADDRESS = "coordinator-0.coordinator-endpoints.mymodel.svc.cluster.local"


class Charm(ops.CharmBase):
    pass


def jobs() -> tuple[dict[str, object], ...]:
    inputs = TelemetryProxyInputs(
        identity=CoordinatorIdentity("coordinator", "mymodel", UUID),
        config=WorkerTelemetryProxyConfig(8080, 8080),
    )
    return build_telemetry_proxy(inputs).scrape_jobs


def test_sanitize_drops_unknown_keys():
    assert sanitize_scrape_jobs(
        [{"job_name": "a", "metrics_path": "/m", "honor_labels": True, "static_configs": []}]
    ) == [{"job_name": "a", "metrics_path": "/m", "static_configs": []}]


@pytest.mark.parametrize("leader", [True, False])
def test_publish(leader: bool):
    relation = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    ctx = testing.Context(Charm, meta=META, app_name="coordinator")
    state = testing.State(relations={relation}, leader=leader, model=MODEL)
    with ctx(ctx.on.update_status(), state) as mgr:
        first = publish_scrape_jobs(
            mgr.charm.model, jobs(), charm_name="mesh-coordinator-k8s", unit_address=ADDRESS
        )
        again = publish_scrape_jobs(
            mgr.charm.model, jobs(), charm_name="mesh-coordinator-k8s", unit_address=ADDRESS
        )
        out = mgr.run()
    rel = out.get_relation(relation.id)
    assert (first, again) == (True, False)
    assert rel.local_unit_data["prometheus_scrape_unit_address"] == ADDRESS
    assert rel.local_unit_data["prometheus_scrape_unit_name"] == "coordinator/0"
    assert rel.local_unit_data["prometheus_scrape_unit_fqdn"] == ADDRESS
    if not leader:
        assert "scrape_jobs" not in rel.local_app_data
        return
    assert json.loads(rel.local_app_data["scrape_jobs"]) == [
        {"job_name": "nginx-exporter", "static_configs": [{"targets": ["*:9113"]}]}
    ]
    assert json.loads(rel.local_app_data["scrape_metadata"]) == {
        "model": "mymodel",
        "model_uuid": UUID,
        "application": "coordinator",
        "unit": "coordinator/0",
        "charm_name": "mesh-coordinator-k8s",
    }
    assert json.loads(rel.local_app_data["alert_rules"]) == {}


def test_publish_rewrites_only_changed_keys():
    before = provider_app_databag(
        jobs(),
        TopologyMetadata(
            model="mymodel",
            model_uuid=UUID,
            application="coordinator",
            unit="coordinator/0",
            charm_name="mesh-coordinator-k8s",
        ),
    )
    relation = testing.Relation(
        "metrics-endpoint",
        remote_app_name="prometheus",
        local_app_data={**before, "alert_rules": "{}"},
    )
    ctx = testing.Context(Charm, meta=META, app_name="coordinator")
    state = testing.State(relations={relation}, leader=True, model=MODEL)
    rules = {"groups": [{"name": "g", "rules": []}]}
    with ctx(ctx.on.update_status(), state) as mgr:
        changed = publish_scrape_jobs(
            mgr.charm.model,
            jobs(),
            charm_name="mesh-coordinator-k8s",
            unit_address=ADDRESS,
            alert_rules=rules,
        )
        out = mgr.run()
    assert changed
    app_data = out.get_relation(relation.id).local_app_data
    assert json.loads(app_data["alert_rules"]) == rules
    assert app_data["scrape_jobs"] == before["scrape_jobs"]


def test_no_relation_no_write():
    ctx = testing.Context(Charm, meta=META)
    with ctx(ctx.on.update_status(), testing.State(leader=True, model=MODEL)) as mgr:
        assert not publish_scrape_jobs(
            mgr.charm.model, jobs(), charm_name="c", unit_address=ADDRESS
        )
