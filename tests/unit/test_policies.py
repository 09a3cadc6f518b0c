"""Policy models and their resolution: the validation rules and the wire form of the contract."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from coordinated_mesh.mesh.policies import (
    AppPolicy,
    Endpoint,
    MeshPolicy,
    Method,
    PolicyTargetType,
    RelationPeer,
    UnitPolicy,
    build_mesh_policies,
    policies_to_json,
)
from hypothesis import given
from hypothesis import strategies as st

WIRE_KEYS = [
    "source_namespace",
    "source_app_name",
    "target_namespace",
    "target_app_name",
    "target_selector_labels",
    "target_service",
    "target_type",
    "endpoints",
]
ENDPOINT_KEYS = ["hosts", "ports", "methods", "paths"]

# --- strategies -----------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)
RELATIONS = st.sampled_from(["metrics-endpoint", "api", "grafana-source", "tracing"])
PORTS = st.integers(min_value=1, max_value=65535)
PORT_LISTS = st.none() | st.lists(PORTS, min_size=1, max_size=3)
ENDPOINTS = st.builds(
    Endpoint,
    hosts=st.none() | st.lists(st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8})?", fullmatch=True)),
    ports=PORT_LISTS,
    methods=st.none() | st.lists(st.sampled_from(list(Method)), max_size=3),
    paths=st.none() | st.lists(st.from_regex(r"/[a-z{}*/]{0,10}", fullmatch=True), max_size=2),
)
L4_ENDPOINTS = st.builds(Endpoint, ports=PORT_LISTS)
APP_POLICIES = st.builds(
    AppPolicy,
    relation=RELATIONS,
    endpoints=st.lists(ENDPOINTS, max_size=3),
    service=st.none() | NAMES,
)
UNIT_POLICIES = st.builds(UnitPolicy, relation=RELATIONS, ports=PORT_LISTS)
DECLARED = st.lists(APP_POLICIES | UNIT_POLICIES, max_size=6)
PEERS = st.dictionaries(
    RELATIONS,
    st.lists(st.builds(RelationPeer, app_name=NAMES, namespace=NAMES), max_size=4),
    max_size=4,
)


def _ep(**kwargs: Any) -> Endpoint:
    return Endpoint(**kwargs)


# --- declarations ---------------------------------------------------------------------------


def test_methods_are_exactly_the_contract_ones():
    assert sorted(m.value for m in Method) == sorted(
        ["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"]
    )


@pytest.mark.parametrize("port", [1, 80, 65535])
def test_ports_in_range_accepted(port: int):
    assert Endpoint(ports=[port]).ports == [port]
    assert UnitPolicy(relation="r", ports=[port]).ports == [port]


@pytest.mark.parametrize("port", [0, -1, 65536, 10**9])
def test_ports_out_of_range_rejected(port: int):
    with pytest.raises(pydantic.ValidationError, match="outside 1-65535"):
        Endpoint(ports=[port])
    with pytest.raises(pydantic.ValidationError, match="outside 1-65535"):
        UnitPolicy(relation="r", ports=[80, port])


@pytest.mark.parametrize("port", [True, "80", 80.0])
def test_ports_must_be_integers(port: Any):
    with pytest.raises(pydantic.ValidationError):
        Endpoint(ports=[port])
    with pytest.raises(pydantic.ValidationError):
        UnitPolicy(relation="r", ports=[port])


@pytest.mark.parametrize("field", ["methods", "paths", "hosts", "endpoints"])
def test_unit_policy_with_l7_fields_is_rejected_clearly(field: str):
    value: Any = {"methods": ["GET"], "paths": ["/x"], "hosts": ["h"], "endpoints": []}[field]
    with pytest.raises(pydantic.ValidationError) as info:
        UnitPolicy.model_validate({"relation": "metrics", "ports": [80], field: value})
    message = str(info.value)
    assert "L4" in message
    assert field in message
    assert "AppPolicy" in message
    assert "'metrics'" in message


def test_declarations_reject_unknown_fields():
    with pytest.raises(pydantic.ValidationError, match="port"):
        AppPolicy.model_validate({"relation": "r", "endpoints": [], "port": 80})
    with pytest.raises(pydantic.ValidationError, match="relaton"):
        UnitPolicy.model_validate({"relaton": "r"})


def test_endpoint_declarations_reject_unknown_fields():
    """A typo in an endpoint must not leave an endpoint that allows every port and path."""
    with pytest.raises(pydantic.ValidationError, match="port"):
        Endpoint.model_validate({"port": [8080]})
    with pytest.raises(pydantic.ValidationError, match="path"):
        AppPolicy.model_validate({"relation": "r", "endpoints": [{"ports": [1], "path": ["/x"]}]})


def test_endpoint_is_l4_only():
    assert Endpoint().is_l4_only
    assert Endpoint(ports=[80]).is_l4_only
    assert not Endpoint(methods=[Method.get]).is_l4_only
    assert not Endpoint(paths=["/"]).is_l4_only
    assert not Endpoint(hosts=["a"]).is_l4_only


# --- MeshPolicy validation (the contract's rules) --------------------------------------------


def _mesh(**kwargs: Any) -> MeshPolicy:
    return MeshPolicy(
        source_namespace="src-ns", source_app_name="src", target_namespace="m", **kwargs
    )


def test_app_policy_needs_app_name_or_service():
    with pytest.raises(pydantic.ValidationError, match="target_app_name or target_service"):
        _mesh(target_type=PolicyTargetType.app)
    assert _mesh(target_app_name="a").target_type is PolicyTargetType.app
    assert _mesh(target_service="svc").target_service == "svc"


def test_app_policy_forbids_selector_labels():
    with pytest.raises(pydantic.ValidationError, match="cannot select pods by label"):
        _mesh(target_app_name="a", target_selector_labels={"x": "y"})


def test_unit_policy_forbids_target_service():
    with pytest.raises(pydantic.ValidationError, match="target_service"):
        _mesh(target_type="unit", target_app_name="a", target_service="svc")


def test_unit_policy_forbids_app_name_and_selector_labels():
    with pytest.raises(pydantic.ValidationError, match="not both"):
        _mesh(target_type="unit", target_app_name="a", target_selector_labels={"x": "y"})


def test_unit_policy_needs_a_target():
    with pytest.raises(pydantic.ValidationError, match="needs target_app_name"):
        _mesh(target_type="unit")
    assert _mesh(target_type="unit", target_selector_labels={"x": "y"}).target_app_name is None


def test_unit_policy_with_l7_endpoint_rejected():
    with pytest.raises(pydantic.ValidationError) as info:
        _mesh(target_type="unit", target_app_name="a", endpoints=[_ep(ports=[80], paths=["/x"])])
    assert "L4" in str(info.value)
    assert "/x" in str(info.value)


def _allowed_by_contract(
    target_type: str,
    app_name: str | None,
    labels: dict[str, str] | None,
    service: str | None,
    endpoints: list[Endpoint],
) -> bool:
    """The spec's rules, written independently of the model's validator."""
    if target_type == "app":
        return bool(app_name or service) and not labels
    return (
        not service
        and not (app_name and labels)
        and bool(app_name or labels)
        and all(e.hosts is None and e.methods is None and e.paths is None for e in endpoints)
    )


@given(
    target_type=st.sampled_from(["app", "unit"]),
    app_name=st.none() | NAMES,
    labels=st.none() | st.dictionaries(NAMES, NAMES, max_size=2),
    service=st.none() | NAMES,
    endpoints=st.lists(ENDPOINTS, max_size=2),
)
def test_validation_matches_the_contract(
    target_type: str,
    app_name: str | None,
    labels: dict[str, str] | None,
    service: str | None,
    endpoints: list[Endpoint],
):
    allowed = _allowed_by_contract(target_type, app_name, labels, service, endpoints)
    try:
        policy = _mesh(
            target_type=target_type,
            target_app_name=app_name,
            target_selector_labels=labels,
            target_service=service,
            endpoints=endpoints,
        )
    except pydantic.ValidationError:
        assert not allowed
    else:
        assert allowed
        assert MeshPolicy.model_validate(policy.to_wire()) == policy


# --- wire form ------------------------------------------------------------------------------


def test_wire_form_has_every_key_in_order_with_nulls():
    policy = _mesh(
        target_app_name="coord",
        endpoints=[_ep(ports=[8080], methods=[Method.get], paths=["/proxy/worker/{*}/metrics"])],
    )
    wire = policy.to_wire()
    assert list(wire) == WIRE_KEYS
    assert wire == {
        "source_namespace": "src-ns",
        "source_app_name": "src",
        "target_namespace": "m",
        "target_app_name": "coord",
        "target_selector_labels": None,
        "target_service": None,
        "target_type": "app",
        "endpoints": [
            {
                "hosts": None,
                "ports": [8080],
                "methods": ["GET"],
                "paths": ["/proxy/worker/{*}/metrics"],
            }
        ],
    }
    assert list(wire["endpoints"][0]) == ENDPOINT_KEYS
    text = json.dumps(wire)
    assert text.index('"source_namespace"') < text.index('"endpoints"')
    assert '"target_selector_labels": null' in text


def test_wire_form_read_back_ignores_unknown_keys():
    wire = {**_mesh(target_app_name="a").to_wire(), "future": 1}
    wire["endpoints"] = [{"ports": [1], "future": True}]
    policy = MeshPolicy.model_validate(wire)
    assert policy.endpoints == [Endpoint(ports=[1])]


@given(declared=DECLARED, peers=PEERS)
def test_wire_form_round_trips_and_is_json(declared: list[AppPolicy | UnitPolicy], peers: Any):
    for policy in build_mesh_policies(declared, peers, app_name="coord", namespace="m"):
        wire = policy.to_wire()
        assert list(wire) == WIRE_KEYS
        assert all(list(e) == ENDPOINT_KEYS for e in wire["endpoints"])
        assert MeshPolicy.model_validate(json.loads(json.dumps(wire))) == policy


# --- resolution -----------------------------------------------------------------------------


def test_resolution_example_from_the_contract():
    declared = [
        AppPolicy(relation="metrics", endpoints=[_ep(ports=[8080], methods=[Method.get])]),
        UnitPolicy(relation="metrics", ports=[9113]),
        UnitPolicy(relation="peers-any-port"),
        AppPolicy(relation="api", endpoints=[], service="custom-svc"),
    ]
    peers = {
        "metrics": [RelationPeer(app_name="prometheus", namespace="cos")],
        "peers-any-port": [RelationPeer(app_name="other", namespace="m")],
        "api": [RelationPeer(app_name="grafana", namespace="m")],
        "unrelated": [RelationPeer(app_name="nobody", namespace="m")],
    }
    got = {
        (p.source_app_name, p.target_type.value): p.to_wire()
        for p in build_mesh_policies(declared, peers, app_name="coord", namespace="m")
    }
    assert set(got) == {
        ("prometheus", "app"),
        ("prometheus", "unit"),
        ("other", "unit"),
        ("grafana", "app"),
    }
    assert got["prometheus", "app"]["source_namespace"] == "cos"
    assert got["prometheus", "app"]["target_namespace"] == "m"
    assert got["prometheus", "app"]["target_app_name"] == "coord"
    assert got["prometheus", "app"]["endpoints"] == [
        {"hosts": None, "ports": [8080], "methods": ["GET"], "paths": None}
    ]
    assert got["prometheus", "unit"]["endpoints"] == [
        {"hosts": None, "ports": [9113], "methods": None, "paths": None}
    ]
    assert got["other", "unit"]["endpoints"] == []  # no ports: any port
    assert got["grafana", "app"]["target_service"] == "custom-svc"
    assert got["grafana", "app"]["target_app_name"] == "coord"


@given(declared=DECLARED, peers=PEERS, data=st.data())
def test_build_is_deterministic_and_deduplicated(
    declared: list[AppPolicy | UnitPolicy],
    peers: dict[str, list[RelationPeer]],
    data: st.DataObject,
):
    kwargs: dict[str, str] = {"app_name": "coord", "namespace": "m"}
    result = build_mesh_policies(declared, peers, **kwargs)
    shuffled_declared = data.draw(st.permutations(declared))
    shuffled_peers = {k: data.draw(st.permutations(v)) for k, v in reversed(peers.items())}
    doubled = build_mesh_policies(
        [*shuffled_declared, *shuffled_declared],
        {k: [*v, *v] for k, v in shuffled_peers.items()},
        **kwargs,
    )
    assert doubled == result
    keys = [p.sort_key() for p in result]
    assert keys == sorted(set(keys))  # sorted, no duplicates
    assert policies_to_json(result) == policies_to_json(reversed(result))


@given(declared=DECLARED, peers=PEERS)
def test_build_covers_exactly_every_declaration_and_peer(
    declared: list[AppPolicy | UnitPolicy], peers: dict[str, list[RelationPeer]]
):
    result = build_mesh_policies(declared, peers, app_name="coord", namespace="m")
    expected: set[tuple[str, str, str, str]] = set()
    for d in declared:
        kind = "unit" if isinstance(d, UnitPolicy) else "app"
        for peer in peers.get(d.relation, []):
            expected.add((peer.app_name, peer.namespace, kind, d.relation))
    assert {(p.source_app_name, p.source_namespace, p.target_type.value) for p in result} == {
        e[:3] for e in expected
    }
    for p in result:
        assert p.target_app_name == "coord"
        assert p.target_namespace == "m"
        if p.target_type is PolicyTargetType.unit:
            assert all(e.is_l4_only for e in p.endpoints)
            assert len(p.endpoints) <= 1


def test_policies_to_json_is_the_sorted_wire_array():
    a = _mesh(target_app_name="a")
    b = _mesh(target_app_name="b", target_type="unit", endpoints=[_ep(ports=[1])])
    text = policies_to_json([b, a])
    assert text == policies_to_json([a, b])
    assert json.loads(text) == [a.to_wire(), b.to_wire()]
    assert policies_to_json([]) == "[]"
