"""The pure builder of cluster-internal policies and the membership label."""

from __future__ import annotations

from coordinated_mesh.mesh.cluster_policies import (
    PART_OF_LABEL,
    build_cluster_policies,
    cluster_member_labels,
)
from coordinated_mesh.mesh.policies import MeshPolicy, PolicyTargetType
from coordinated_mesh.parse import LABEL_VALUE_RE
from hypothesis import given
from hypothesis import strategies as st

APP_NAMES = st.from_regex(r"^[a-z][a-z0-9-]{0,40}$", fullmatch=True)


def test_no_workers_only_the_coordinator_policy():
    policies = build_cluster_policies(coordinator_app="coord", namespace="m", worker_apps=[])
    assert [p.to_wire() for p in policies] == [
        {
            "source_namespace": "m",
            "source_app_name": "coord",
            "target_namespace": "m",
            "target_app_name": None,
            "target_selector_labels": {PART_OF_LABEL: "coord"},
            "target_service": None,
            "target_type": "unit",
            "endpoints": [],
        }
    ]


def test_two_workers_give_the_three_kinds():
    policies = build_cluster_policies(
        coordinator_app="coord", namespace="m", worker_apps=["w2", "w1", "w1"]
    )
    assert len(policies) == 5
    unit = {p.source_app_name for p in policies if p.target_type is PolicyTargetType.unit}
    app = {p.source_app_name for p in policies if p.target_type is PolicyTargetType.app}
    assert unit == {"coord", "w1", "w2"}
    assert app == {"w1", "w2"}
    for p in policies:
        assert p.source_namespace == p.target_namespace == "m"
        if p.target_type is PolicyTargetType.unit:
            assert p.target_selector_labels == {PART_OF_LABEL: "coord"}
            assert p.target_app_name is None
        else:
            assert p.target_app_name == "coord"
            assert p.target_selector_labels is None
        assert p.endpoints == []


def test_coordinator_listed_as_worker_is_ignored():
    policies = build_cluster_policies(
        coordinator_app="coord", namespace="m", worker_apps=["coord", "w"]
    )
    assert len(policies) == 3


@given(workers=st.lists(APP_NAMES, max_size=6), coordinator=APP_NAMES)
def test_deterministic_and_counted(workers: list[str], coordinator: str):
    a = build_cluster_policies(coordinator_app=coordinator, namespace="m", worker_apps=workers)
    b = build_cluster_policies(
        coordinator_app=coordinator, namespace="m", worker_apps=list(reversed(workers))
    )
    assert a == b
    assert [p.sort_key() for p in a] == sorted(p.sort_key() for p in a)
    n = len(set(workers) - {coordinator})
    assert len(a) == 1 + 2 * n
    # Every policy is valid on the wire (revalidating the wire form round-trips).
    assert [MeshPolicy.model_validate(p.to_wire()) for p in a] == a


def test_member_labels():
    assert cluster_member_labels("tempo") == {PART_OF_LABEL: "tempo"}


def test_member_label_value_is_always_valid():
    long = "a" * 80
    (value,) = cluster_member_labels(long).values()
    assert LABEL_VALUE_RE.match(value)
    assert len(value) <= 63
    assert value == cluster_member_labels(long)[PART_OF_LABEL]
