"""grafana_datasource provider: metadata (leader), the datasource URL (every unit), nothing read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ops
import pytest
from coordinated_mesh.relations.grafana_source import (
    GrafanaSourceData,
    provider_app_databag,
    provider_unit_databag,
    publish_grafana_source,
)
from ops import testing

from tests.support.tls import make_ca

META = {"name": "coordinator", "provides": {"grafana-source": {"interface": "grafana_datasource"}}}
UUID = "12345678-1234-4234-8234-123456789abc"
MODEL = testing.Model("mymodel", uuid=UUID)
URL = "http://coordinator.mymodel.svc.cluster.local:8080/query"


class Charm(ops.CharmBase):
    pass


def _run(
    relation: testing.Relation, *, leader: bool, url: str | None, source_type: str = "prometheus"
) -> tuple[list[bool], testing.State]:
    ctx = testing.Context(Charm, meta=META, app_name="coordinator")
    state = testing.State(relations={relation}, leader=leader, model=MODEL)
    with ctx(ctx.on.update_status(), state) as mgr:
        model = mgr.charm.model
        changed = [
            publish_grafana_source(model, url=url, source_type=source_type) for _ in range(2)
        ]
        out = mgr.run()
    return changed, out


def test_pure_databags():
    data = GrafanaSourceData(model="m", model_uuid=UUID, application="a", type="prometheus")
    assert provider_app_databag(data) == {
        "grafana_source_data": json.dumps(
            {"application": "a", "model": "m", "model_uuid": UUID, "type": "prometheus"},
            sort_keys=True,
        )
    }
    assert provider_unit_databag(URL) == {"grafana_source_host": URL}
    assert provider_unit_databag(None) == {"grafana_source_host": None}  # removed: Juju's ""


@pytest.mark.parametrize("url", ["coordinator:8080/query", "http://a/b;c", "http://a/$x", ""])
def test_an_unsafe_url_is_a_charm_error(url: str):
    with pytest.raises(ValueError):
        provider_unit_databag(url)


def test_leader_publishes_metadata_and_url_once():
    relation = testing.Relation("grafana-source", remote_app_name="grafana")
    changed, out = _run(relation, leader=True, url=URL)
    assert changed == [True, False]  # only what differs is written
    rel = out.get_relation(relation.id)
    assert json.loads(rel.local_app_data["grafana_source_data"]) == {
        "model": "mymodel",
        "model_uuid": UUID,
        "application": "coordinator",
        "type": "prometheus",
    }
    assert rel.local_unit_data["grafana_source_host"] == URL  # a plain string, not JSON


def test_the_empty_value_is_no_key_in_juju():
    """Why "no datasource" is written as a removal: ops (like Juju) keeps "" as no key."""
    relation = testing.Relation("grafana-source", remote_app_name="grafana")
    ctx = testing.Context(Charm, meta=META, app_name="coordinator")
    with ctx(ctx.on.update_status(), testing.State(relations={relation}, model=MODEL)) as mgr:
        rel = mgr.charm.model.get_relation("grafana-source")
        assert rel is not None
        rel.data[mgr.charm.unit]["grafana_source_host"] = ""
        assert "grafana_source_host" not in rel.data[mgr.charm.unit]


def test_non_leader_publishes_only_its_url():
    relation = testing.Relation("grafana-source", remote_app_name="grafana")
    changed, out = _run(relation, leader=False, url=URL)
    assert changed == [True, False]
    rel = out.get_relation(relation.id)
    assert dict(rel.local_app_data) == {}
    assert rel.local_unit_data["grafana_source_host"] == URL


def test_no_url_withdraws_the_host_once():
    """No datasource: the empty value, which Juju keeps as no key (Grafana skips the unit)."""
    relation = testing.Relation(
        "grafana-source", remote_app_name="grafana", local_unit_data={"grafana_source_host": URL}
    )
    changed, out = _run(relation, leader=True, url=None, source_type="loki")
    assert changed == [True, False]
    rel = out.get_relation(relation.id)
    assert "grafana_source_host" not in rel.local_unit_data
    assert json.loads(rel.local_app_data["grafana_source_data"])["type"] == "loki"


def test_what_grafana_writes_back_is_not_read():
    """Grafana's uids (or anything else, however broken) cannot affect what we publish."""
    garbage: dict[str, Any] = {
        "grafana_uid": "\x00" * 10,
        "datasource_uids": "{not json",
        "grafana_base_url": "javascript:alert(1)",
    }
    relation = testing.Relation(
        "grafana-source",
        remote_app_name="grafana",
        remote_app_data=garbage,
        remote_units_data={0: {"grafana_source_host": "evil"}},
    )
    _, out = _run(relation, leader=True, url=URL)
    assert out.get_relation(relation.id).local_unit_data["grafana_source_host"] == URL


def test_several_grafanas_get_the_same_datasource():
    relations = [testing.Relation("grafana-source", remote_app_name=name) for name in ("g1", "g2")]
    ctx = testing.Context(Charm, meta=META, app_name="coordinator")
    state = testing.State(relations=set(relations), leader=True, model=MODEL)
    with ctx(ctx.on.update_status(), state) as mgr:
        publish_grafana_source(mgr.charm.model, url=URL, source_type="prometheus")
        out = mgr.run()
    published = [out.get_relation(r.id).local_unit_data["grafana_source_host"] for r in relations]
    assert published == [URL, URL]
    apps = {out.get_relation(r.id).local_app_data["grafana_source_data"] for r in relations}
    assert len(apps) == 1


def test_an_invalid_datasource_type_is_a_charm_error():
    relation = testing.Relation("grafana-source", remote_app_name="grafana")
    with pytest.raises(ValueError, match="invalid Grafana datasource"):
        _run(relation, leader=True, url=URL, source_type="Not A Type")


def test_an_https_datasource_carries_its_ca_for_grafana(tmp_path: Path):
    """grafana-k8s provisions ``extra_fields`` as jsonData, ``secure_extra_fields`` as
    secureJsonData (canonical/grafana-k8s-operator ``src/grafana_config.py``)."""
    ca = make_ca(tmp_path).pem
    relation = testing.Relation("grafana-source", remote_app_name="grafana")
    ctx = testing.Context(Charm, meta=META, app_name="coordinator")
    state = testing.State(relations={relation}, leader=True, model=MODEL)
    https = URL.replace("http://", "https://").replace(":8080", ":8443")
    with ctx(ctx.on.update_status(), state) as mgr:
        assert publish_grafana_source(
            mgr.charm.model, url=https, source_type="prometheus", ca_cert=ca
        )
        out = mgr.run()
    rel = out.get_relation(relation.id)
    data = json.loads(rel.local_app_data["grafana_source_data"])
    assert data["extra_fields"] == {"tlsAuthWithCACert": True}
    assert data["secure_extra_fields"] == {"tlsCACert": ca}
    assert rel.local_unit_data["grafana_source_host"] == https
