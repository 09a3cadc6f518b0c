"""The coordinator's telemetry relations under ``ops.testing``, and fuzzed relation data.

Each telemetry relation present and absent: what reaches nginx, the workers (proxied URLs in the
cluster databag) and the backends (scrape jobs, Loki metadata, tracing requests). Then relation
data from hypothesis: no hook ever raises and every rendered nginx configuration passes the real
``nginx -t``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from ops import testing

from tests.support.coordinator import (
    APP,
    MODEL,
    FakeKubernetes,
    app_data,
    check_nginx,
    loki_relation,
    make_context,
    mesh_relation,
    metrics_relation,
    nginx_config,
    relation,
    remote_write_relation,
    state,
    tracing_relation,
    worker_relation,
)

Ctx = testing.Context[Any]
PROXY = f"http://{APP}.{MODEL.name}.svc.cluster.local:8080"


def run(ctx: Ctx, st_: testing.State) -> tuple[testing.State, str]:
    out = ctx.run(ctx.on.config_changed(), st_)
    config = nginx_config(ctx, out)
    assert config is not None
    check_nginx(config)
    return out, config


def cluster_data(out: testing.State) -> dict[str, Any]:
    (data,) = app_data(out)
    return {k: json.loads(v) for k, v in data.items()}


# --- Each relation, present and absent -------------------------------------------------------


@pytest.mark.usefixtures("kube")
def test_no_telemetry_relations_nothing_proxied(ctx: Ctx):
    out, config = run(ctx, state(worker_relation("w1")))
    data = cluster_data(out)
    assert data["loki_endpoints"] == {}
    assert data["remote_write_endpoints"] == []
    assert data["charm_tracing_receivers"] == {}
    assert data["workload_tracing_receivers"] == {}
    assert "/proxy/loki/" not in config
    assert "/proxy/remote-write/" not in config
    assert "tracing" not in config


@pytest.mark.usefixtures("kube")
def test_logging(ctx: Ctx):
    out, config = run(ctx, state(worker_relation("w1"), loki_relation(2)))
    assert cluster_data(out)["loki_endpoints"] == {
        "loki/0": f"{PROXY}/proxy/loki/loki-0/push",
        "loki/1": f"{PROXY}/proxy/loki/loki-1/push",
    }
    assert "location = /proxy/loki/loki-1/push" in config
    # The reference charm's nginx 1.28 pools connections to a re-resolved name.
    block = "http_loki-1.loki-endpoints.cos.svc.cluster.local_3100"
    assert f"set $upstream http://{block}/loki/api/v1/push;" in config
    assert "server loki-1.loki-endpoints.cos.svc.cluster.local:3100 resolve;" in config
    metadata = json.loads(relation(out, "logging").local_app_data["metadata"])
    assert metadata == {
        "model": MODEL.name,
        "model_uuid": MODEL.uuid,
        "application": APP,
        "unit": f"{APP}/0",
        "charm_name": "mesh-coordinator-k8s",
    }


@pytest.mark.usefixtures("kube")
def test_remote_write(ctx: Ctx):
    out, config = run(ctx, state(worker_relation("w1"), remote_write_relation()))
    assert cluster_data(out)["remote_write_endpoints"] == [
        {"url": f"{PROXY}/proxy/remote-write/prometheus-0/write"}
    ]
    block = "http_prometheus-0.prometheus-endpoints.cos.svc.cluster.local_9090"
    assert f"set $upstream http://{block}/api/v1/write;" in config
    assert "server prometheus-0.prometheus-endpoints.cos.svc.cluster.local:9090 resolve;" in config


@pytest.mark.usefixtures("kube")
def test_tracing_requests_and_proxies_http_and_grpc_receivers(ctx: Ctx):
    out, config = run(
        ctx,
        state(
            worker_relation("w1"),
            tracing_relation("charm-tracing"),
            tracing_relation("workload-tracing"),
        ),
    )
    data = cluster_data(out)
    # Charm traces: OTLP/HTTP only (what ops sends). Workload traces: OTLP gRPC as well, on the
    # charm's gRPC port of the coordinator's Service (Prometheus sends gRPC to host:port).
    assert data["charm_tracing_receivers"] == {
        "otlp_http": f"{PROXY}/proxy/charm-tracing/otlp_http"
    }
    assert data["workload_tracing_receivers"] == {
        "otlp_grpc": f"{APP}.{MODEL.name}.svc.cluster.local:4317",
        "otlp_http": f"{PROXY}/proxy/workload-tracing/otlp_http",
    }
    requested = json.loads(relation(out, "charm-tracing").local_app_data["receivers"])
    assert requested == ["otlp_http"]
    requested = json.loads(relation(out, "workload-tracing").local_app_data["receivers"])
    assert requested == ["otlp_grpc", "otlp_http"]
    assert "location /proxy/charm-tracing/otlp_http/" in config
    assert "location /opentelemetry.proto.collector.trace.v1.TraceService/" in config
    assert "set $grpc_upstream grpc://grpc_tempo.cos.svc.cluster.local_4317;" in config
    assert "server tempo.cos.svc.cluster.local:4317 resolve;" in config


@pytest.mark.usefixtures("kube")
def test_scrape_jobs_for_exporter_and_each_worker(ctx: Ctx):
    out, _ = run(ctx, state(worker_relation("w1", 2), metrics_relation()))
    rel = relation(out, "metrics-endpoint")
    jobs = json.loads(rel.local_app_data["scrape_jobs"])
    assert [j["job_name"] for j in jobs] == ["nginx-exporter", "workers-w1"]
    assert jobs[0]["static_configs"] == [{"targets": ["*:9113"]}]
    assert jobs[1]["static_configs"] == [{"targets": ["w1-0:8080", "w1-1:8080"]}]
    service = f"{APP}.{MODEL.name}.svc.cluster.local:8080"
    assert {"target_label": "__address__", "replacement": service} in jobs[1]["relabel_configs"]
    assert {"target_label": "juju_application", "replacement": "w1"} in jobs[1]["relabel_configs"]
    assert rel.local_unit_data["prometheus_scrape_unit_address"] == (
        f"{APP}-0.{APP}-endpoints.{MODEL.name}.svc.cluster.local"
    )


def test_non_leader_writes_only_its_own_scrape_address(ctx: Ctx, kube: FakeKubernetes):
    rels = (
        worker_relation("w1"),
        metrics_relation(),
        loki_relation(),
        tracing_relation("charm-tracing"),
        mesh_relation(),
    )
    out, config = run(ctx, state(*rels, leader=False))
    assert kube.calls == []
    for rel in out.relations:
        assert dict(rel.local_app_data) == {}, rel.endpoint
    assert "prometheus_scrape_unit_address" in relation(out, "metrics-endpoint").local_unit_data
    # ... but it proxies like the leader does.
    assert "/proxy/loki/loki-0/push" in config
    assert "/proxy/charm-tracing/otlp_http/" in config


@pytest.mark.usefixtures("kube")
def test_invalid_loki_unit_names_the_relation_and_the_rest_works(ctx: Ctx):
    bad = testing.Relation(
        "logging",
        remote_app_name="loki",
        remote_units_data={
            0: {"endpoint": json.dumps({"url": "http://loki-0.cos.svc:3100/loki/api/v1/push"})},
            1: {"endpoint": json.dumps({"url": "http://evil;host/x"})},
        },
    )
    out, config = run(ctx, state(worker_relation("w1"), bad))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "logging" in out.unit_status.message
    assert "loki/1" in out.unit_status.message
    assert cluster_data(out)["loki_endpoints"] == {"loki/0": f"{PROXY}/proxy/loki/loki-0/push"}
    assert "evil" not in config
    assert "/proxy/worker/w1-0/metrics" in config


@pytest.mark.usefixtures("kube")
def test_relations_removed_withdraw_the_urls(ctx: Ctx):
    out, _ = run(ctx, state(worker_relation("w1"), loki_relation(), remote_write_relation()))
    assert cluster_data(out)["loki_endpoints"]
    (cluster,) = [r for r in out.relations if r.endpoint == "cluster"]
    out, config = run(
        ctx,
        testing.State(leader=True, model=MODEL, relations=[cluster], containers=out.containers),
    )
    data = cluster_data(out)
    assert data["loki_endpoints"] == {}
    assert data["remote_write_endpoints"] == []
    assert "/proxy/loki/" not in config


# --- Fuzzed relation data ---------------------------------------------------------------------

_text = st.text(max_size=40)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_json_text = _json_value.map(json.dumps)
_url = st.one_of(
    st.builds(
        "http://{}:{}/{}".format,
        st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True),
        st.integers(0, 70000),
        st.from_regex(r"[A-Za-z0-9._~/;{}$ -]{0,20}", fullmatch=True),
    ),
    _text,
)
_value = st.one_of(_json_text, _text, _url.map(lambda u: json.dumps({"url": u})))
_databag = st.dictionaries(
    st.sampled_from(
        [
            "juju_topology",
            "address",
            "metrics_endpoint",
            "endpoint",
            "remote_write",
            "receivers",
            "labels",
            "mesh_type",
        ]
    ),
    _value,
    max_size=4,
)
_hostname = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}", fullmatch=True
)
_worker_bag = st.fixed_dictionaries(
    {
        # None: the topology the unit must send (its own name); otherwise anything.
        "juju_topology": st.one_of(
            st.none(),
            _json_text,
            st.sampled_from(["w1/0", "w2/0", "W1/0", "w1/x"]).map(
                lambda unit: json.dumps(
                    {"application": "w1", "unit": unit, "charm_name": "mesh-worker-k8s"}
                )
            ),
        ),
        "address": st.one_of(
            _hostname.map(json.dumps),
            _json_text,
            st.from_regex(r"[a-z0-9.;{} -]{0,30}", fullmatch=True).map(json.dumps),
        ),
        "metrics_endpoint": st.one_of(
            st.builds(
                lambda port, path: json.dumps({"port": port, "path": path}),
                st.integers(-5, 70000),
                st.one_of(
                    st.just("/metrics"),
                    st.from_regex(r"/[A-Za-z0-9._~/;{}$ -]{0,20}", fullmatch=True),
                ),
            ),
            _json_text,
        ),
    }
)


def _worker_databag(index: int, bag: dict[str, str | None]) -> dict[str, str]:
    topology = bag["juju_topology"] or json.dumps(
        {"application": "w1", "unit": f"w1/{index}", "charm_name": "mesh-worker-k8s"}
    )
    return {k: v for k, v in {**bag, "juju_topology": topology}.items() if v is not None}


_receivers = st.lists(
    st.fixed_dictionaries(
        {
            "protocol": st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["otlp_http", "otlp_grpc", "zipkin", "bogus"]),
                    "type": st.sampled_from(["http", "grpc", "x"]),
                }
            ),
            "url": _url,
        }
    ),
    max_size=3,
).map(json.dumps)


@given(
    worker_bags=st.lists(_worker_bag, min_size=1, max_size=3),
    loki_bags=st.lists(_databag, max_size=2),
    rw_bags=st.lists(_databag, max_size=2),
    tracing_receivers=st.one_of(_receivers, _text),
    mesh_bag=_databag,
    grafana_bag=_databag,
    leader=st.booleans(),
)
def test_fuzzed_relation_data_never_raises_and_nginx_accepts(
    worker_bags: list[dict[str, str | None]],
    loki_bags: list[dict[str, str]],
    rw_bags: list[dict[str, str]],
    tracing_receivers: str,
    mesh_bag: dict[str, str],
    grafana_bag: dict[str, str],
    leader: bool,
):
    relations: list[testing.RelationBase] = [
        testing.Relation(
            "cluster",
            remote_app_name="w1",
            remote_units_data={i: _worker_databag(i, bag) for i, bag in enumerate(worker_bags)},
        ),
        testing.Relation("service-mesh", remote_app_name="beacon", remote_app_data=mesh_bag),
        testing.Relation("metrics-endpoint", remote_app_name="prometheus"),
        testing.Relation(
            "grafana-source",
            remote_app_name="grafana",
            remote_app_data=grafana_bag,
            remote_units_data={0: grafana_bag},
        ),
        testing.Relation(
            "workload-tracing",
            remote_app_name="tempo",
            remote_app_data={"receivers": tracing_receivers},
        ),
    ]
    if loki_bags:
        relations.append(
            testing.Relation(
                "logging", remote_app_name="loki", remote_units_data=dict(enumerate(loki_bags))
            )
        )
    if rw_bags:
        relations.append(
            testing.Relation(
                "send-remote-write",
                remote_app_name="prom",
                remote_units_data=dict(enumerate(rw_bags)),
            )
        )
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as tmp:
        kube = FakeKubernetes()
        ctx = make_context(mp, Path(tmp), kubernetes=kube)
        out = ctx.run(ctx.on.update_status(), state(*relations, leader=leader))
        config = nginx_config(ctx, out)
    assert config is not None
    check_nginx(config)
    event("proxy routes rendered" if "location = /proxy/" in config else "no proxy route")
    assert out.unit_status.name in {"active", "blocked", "waiting"}
    if not leader:
        assert kube.calls == []
    # The datasource is offered exactly when nginx routes queries to some worker.
    (source,) = [r for r in out.relations if r.endpoint == "grafana-source"]
    host = source.local_unit_data.get("grafana_source_host")
    assert host == (f"{PROXY}/query" if "location /query/ {" in config else None)
