"""Fuzz every relation field both charms read: no hook crashes, nothing unsafe reaches Juju.

For each field, hypothesis draws values (any JSON document with hostile strings and huge
integers, text that is not JSON, and a valid value with its strings mutated) and runs a whole
hook of the charm under ``ops.testing`` with that value in the remote databag. The oracle:

* no exception escapes the hook (``ops.testing`` re-raises any);
* everything sent to ``juju-log``, ``status-set`` (and the action tools) is a valid command-line
  argument for Juju's hook tools (:mod:`tests.support.hook_tools`) and has no control, format
  or bidi characters, and statuses are at most 250 characters;
* every distinct nginx configuration the coordinator rendered passes the real ``nginx -t``.

The ``fuzz`` hypothesis profile (``tox -e fuzz``, in CI) runs 1,000 examples per field; other
profiles run fewer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from coordinated_mesh.relations.cluster import CoordinatorAppData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ops import testing

from tests.support.coordinator import (
    MESH_LABELS,
    MODEL,
    FakeKubernetes,
    check_all_nginx,
    make_context,
    mesh_relation,
    worker_unit_data,
)
from tests.support.coordinator import containers as coordinator_containers
from tests.support.hook_tools import enforce_hook_tool_arguments, is_display_safe
from tests.support.worker import FakeLabels, worker_context

# --- Values ---------------------------------------------------------------------------------

SPECIAL_TEXT = [
    "\0",
    "\u202e",
    "\u2066x\u2069",
    "\x1b[31m",
    "\ud800",
    "\n",
    "\r\n",
    "%2F..%2F",
    "/../",
    "$host",
    "x; include /etc/passwd;",
    "a}\nserver { listen 1;",
    "127.0.0.1",
    "localhost",
    "169.254.169.254",
    "kubernetes.default.svc",
    "coord.mymodel.svc.cluster.local",
    "app.kubernetes.io/name",
    "x" * 300,
]
text = st.one_of(st.text(max_size=30), st.sampled_from(SPECIAL_TEXT))
# Drawn as exponents: a strategy's repr may not hold an integer beyond Python's str limit.
huge_ints = st.sampled_from([5000, -4400, 64, 63]).map(
    lambda e: 10**e if e > 100 else -(10**-e) if e < 0 else 2**e
)
leaf = st.one_of(st.none(), st.booleans(), st.integers(), huge_ints, st.floats(), text)
json_documents = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=10,
)


def _dumps(value: Any) -> str:
    import sys

    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # write integers of any length: the reader must cope
    try:
        return json.dumps(value, allow_nan=True)
    finally:
        sys.set_int_max_str_digits(limit)


def _mutated(template: Any) -> st.SearchStrategy[Any]:
    """``template`` with each string possibly replaced, cut or spliced with hostile text."""
    if isinstance(template, str):
        at = st.integers(0, len(template))
        return st.one_of(
            st.just(template),
            text,
            st.tuples(at, text).map(lambda t: template[: t[0]] + t[1] + template[t[0] :]),
            at.map(lambda i: template[:i]),
        )
    if isinstance(template, dict):
        fixed = st.fixed_dictionaries({k: _mutated(v) for k, v in template.items()})  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        extra = st.dictionaries(text, json_documents, max_size=2)
        return st.tuples(fixed, extra).map(lambda t: {**t[1], **t[0]})
    if isinstance(template, list):
        return st.tuples(*(_mutated(v) for v in template)).map(list)  # pyright: ignore[reportUnknownArgumentType, reportUnknownVariableType]
    return st.one_of(st.just(template), leaf)


def values_for(template: Any) -> st.SearchStrategy[str]:
    """Databag values (text) for a field whose valid value looks like ``template``."""
    return st.one_of(
        _mutated(template).map(_dumps),
        json_documents.map(_dumps),
        st.text(max_size=60),
        st.sampled_from(["", "{", "[" * 3000, "1" * 5000, '"\\u0000"', '{"a": 1e999}']),
    )


# --- Oracle ---------------------------------------------------------------------------------


def _check_hook_tool_texts(ctx: testing.Context[Any], out: testing.State, logged: int) -> None:
    for line in ctx.juju_log[logged:]:
        assert is_display_safe(line.message, multiline=True), line
    for status in (out.unit_status, out.app_status):
        assert is_display_safe(status.message) and len(status.message) <= 250, status


# --- The coordinator ------------------------------------------------------------------------

WORKER = worker_unit_data("worker", 0)
LOKI_URL = "http://loki-0.loki-endpoints.cos.svc.cluster.local:3100/loki/api/v1/push"
RW_URL = "http://prometheus-0.prometheus-endpoints.cos.svc.cluster.local:9090/api/v1/write"
RECEIVERS = [
    {"protocol": {"name": "otlp_http", "type": "http"}, "url": "http://tempo.cos.svc:4318"},
    {"protocol": {"name": "otlp_grpc", "type": "grpc"}, "url": "tempo.cos.svc:4317"},
]

RelationFactory = Callable[[str], testing.RelationBase]


def _cluster_unit(key: str) -> RelationFactory:
    def make(value: str) -> testing.RelationBase:
        return testing.Relation(
            "cluster",
            remote_app_name="worker",
            remote_app_data={"role": json.dumps("all")},
            remote_units_data={0: {**WORKER, key: value}, 1: worker_unit_data("worker", 1)},
        )

    return make


def _app(endpoint: str, key: str, remote: str, base: dict[str, str]) -> RelationFactory:
    return lambda value: testing.Relation(
        endpoint, remote_app_name=remote, remote_app_data={**base, key: value}
    )


def _unit(endpoint: str, key: str, remote: str) -> RelationFactory:
    return lambda value: testing.Relation(
        endpoint, remote_app_name=remote, remote_units_data={0: {key: value}}
    )


COORDINATOR_FIELDS: dict[str, tuple[RelationFactory, Any]] = {
    "cluster/unit/juju_topology": (
        _cluster_unit("juju_topology"),
        json.loads(WORKER["juju_topology"]),
    ),
    "cluster/unit/address": (_cluster_unit("address"), json.loads(WORKER["address"])),
    "cluster/unit/metrics_endpoint": (
        _cluster_unit("metrics_endpoint"),
        json.loads(WORKER["metrics_endpoint"]),
    ),
    "cluster/app/role": (_app("cluster", "role", "worker", {}), "all"),
    "service-mesh/labels": (
        _app("service-mesh", "labels", "beacon", {"mesh_type": json.dumps("istio")}),
        MESH_LABELS,
    ),
    "service-mesh/mesh_type": (
        _app("service-mesh", "mesh_type", "beacon", {"labels": json.dumps(MESH_LABELS)}),
        "istio",
    ),
    "provide-cmr-mesh/cmr_data": (
        _app("provide-cmr-mesh", "cmr_data", "client", {}),
        {"app_name": "grafana", "juju_model_name": "cos"},
    ),
    "logging/unit/endpoint": (_unit("logging", "endpoint", "loki"), {"url": LOKI_URL}),
    "send-remote-write/unit/remote_write": (
        _unit("send-remote-write", "remote_write", "prometheus"),
        {"url": RW_URL},
    ),
    "charm-tracing/receivers": (_app("charm-tracing", "receivers", "tempo", {}), RECEIVERS),
    "workload-tracing/receivers": (_app("workload-tracing", "receivers", "tempo", {}), RECEIVERS),
}


@pytest.mark.parametrize("field", sorted(COORDINATOR_FIELDS))
def test_coordinator_hooks_survive_any_value(
    field: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    rendered: list[str] = []
    ctx = make_context(monkeypatch, tmp_path, kubernetes=FakeKubernetes(), rendered=rendered)
    enforce_hook_tool_arguments(monkeypatch)
    make_relation, template = COORDINATOR_FIELDS[field]
    others = [r for r in (_cluster_unit("address")(WORKER["address"]),) if "cluster" not in field]

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(value=values_for(template))
    def run(value: str) -> None:
        relations = [make_relation(value), *others]
        if "service-mesh" not in field:
            relations.append(mesh_relation())
        state = testing.State(
            leader=True,
            model=MODEL,
            relations=relations,
            containers=coordinator_containers(),
        )
        logged = len(ctx.juju_log)
        out = ctx.run(ctx.on.config_changed(), state)
        _check_hook_tool_texts(ctx, out, logged)

    run()
    check_all_nginx(rendered)


# --- The worker -----------------------------------------------------------------------------

PROXY = "http://coord.mymodel.svc.cluster.local:8080"
COORDINATOR_DATA = CoordinatorAppData(
    worker_labels={"app.kubernetes.io/part-of": "coord", **MESH_LABELS},
    worker_config="global:\n  scrape_interval: 1m\n",
    loki_endpoints={"loki/0": f"{PROXY}/proxy/loki/loki-0/push"},
    charm_tracing_receivers={"otlp_http": f"{PROXY}/proxy/charm-tracing/otlp_http"},
    workload_tracing_receivers={"otlp_grpc": "coord.mymodel.svc.cluster.local:4317"},
    remote_write_endpoints=[{"url": f"{PROXY}/proxy/remote-write/prometheus-0/write"}],  # pyright: ignore[reportArgumentType]
).dump()
WORKER_FIELDS = sorted(
    field.alias or name for name, field in CoordinatorAppData.model_fields.items()
)


@pytest.mark.parametrize("field", WORKER_FIELDS)
def test_worker_hooks_survive_any_value(
    field: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    enforce_hook_tool_arguments(monkeypatch)
    ctx = worker_context(FakeLabels(), app_name="worker")
    etc = tmp_path / "etc-prometheus"
    etc.mkdir()
    template = json.loads(COORDINATOR_DATA[field]) if field in COORDINATOR_DATA else "x"

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(value=values_for(template))
    def run(value: str) -> None:
        state = testing.State(
            leader=True,
            model=MODEL,
            config={"role": "all"},
            relations=[
                testing.Relation(
                    "cluster",
                    remote_app_name="coord",
                    remote_app_data={**COORDINATOR_DATA, field: value},
                )
            ],
            containers=[
                testing.Container(
                    "prometheus",
                    can_connect=True,
                    mounts={"config": testing.Mount(location="/etc/prometheus", source=etc)},
                )
            ],
        )
        logged = len(ctx.juju_log)
        out = ctx.run(ctx.on.config_changed(), state)
        _check_hook_tool_texts(ctx, out, logged)
        assert out.unit_status.name in {"active", "waiting", "blocked"}, out.unit_status

    run()
