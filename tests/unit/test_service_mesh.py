"""ServiceMeshConsumer: state transitions through ops.testing, with a tiny charm defined here."""

from __future__ import annotations

import json
import logging
from typing import Any

import ops
import pytest
from coordinated_mesh.mesh.consumer import ServiceMeshConsumer
from coordinated_mesh.mesh.policies import AppPolicy, Endpoint, Method, UnitPolicy
from hypothesis import given, settings
from hypothesis import strategies as st
from ops import testing

MODEL = "mymodel"
APP = "coord"
BEACON = "istio-beacon-k8s"

META: dict[str, Any] = {
    "name": APP,
    "requires": {
        "service-mesh": {"interface": "service_mesh", "limit": 1},
        "require-cmr-mesh": {"interface": "cross_model_mesh"},
    },
    "provides": {
        "provide-cmr-mesh": {"interface": "cross_model_mesh"},
        "metrics-endpoint": {"interface": "prometheus_scrape"},
        "api": {"interface": "http_api"},
    },
}

METRICS_PATH = "/proxy/worker/{*}/metrics"
POLICIES: list[AppPolicy | UnitPolicy] = [
    UnitPolicy(relation="metrics-endpoint", ports=[9113]),
    AppPolicy(
        relation="metrics-endpoint",
        endpoints=[Endpoint(ports=[8080], methods=[Method.get], paths=[METRICS_PATH])],
    ),
    AppPolicy(relation="api", endpoints=[Endpoint(ports=[8080])]),
]

VALID_LABELS = {
    "istio.io/use-waypoint": f"{MODEL}-{BEACON}-waypoint",
    "istio.io/dataplane-mode": "ambient",
    "istio.io/use-waypoint-namespace": MODEL,
}
VALID_PROVIDER_DATA = {"labels": json.dumps(VALID_LABELS), "mesh_type": '"istio"'}


class ConsumerCharm(ops.CharmBase):
    """A charm using the consumer standalone; update-status publishes twice, like a coordinator."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.mesh = ServiceMeshConsumer(self, policies=POLICIES)
        self.publish_results: list[bool] = []
        framework.observe(self.on.update_status, self._on_update_status)

    def _on_update_status(self, _event: ops.EventBase) -> None:
        self.publish_results = [self.mesh.publish_policies(), self.mesh.publish_policies()]


def _ctx() -> testing.Context[ConsumerCharm]:
    return testing.Context(ConsumerCharm, meta=META, app_name=APP)


def _mesh(data: dict[str, str] | None = None, **kwargs: Any) -> testing.Relation:
    return testing.Relation(
        "service-mesh", remote_app_name=BEACON, remote_app_data=data or {}, **kwargs
    )


def _state(*relations: testing.Relation, leader: bool = True) -> testing.State:
    return testing.State(leader=leader, relations=relations, model=testing.Model(name=MODEL))


def _charm(state: testing.State) -> ConsumerCharm:
    """The charm, as constructed for an update-status hook (before the hook runs)."""
    ctx = _ctx()
    with ctx(ctx.on.update_status(), state) as mgr:
        return mgr.charm


def _published(out: testing.State, mesh: testing.Relation) -> list[dict[str, Any]]:
    return json.loads(out.get_relation(mesh.id).local_app_data["policies"])


def _wire(
    source: str,
    target_type: str,
    endpoints: list[dict[str, Any]],
    *,
    namespace: str = MODEL,
) -> dict[str, Any]:
    return {
        "source_namespace": namespace,
        "source_app_name": source,
        "target_namespace": MODEL,
        "target_app_name": APP,
        "target_selector_labels": None,
        "target_service": None,
        "target_type": target_type,
        "endpoints": endpoints,
    }


def _endpoint(ports: list[int], methods: list[str] | None = None, paths: list[str] | None = None):
    return {"hosts": None, "ports": ports, "methods": methods, "paths": paths}


def _expected_for_prometheus(source: str, namespace: str = MODEL) -> list[dict[str, Any]]:
    return [
        _wire(source, "app", [_endpoint([8080], ["GET"], [METRICS_PATH])], namespace=namespace),
        _wire(source, "unit", [_endpoint([9113])], namespace=namespace),
    ]


def _sorted(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(policies, key=lambda p: json.dumps(p, sort_keys=True))


# --- reading the beacon's data --------------------------------------------------------------


def test_not_related():
    charm = _charm(_state())
    assert charm.mesh.enabled is False
    assert charm.mesh.ready is False
    assert charm.mesh.problem is None
    assert charm.mesh.labels() == {}
    assert charm.mesh.mesh_type() is None


def test_empty_provider_databag_is_not_ready_not_an_error(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="coordinated_mesh.mesh.consumer")
    charm = _charm(_state(_mesh()))
    for _ in range(3):  # read many times in one hook, logged once
        assert charm.mesh.enabled is True
        assert charm.mesh.ready is False
        assert charm.mesh.labels() == {}
        assert charm.mesh.mesh_type() is None
    problem = charm.mesh.problem
    assert problem is not None
    assert "'service-mesh'" in problem
    assert BEACON in problem
    assert "not published" in problem
    assert len([r for r in caplog.records if "not ready" in r.getMessage()]) == 1


def test_valid_provider_data():
    charm = _charm(_state(_mesh(VALID_PROVIDER_DATA)))
    assert charm.mesh.ready is True
    assert charm.mesh.problem is None
    assert charm.mesh.labels() == VALID_LABELS
    assert list(charm.mesh.labels()) == sorted(VALID_LABELS)  # deterministic order
    assert charm.mesh.mesh_type() == "istio"


def test_labels_are_a_copy():
    charm = _charm(_state(_mesh(VALID_PROVIDER_DATA)))
    charm.mesh.labels()["evil"] = "x"
    assert "evil" not in charm.mesh.labels()


def test_model_on_mesh_empty_labels_are_ready():
    charm = _charm(_state(_mesh({"labels": "{}", "mesh_type": '"istio"'})))
    assert charm.mesh.ready is True
    assert charm.mesh.labels() == {}
    assert charm.mesh.mesh_type() == "istio"


def test_a_beacon_label_on_jujus_pod_selector_is_invalid_data():
    labels = {**VALID_LABELS, "app.kubernetes.io/name": "someone-else"}
    charm = _charm(_state(_mesh({"labels": json.dumps(labels), "mesh_type": '"istio"'})))
    assert charm.mesh.ready is False
    assert charm.mesh.labels() == {}
    problem = charm.mesh.problem
    assert problem is not None
    assert "app.kubernetes.io/name" in problem
    assert "selector" in problem


def test_unknown_keys_are_ignored():
    data = {**VALID_PROVIDER_DATA, "future_key": '{"x": 1}', "not-even-json": "{{{"}
    charm = _charm(_state(_mesh(data)))
    assert charm.mesh.ready is True
    assert charm.mesh.labels() == VALID_LABELS


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({"labels": "{not json", "mesh_type": '"istio"'}, "labels", id="labels-json"),
        pytest.param({"labels": "{}", "mesh_type": "istio"}, "mesh_type", id="unquoted-type"),
        pytest.param({"labels": '["a"]', "mesh_type": '"istio"'}, "labels", id="labels-list"),
        pytest.param({"labels": '{"a": 1}', "mesh_type": '"istio"'}, "labels", id="label-int"),
        pytest.param({"labels": "{}", "mesh_type": '{"a": 1}'}, "mesh_type", id="type-object"),
        pytest.param({"labels": "{}", "mesh_type": '""'}, "mesh_type", id="type-empty"),
        pytest.param({"labels": "{}"}, "mesh_type", id="type-missing"),
        pytest.param({"mesh_type": '"istio"'}, "labels", id="labels-missing"),
        pytest.param({"labels": "null", "mesh_type": '"istio"'}, "labels", id="labels-null"),
        pytest.param({"labels": '{"bad key": "x"}', "mesh_type": '"istio"'}, "labels", id="key"),
        pytest.param(
            {"labels": json.dumps({"a": "v" * 64}), "mesh_type": '"istio"'}, "labels", id="long"
        ),
        pytest.param({"labels": '{"a": "b\\n"}', "mesh_type": '"istio"'}, "labels", id="newline"),
        pytest.param({"labels": "[" * 5000, "mesh_type": '"istio"'}, "labels", id="deep"),
    ],
)
def test_invalid_provider_data_is_not_ready(
    data: dict[str, str], key: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG, logger="coordinated_mesh.mesh.consumer")
    charm = _charm(_state(_mesh(data)))
    assert charm.mesh.enabled is True
    assert charm.mesh.ready is False
    assert charm.mesh.labels() == {}
    assert charm.mesh.mesh_type() is None
    problem = charm.mesh.problem
    assert problem is not None
    assert "'service-mesh'" in problem
    assert key in problem
    assert charm.mesh.problem == problem
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("coordinated_mesh.")
    ]
    assert len(warnings) == 1


def test_invalid_provider_data_does_not_fail_the_hook():
    bad = _mesh({"labels": "{not json", "mesh_type": '"istio"'})
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    ctx = _ctx()
    out = ctx.run(ctx.on.relation_changed(bad), _state(bad, metrics))
    # Policies are still published: what we allow does not depend on the beacon's data.
    assert _sorted(_published(out, bad)) == _expected_for_prometheus("prometheus")


def test_two_mesh_relations_are_a_problem_not_an_exception():
    one = _mesh(VALID_PROVIDER_DATA)
    two = testing.Relation(
        "service-mesh", remote_app_name="other-beacon", remote_app_data=VALID_PROVIDER_DATA
    )
    charm = _charm(_state(one, two))
    assert charm.mesh.enabled is True
    assert charm.mesh.ready is False
    assert charm.mesh.problem is not None
    assert "other-beacon" in charm.mesh.problem


@settings(max_examples=40)
@given(data=st.dictionaries(st.sampled_from(["labels", "mesh_type", "x"]), st.text(max_size=40)))
def test_any_provider_data_never_raises(data: dict[str, str]):
    charm = _charm(_state(_mesh(data)))
    assert charm.mesh.enabled is True
    assert charm.mesh.ready is (charm.mesh.problem is None)
    if not charm.mesh.ready:
        assert charm.mesh.labels() == {}


def test_readable_by_non_leaders():
    charm = _charm(_state(_mesh(VALID_PROVIDER_DATA), leader=False))
    assert charm.mesh.ready is True
    assert charm.mesh.labels() == VALID_LABELS


# --- policies -------------------------------------------------------------------------------


def test_leader_publishes_on_mesh_relation_created():
    mesh = _mesh()
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    api = testing.Relation("api", remote_app_name="grafana")
    ctx = _ctx()
    out = ctx.run(ctx.on.relation_created(mesh), _state(mesh, metrics, api))
    raw = out.get_relation(mesh.id).local_app_data["policies"]
    expected = _sorted(
        [*_expected_for_prometheus("prometheus"), _wire("grafana", "app", [_endpoint([8080])])]
    )
    assert json.loads(raw) == expected
    # Deterministic: the exact text is the canonical one, keys in contract order.
    assert raw == json.dumps(expected)
    assert list(json.loads(raw)[0]) == list(_wire("x", "app", []))
    assert out.get_relation(mesh.id).local_app_data.keys() == {"policies"}


def test_no_related_apps_publishes_an_empty_list():
    mesh = _mesh()
    ctx = _ctx()
    out = ctx.run(ctx.on.relation_created(mesh), _state(mesh))
    assert _published(out, mesh) == []


def test_policy_relation_events_republish():
    mesh = _mesh(local_app_data={"policies": "[]"})
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    ctx = _ctx()
    out = ctx.run(ctx.on.relation_created(metrics), _state(mesh, metrics))
    assert _sorted(_published(out, mesh)) == _expected_for_prometheus("prometheus")
    # The relation goes away: in relation-broken it is no longer listed, its policies go.
    out = ctx.run(ctx.on.relation_broken(metrics), out)
    assert _published(out, mesh) == []


def test_publish_writes_only_on_change_and_keeps_other_keys():
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    current = json.dumps(_sorted(_expected_for_prometheus("prometheus")))
    mesh = _mesh(VALID_PROVIDER_DATA, local_app_data={"policies": current, "other": "kept"})
    ctx = _ctx()
    with ctx(ctx.on.update_status(), _state(mesh, metrics)) as mgr:
        out = mgr.run()
        assert mgr.charm.publish_results == [False, False]
    assert out.get_relation(mesh.id).local_app_data == {"policies": current, "other": "kept"}


def test_publish_twice_in_a_hook_writes_once():
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    mesh = _mesh(local_app_data={"policies": "[]", "other": "kept"})
    ctx = _ctx()
    with ctx(ctx.on.update_status(), _state(mesh, metrics)) as mgr:
        out = mgr.run()
        assert mgr.charm.publish_results == [True, False]
    after = out.get_relation(mesh.id).local_app_data
    assert after["other"] == "kept"
    assert _sorted(json.loads(after["policies"])) == _expected_for_prometheus("prometheus")


@pytest.mark.parametrize(
    "event",
    ["update_status", "relation_changed", "relation_created", "leader_elected", "upgrade_charm"],
)
def test_non_leader_never_writes(event: str):
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    mesh = _mesh(VALID_PROVIDER_DATA, local_app_data={"policies": "[]"})
    cmr = testing.Relation("require-cmr-mesh", remote_app_name="server")
    state = _state(mesh, metrics, cmr, leader=False)
    ctx = _ctx()
    on = ctx.on
    hook = {
        "update_status": on.update_status(),
        "relation_changed": on.relation_changed(mesh),
        "relation_created": on.relation_created(cmr),
        "leader_elected": on.leader_elected(),
        "upgrade_charm": on.upgrade_charm(),
    }[event]
    with ctx(hook, state) as mgr:
        out = mgr.run()
        if event == "update_status":
            assert mgr.charm.publish_results == [False, False]
        assert mgr.charm.mesh.publish_cmr_data() is False
    assert out.get_relation(mesh.id).local_app_data == {"policies": "[]"}
    assert out.get_relation(cmr.id).local_app_data == {}


def test_mesh_relation_broken_writes_nothing():
    mesh = _mesh(VALID_PROVIDER_DATA, local_app_data={"policies": "[]"})
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    ctx = _ctx()
    with ctx(ctx.on.relation_broken(mesh), _state(mesh, metrics)) as mgr:
        assert mgr.charm.mesh.enabled is False  # the broken relation is gone in its own hook
        assert mgr.charm.mesh.problem is None
        out = mgr.run()
    assert out.get_relation(mesh.id).local_app_data == {"policies": "[]"}


def test_duplicate_declarations_give_one_policy():
    class DupCharm(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            self.mesh = ServiceMeshConsumer(self, policies=[*POLICIES, *reversed(POLICIES)])

    mesh = _mesh()
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    ctx = testing.Context(DupCharm, meta=META, app_name=APP)
    out = ctx.run(ctx.on.relation_created(mesh), _state(mesh, metrics))
    assert _published(out, mesh) == _sorted(_expected_for_prometheus("prometheus"))


def test_unit_policy_without_ports_allows_any_port():
    class AnyPortCharm(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            self.mesh = ServiceMeshConsumer(self, policies=[UnitPolicy(relation="api")])

    api = testing.Relation("api", remote_app_name="client")
    ctx = testing.Context(AnyPortCharm, meta=META, app_name=APP)
    with ctx(ctx.on.update_status(), _state(api)) as mgr:
        policies = mgr.charm.mesh.mesh_policies()
    assert [p.to_wire() for p in policies] == [_wire("client", "unit", [])]


# --- cross-model ----------------------------------------------------------------------------


def _cmr_data(app: str, model: str) -> dict[str, str]:
    return {"cmr_data": json.dumps({"app_name": app, "juju_model_name": model})}


def test_cross_model_sources_are_the_real_app_and_model():
    # "prom-saas" is the offer alias of prometheus in model cos; grafana is local.
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prom-saas")
    cmr = testing.Relation(
        "provide-cmr-mesh",
        remote_app_name="prom-saas",
        remote_app_data=_cmr_data("prometheus", "cos"),
    )
    api = testing.Relation("api", remote_app_name="grafana")
    mesh = _mesh(VALID_PROVIDER_DATA)
    ctx = _ctx()
    out = ctx.run(ctx.on.relation_changed(cmr), _state(mesh, metrics, cmr, api))
    assert _published(out, mesh) == _sorted(
        [
            *_expected_for_prometheus("prometheus", namespace="cos"),
            _wire("grafana", "app", [_endpoint([8080])]),
        ]
    )


def test_cmr_data_of_another_app_does_not_apply():
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    cmr = testing.Relation(
        "provide-cmr-mesh", remote_app_name="someone-else", remote_app_data=_cmr_data("x", "y")
    )
    charm = _charm(_state(metrics, cmr))
    wire = [p.to_wire() for p in charm.mesh.mesh_policies()]
    assert wire == _sorted(_expected_for_prometheus("prometheus"))


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        '{"app_name": "prometheus"}',
        '{"app_name": 3, "juju_model_name": "cos"}',
        '{"app_name": "Bad Name", "juju_model_name": "cos"}',
        '{"app_name": "prometheus", "juju_model_name": "../etc"}',
        '"a string"',
    ],
)
def test_invalid_cmr_data_falls_back_to_our_model(raw: str):
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prom-saas")
    cmr = testing.Relation(
        "provide-cmr-mesh", remote_app_name="prom-saas", remote_app_data={"cmr_data": raw}
    )
    mesh = _mesh(VALID_PROVIDER_DATA)
    ctx = _ctx()
    with ctx(ctx.on.relation_changed(cmr), _state(mesh, metrics, cmr)) as mgr:
        out = mgr.run()
        problems = mgr.charm.mesh.cross_model_problems
    assert len(problems) == 1
    assert "prom-saas" in problems[0]
    assert "'provide-cmr-mesh'" in problems[0]
    assert _published(out, mesh) == _sorted(_expected_for_prometheus("prom-saas"))
    assert mgr.charm.mesh.ready is True  # the rest keeps working


def test_leader_sends_cmr_data_on_require_relation_created():
    cmr = testing.Relation("require-cmr-mesh", remote_app_name="server")
    ctx = _ctx()
    out = ctx.run(ctx.on.relation_created(cmr), _state(cmr))
    raw = out.get_relation(cmr.id).local_app_data
    assert raw.keys() == {"cmr_data"}
    assert json.loads(raw["cmr_data"]) == {"app_name": APP, "juju_model_name": MODEL}


def test_cmr_data_is_written_once():
    cmr = testing.Relation("require-cmr-mesh", remote_app_name="server")
    ctx = _ctx()
    with ctx(ctx.on.relation_created(cmr), _state(cmr)) as mgr:
        out = mgr.run()
        assert mgr.charm.mesh.publish_cmr_data() is False  # already there
    with ctx(ctx.on.leader_elected(), out) as mgr:
        again = mgr.run()
        assert mgr.charm.mesh.publish_cmr_data() is False
    assert again.get_relation(cmr.id).local_app_data == out.get_relation(cmr.id).local_app_data


# --- declaration errors (the charm author's, so loud) ---------------------------------------


def test_policy_on_an_unknown_endpoint_fails_at_construction():
    class TypoCharm(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            ServiceMeshConsumer(self, policies=[UnitPolicy(relation="metrics-endpiont")])

    ctx = testing.Context(TypoCharm, meta=META, app_name=APP)
    with pytest.raises(testing.errors.UncaughtCharmError) as info:
        ctx.run(ctx.on.update_status(), _state())
    assert isinstance(info.value.__cause__, ValueError)
    assert "metrics-endpiont" in str(info.value.__cause__)


def test_missing_cross_model_endpoint_fails_at_construction():
    meta = {**META, "provides": {"metrics-endpoint": {"interface": "prometheus_scrape"}}}

    class NoCmrCharm(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            ServiceMeshConsumer(self, policies=[])

    ctx = testing.Context(NoCmrCharm, meta=meta, app_name=APP)
    with pytest.raises(testing.errors.UncaughtCharmError) as info:
        ctx.run(ctx.on.update_status(), _state())
    assert "provide-cmr-mesh" in str(info.value.__cause__)


def test_foreign_policy_type_is_rejected():
    class ForeignCharm(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            ServiceMeshConsumer(self, policies=[{"relation": "api"}])  # type: ignore[list-item]

    ctx = testing.Context(ForeignCharm, meta=META, app_name=APP)
    with pytest.raises(testing.errors.UncaughtCharmError) as info:
        ctx.run(ctx.on.update_status(), _state())
    assert isinstance(info.value.__cause__, TypeError)
