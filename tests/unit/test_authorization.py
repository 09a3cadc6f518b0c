"""Rendering MeshPolicies as AuthorizationPolicies, and naming them: properties and pinned values."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from coordinated_mesh.mesh.authorization import policy_name, principal, render_authorization_policy
from coordinated_mesh.mesh.policies import Endpoint, MeshPolicy, Method, PolicyTargetType
from hypothesis import assume, given
from hypothesis import strategies as st

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAMES = st.from_regex(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$", fullmatch=True)
PORTS = st.integers(min_value=1, max_value=65535)
PATHS = st.from_regex(r"^/[a-z0-9/{}*._-]{0,20}$", fullmatch=True)
HOSTS = st.from_regex(r"^[a-z0-9.-]{1,20}$", fullmatch=True)
LABEL_KEYS = st.from_regex(
    r"^([a-z0-9.]{1,10}/)?[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?$", fullmatch=True
)
LABEL_VALUES = st.from_regex(r"^[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?$", fullmatch=True)
OWNER_LABELS = st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=3)


def optional_list(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | st.lists(elements, max_size=3)


ENDPOINTS = st.builds(
    Endpoint,
    hosts=optional_list(HOSTS),
    ports=optional_list(PORTS),
    methods=optional_list(st.sampled_from(Method)),
    paths=optional_list(PATHS),
)


@st.composite
def app_policies(draw: st.DrawFn) -> MeshPolicy:
    app, service = draw(
        st.one_of(st.tuples(NAMES, st.none()), st.tuples(st.none(), NAMES), st.tuples(NAMES, NAMES))
    )
    return MeshPolicy(
        source_namespace=draw(NAMES),
        source_app_name=draw(NAMES),
        target_namespace=draw(NAMES),
        target_app_name=app,
        target_service=service,
        target_type=PolicyTargetType.app,
        endpoints=draw(st.lists(ENDPOINTS, max_size=3)),
    )


@st.composite
def unit_policies(draw: st.DrawFn) -> MeshPolicy:
    by_labels = draw(st.booleans())
    return MeshPolicy(
        source_namespace=draw(NAMES),
        source_app_name=draw(NAMES),
        target_namespace=draw(NAMES),
        target_app_name=None if by_labels else draw(NAMES),
        target_selector_labels=draw(OWNER_LABELS.filter(bool)) if by_labels else None,
        target_type=PolicyTargetType.unit,
        endpoints=draw(st.lists(st.builds(Endpoint, ports=optional_list(PORTS)), max_size=2)),
    )


POLICIES = app_policies() | unit_policies()


def restricts(endpoint: Endpoint) -> bool:
    return bool(endpoint.ports or endpoint.methods or endpoint.paths or endpoint.hosts)


@given(POLICIES, OWNER_LABELS)
def test_every_rendering_is_one_allow_rule_for_the_source_principal(
    policy: MeshPolicy, labels: dict[str, str]
):
    obj = render_authorization_policy(policy, name="n", labels=labels)

    assert obj["apiVersion"] == "security.istio.io/v1"
    assert obj["kind"] == "AuthorizationPolicy"
    assert obj["metadata"] == {"name": "n", "namespace": policy.target_namespace, "labels": labels}
    assert "action" not in obj["spec"]
    (rule,) = obj["spec"]["rules"]
    assert rule["from"] == [
        {
            "source": {
                "principals": [
                    f"cluster.local/ns/{policy.source_namespace}/sa/{policy.source_app_name}"
                ]
            }
        }
    ]
    assert json.loads(json.dumps(obj)) == obj
    assert render_authorization_policy(policy, name="n", labels=labels) == obj


@given(app_policies())
def test_app_policy_targets_the_service_with_one_operation_per_endpoint(policy: MeshPolicy):
    spec = render_authorization_policy(policy, name="n", labels={})["spec"]

    service = policy.target_service or policy.target_app_name
    assert spec["targetRefs"] == [{"group": "", "kind": "Service", "name": service}]
    assert "selector" not in spec
    to = spec["rules"][0]["to"]
    if not policy.endpoints or not all(restricts(e) for e in policy.endpoints):
        assert to == []
        return
    assert len(to) == len(policy.endpoints)
    for entry, endpoint in zip(to, policy.endpoints, strict=True):
        operation = entry["operation"]
        expected = {
            "ports": [str(p) for p in endpoint.ports or []],
            "methods": [m.value for m in endpoint.methods or []],
            "paths": list(endpoint.paths or []),
            "hosts": list(endpoint.hosts or []),
        }
        assert operation == {key: value for key, value in expected.items() if value}
        assert all(isinstance(port, str) for port in operation.get("ports", []))


@given(unit_policies())
def test_unit_policy_selects_pods_and_allows_ports_only(policy: MeshPolicy):
    spec = render_authorization_policy(policy, name="n", labels={})["spec"]

    expected_labels = policy.target_selector_labels or {
        "app.kubernetes.io/name": policy.target_app_name
    }
    assert spec["selector"] == {"matchLabels": expected_labels}
    assert "targetRefs" not in spec
    to = spec["rules"][0]["to"]
    if not policy.endpoints or not all(e.ports for e in policy.endpoints):
        assert to == []
    else:
        assert to == [
            {"operation": {"ports": [str(p) for p in e.ports or []]}} for e in policy.endpoints
        ]


def test_principal_is_the_source_service_account():
    policy = MeshPolicy(
        source_namespace="cos",
        source_app_name="grafana",
        target_namespace="m",
        target_app_name="coord",
    )
    assert principal(policy) == "cluster.local/ns/cos/sa/grafana"


# --- names -----------------------------------------------------------------------------------------


@given(POLICIES, st.text(max_size=80), st.text(max_size=40))
def test_names_are_valid_dns_labels(policy: MeshPolicy, prefix: str, owner: str):
    name = policy_name(policy, prefix=prefix, owner=owner)
    assert len(name) <= 63
    assert DNS_LABEL.match(name), name


@given(POLICIES, NAMES)
def test_names_are_deterministic_and_keep_a_readable_prefix(policy: MeshPolicy, prefix: str):
    name = policy_name(policy, prefix=prefix, owner="o")
    again = MeshPolicy.model_validate_json(json.dumps(policy.to_wire()))
    assert policy_name(again, prefix=prefix, owner="o") == name
    assert name.startswith(prefix[:46].rstrip("-") + "-")


@given(POLICIES, POLICIES)
def test_different_policies_get_different_names(first: MeshPolicy, second: MeshPolicy):
    assume(first.to_wire() != second.to_wire())
    assert policy_name(first, prefix="p", owner="o") != policy_name(second, prefix="p", owner="o")


@given(POLICIES, NAMES, NAMES)
def test_different_owners_get_different_names(policy: MeshPolicy, one: str, other: str):
    assume(one != other)
    assert policy_name(policy, prefix="p", owner=one) != policy_name(
        policy, prefix="p", owner=other
    )


PINNED = MeshPolicy(
    source_namespace="mymodel",
    source_app_name="prometheus",
    target_namespace="mymodel",
    target_app_name="coord",
    target_type=PolicyTargetType.app,
    endpoints=[Endpoint(ports=[8080], methods=[Method.get], paths=["/proxy/worker/{*}/metrics"])],
)


def test_name_is_the_documented_hash_of_the_wire_form():
    """The name depends only on the wire JSON and the owner, by the documented formula."""
    wire = {
        "source_namespace": "mymodel",
        "source_app_name": "prometheus",
        "target_namespace": "mymodel",
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
    document = json.dumps(
        {"owner": "coord/mymodel/cluster-internal", "policy": wire},
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(document.encode()).hexdigest()[:16]
    name = policy_name(PINNED, prefix="coord", owner="coord/mymodel/cluster-internal")
    assert name == f"coord-{digest}"


def test_names_are_pinned_across_versions():
    """Renaming would re-create every policy on upgrade: these values must never change."""
    assert policy_name(PINNED, prefix="coord", owner="coord/mymodel/cluster-internal") == (
        "coord-fc69249eb41c9328"
    )
    assert policy_name(PINNED, prefix="coord") == "coord-d670bce5a7e9b15f"


def test_prefix_is_cleaned_and_cut():
    name = policy_name(PINNED, prefix="My_App." + "x" * 80, owner="o")
    assert name.startswith("my-app-xxx")
    assert len(name) == 63
    assert policy_name(PINNED, prefix="---", owner="o").startswith("policy-")
