"""Our ServiceMeshConsumer against the real provider-side ``service_mesh`` library (PyPI).

``charmlibs.interfaces.service_mesh`` is what the ``istio-beacon-k8s`` charm runs. Each side runs
in its own ``ops.testing`` context; the databag one side writes is what the other side reads:

* our consumer publishes ``policies``; the real :class:`ServiceMeshProvider` parses them
  (``mesh_info()``) into exactly the policies we meant;
* the real provider publishes ``labels`` and ``mesh_type``; our consumer reads them;
* our resolution of declarations agrees with the real library's consumer for the same relations
  (the same policies, cross-model sources included) and our ``cmr_data`` is byte-identical.

The real library is a test-only dependency; nothing of it is used by ``lib/``.
"""

from __future__ import annotations

import json
from typing import Any

import charmlibs.interfaces.service_mesh as real
import ops
import pytest
from coordinated_mesh.mesh.consumer import ServiceMeshConsumer
from coordinated_mesh.mesh.policies import AppPolicy, Endpoint, MeshPolicy, Method, UnitPolicy
from hypothesis import given, settings
from hypothesis import strategies as st
from ops import testing

MODEL = "mymodel"
APP = "coord"
BEACON = "istio-beacon-k8s"
BEACON_LABELS = {
    "istio.io/dataplane-mode": "ambient",
    "istio.io/use-waypoint": f"{MODEL}-{BEACON}-waypoint",
    "istio.io/use-waypoint-namespace": MODEL,
}
POLICY_ENDPOINTS = ["metrics-endpoint", "grafana-source", "api"]

CONSUMER_META: dict[str, Any] = {
    "name": APP,
    "requires": {
        "service-mesh": {"interface": "service_mesh", "limit": 1},
        "require-cmr-mesh": {"interface": "cross_model_mesh"},
    },
    "provides": {
        "provide-cmr-mesh": {"interface": "cross_model_mesh"},
        **{name: {"interface": f"iface-{name}"} for name in POLICY_ENDPOINTS},
    },
}
PROVIDER_META: dict[str, Any] = {
    "name": BEACON,
    "provides": {"service-mesh": {"interface": "service_mesh"}},
}

# The coordinator's defaults plus charm policies, covering every shape the wire can carry.
POLICIES: list[AppPolicy | UnitPolicy] = [
    UnitPolicy(relation="metrics-endpoint", ports=[9113]),
    AppPolicy(
        relation="metrics-endpoint",
        endpoints=[
            Endpoint(ports=[8080], methods=[Method.get], paths=["/proxy/worker/{*}/metrics"])
        ],
    ),
    AppPolicy(relation="grafana-source", endpoints=[Endpoint(ports=[8080])]),
    AppPolicy(
        relation="api",
        endpoints=[
            Endpoint(hosts=["coord.mymodel.svc"], methods=[Method.post, Method.put]),
            Endpoint(),
        ],
        service="coord-api",
    ),
    UnitPolicy(relation="api"),
]


class OurConsumerCharm(ops.CharmBase):
    """A charm with our consumer and the policies class attribute (patched per test)."""

    policies: list[AppPolicy | UnitPolicy] = POLICIES

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.mesh = ServiceMeshConsumer(self, policies=self.policies)


class RealConsumerCharm(ops.CharmBase):
    """The same declarations through the real library's consumer (labels off: no Kubernetes)."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.mesh = real.ServiceMeshConsumer(
            self,
            policies=[_to_real(p) for p in OurConsumerCharm.policies],
            auto_join=False,
        )


class RealProviderCharm(ops.CharmBase):
    """The beacon's side: publishes labels and mesh type, parses the consumers' policies."""

    labels: dict[str, str] = BEACON_LABELS

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.mesh = real.ServiceMeshProvider(
            self, labels=self.labels, mesh_type=real.MeshType.istio
        )


def _to_real(policy: AppPolicy | UnitPolicy) -> Any:
    cls = real.UnitPolicy if isinstance(policy, UnitPolicy) else real.AppPolicy
    return cls.model_validate(policy.model_dump(mode="json"))


def _state(*relations: testing.Relation, leader: bool = True) -> testing.State:
    return testing.State(leader=leader, relations=relations, model=testing.Model(name=MODEL))


def _canonical(wire: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(p, sort_keys=True) for p in wire)


def _client_relations() -> list[testing.Relation]:
    """Local prometheus and grafana, and a cross-model Prometheus offered as ``prom-saas``."""
    return [
        testing.Relation("metrics-endpoint", remote_app_name="prometheus"),
        testing.Relation("metrics-endpoint", remote_app_name="prom-saas"),
        testing.Relation(
            "provide-cmr-mesh",
            remote_app_name="prom-saas",
            remote_app_data={
                "cmr_data": json.dumps({"app_name": "prometheus", "juju_model_name": "cos"})
            },
        ),
        testing.Relation("grafana-source", remote_app_name="grafana"),
        testing.Relation("api", remote_app_name="client"),
    ]


def _publish_ours(*relations: testing.Relation) -> tuple[str, list[MeshPolicy]]:
    """Run our consumer (leader, mesh relation-created); return its ``policies`` and models."""
    mesh = testing.Relation("service-mesh", remote_app_name=BEACON)
    ctx = testing.Context(OurConsumerCharm, meta=CONSUMER_META, app_name=APP)
    with ctx(ctx.on.relation_created(mesh), _state(mesh, *relations)) as mgr:
        out = mgr.run()
        meant = mgr.charm.mesh.mesh_policies()
    return out.get_relation(mesh.id).local_app_data["policies"], meant


def _provider_reads(policies: str) -> list[Any]:
    """What the real provider's ``mesh_info()`` makes of a consumer databag."""
    relation = testing.Relation(
        "service-mesh", remote_app_name=APP, remote_app_data={"policies": policies}
    )
    ctx = testing.Context(RealProviderCharm, meta=PROVIDER_META, app_name=BEACON)
    with ctx(ctx.on.update_status(), testing.State(leader=True, relations=[relation])) as mgr:
        return mgr.charm.mesh.mesh_info()


# --- our policies, read by the real provider ------------------------------------------------


def test_real_provider_reads_exactly_our_policies():
    published, meant = _publish_ours(*_client_relations())
    parsed = _provider_reads(published)
    assert [p.model_dump(mode="json") for p in parsed] == [p.to_wire() for p in meant]
    by_source = {
        (p.source_namespace, p.source_app_name, p.target_type.value, p.target_service)
        for p in parsed
    }
    assert by_source == {
        (MODEL, "prometheus", "unit", None),
        (MODEL, "prometheus", "app", None),
        ("cos", "prometheus", "unit", None),  # prom-saas: the real app and model
        ("cos", "prometheus", "app", None),
        (MODEL, "grafana", "app", None),
        (MODEL, "client", "app", "coord-api"),
        (MODEL, "client", "unit", None),
    }
    for p in parsed:
        assert (p.target_namespace, p.target_app_name) == (MODEL, APP)
        assert p.target_selector_labels is None
    unit_metrics = next(
        p for p in parsed if p.target_type.value == "unit" and p.source_namespace == "cos"
    )
    assert [e.model_dump(mode="json") for e in unit_metrics.endpoints] == [
        {"hosts": None, "ports": [9113], "methods": None, "paths": None}
    ]
    any_port = next(
        p for p in parsed if p.target_type.value == "unit" and p.source_app_name == "client"
    )
    assert any_port.endpoints == []
    api = next(p for p in parsed if p.target_service == "coord-api")
    assert [e.model_dump(mode="json") for e in api.endpoints] == [
        {"hosts": ["coord.mymodel.svc"], "ports": None, "methods": ["POST", "PUT"], "paths": None},
        {"hosts": None, "ports": None, "methods": None, "paths": None},
    ]


def test_real_provider_reads_an_empty_policy_list():
    published, meant = _publish_ours()
    assert meant == []
    assert _provider_reads(published) == []


NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
PORT_LISTS = st.none() | st.lists(st.integers(1, 65535), min_size=1, max_size=3)
ENDPOINTS = st.builds(
    Endpoint,
    hosts=st.none() | st.lists(NAMES, max_size=2),
    ports=PORT_LISTS,
    methods=st.none() | st.lists(st.sampled_from(list(Method)), max_size=3),
    paths=st.none() | st.lists(st.from_regex(r"/[a-z{}*/]{0,8}", fullmatch=True), max_size=2),
)
DECLARATIONS = st.lists(
    st.builds(
        AppPolicy,
        relation=st.sampled_from(POLICY_ENDPOINTS),
        endpoints=st.lists(ENDPOINTS, max_size=2),
        service=st.none() | NAMES,
    )
    | st.builds(UnitPolicy, relation=st.sampled_from(POLICY_ENDPOINTS), ports=PORT_LISTS),
    max_size=4,
)
REMOTES = st.lists(
    st.tuples(st.sampled_from(POLICY_ENDPOINTS), NAMES), max_size=4, unique_by=lambda t: t[1]
)


@settings(max_examples=25)
@given(declarations=DECLARATIONS, remotes=REMOTES)
def test_any_declarations_reach_the_real_provider_intact(
    declarations: list[AppPolicy | UnitPolicy], remotes: list[tuple[str, str]]
):
    relations = [testing.Relation(endpoint, remote_app_name=app) for endpoint, app in remotes]
    original = OurConsumerCharm.policies
    OurConsumerCharm.policies = declarations
    try:
        published, meant = _publish_ours(*relations)
    finally:
        OurConsumerCharm.policies = original
    parsed = _provider_reads(published)
    assert [p.model_dump(mode="json") for p in parsed] == [p.to_wire() for p in meant]


# --- our resolution agrees with the real library's consumer ----------------------------------


def test_same_policies_as_the_real_consumer_for_the_same_relations():
    relations = _client_relations()
    published, _ = _publish_ours(*relations)
    mesh = testing.Relation("service-mesh", remote_app_name=BEACON)
    ctx = testing.Context(RealConsumerCharm, meta=CONSUMER_META, app_name=APP)
    out = ctx.run(ctx.on.relation_created(mesh), _state(mesh, *relations))
    theirs = json.loads(out.get_relation(mesh.id).local_app_data["policies"])
    assert _canonical(json.loads(published)) == _canonical(theirs)


def test_same_cmr_data_as_the_real_consumer():
    results: list[dict[str, str]] = []
    for charm in (OurConsumerCharm, RealConsumerCharm):
        cmr = testing.Relation("require-cmr-mesh", remote_app_name="server")
        ctx = testing.Context(charm, meta=CONSUMER_META, app_name=APP)
        out = ctx.run(ctx.on.relation_created(cmr), _state(cmr))
        results.append(dict(out.get_relation(cmr.id).local_app_data))
    ours, theirs = results
    assert ours == theirs == {"cmr_data": json.dumps({"app_name": APP, "juju_model_name": MODEL})}


# --- the real provider's data, read by our consumer ------------------------------------------


def _provider_publishes(labels: dict[str, str]) -> dict[str, str]:
    relation = testing.Relation("service-mesh", remote_app_name=APP)
    original = RealProviderCharm.labels
    RealProviderCharm.labels = labels
    try:
        ctx = testing.Context(RealProviderCharm, meta=PROVIDER_META, app_name=BEACON)
        out = ctx.run(
            ctx.on.relation_created(relation), testing.State(leader=True, relations=[relation])
        )
    finally:
        RealProviderCharm.labels = original
    return dict(out.get_relation(relation.id).local_app_data)


@pytest.mark.parametrize(
    "labels", [BEACON_LABELS, {}], ids=["ambient-with-waypoint", "model-on-mesh"]
)
def test_our_consumer_reads_the_real_provider(labels: dict[str, str]):
    published = _provider_publishes(labels)
    assert set(published) == {"labels", "mesh_type"}
    mesh = testing.Relation("service-mesh", remote_app_name=BEACON, remote_app_data=published)
    ctx = testing.Context(OurConsumerCharm, meta=CONSUMER_META, app_name=APP)
    with ctx(ctx.on.relation_changed(mesh), _state(mesh, leader=False)) as mgr:
        consumer = mgr.charm.mesh
        assert consumer.ready is True
        assert consumer.problem is None
        assert consumer.labels() == labels
        assert consumer.mesh_type() == "istio" == real.MeshType.istio.value
        mgr.run()


def test_our_consumer_agrees_with_the_real_consumer_on_provider_data():
    published = _provider_publishes(BEACON_LABELS)
    mesh = testing.Relation("service-mesh", remote_app_name=BEACON, remote_app_data=published)
    seen: list[tuple[dict[str, str], bool]] = []
    for charm in (OurConsumerCharm, RealConsumerCharm):
        ctx = testing.Context(charm, meta=CONSUMER_META, app_name=APP)
        with ctx(ctx.on.update_status(), _state(mesh)) as mgr:
            mesh_type: object = mgr.charm.mesh.mesh_type()
            seen.append((dict(mgr.charm.mesh.labels()), mesh_type == "istio"))
    assert seen[0] == seen[1] == (BEACON_LABELS, True)
