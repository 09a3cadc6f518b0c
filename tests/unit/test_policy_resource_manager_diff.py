"""The pure half of the PolicyResourceManager: owners, desired objects, the diff, replacements."""

from __future__ import annotations

import copy
from typing import Any

from coordinated_mesh.k8s.policy_manager import (
    ObjectDiff,
    Owner,
    ReconcileResult,
    desired_objects,
    diff_objects,
    needs_update,
    replacement,
)
from coordinated_mesh.mesh.authorization import policy_name
from coordinated_mesh.mesh.policies import Endpoint, MeshPolicy, PolicyTargetType
from coordinated_mesh.parse import LABEL_KEY_RE, LABEL_VALUE_RE
from hypothesis import given
from hypothesis import strategies as st

NAMES = st.from_regex(r"^[a-z][a-z0-9-]{0,60}[a-z0-9]$", fullmatch=True)
OWNER = Owner(app_name="coord", namespace="m")


def unit_policy(source: str, ports: list[int] | None = None, namespace: str = "m") -> MeshPolicy:
    return MeshPolicy(
        source_namespace="m",
        source_app_name=source,
        target_namespace=namespace,
        target_selector_labels={"app.kubernetes.io/part-of": "coord"},
        target_type=PolicyTargetType.unit,
        endpoints=[Endpoint(ports=ports)] if ports else [],
    )


POLICIES = st.lists(
    st.builds(
        unit_policy,
        st.sampled_from(["coord", "w1", "w2", "w3"]),
        st.none() | st.lists(st.integers(1, 65535), min_size=1, max_size=2),
        st.sampled_from(["m", "other"]),
    ),
    max_size=6,
)


def key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def as_listed(obj: dict[str, Any], **extra_labels: str) -> dict[str, Any]:
    """What the API server returns for ``obj``: server-set metadata and maybe others' labels."""
    listed = copy.deepcopy(obj)
    listed["metadata"].update(resourceVersion="7", uid="u", managedFields=[{"manager": "x"}])
    listed["metadata"]["labels"].update(extra_labels)
    return listed


# --- owners -------------------------------------------------------------------------------------


@given(NAMES, NAMES, NAMES)
def test_owner_labels_are_valid_for_any_names(app: str, model: str, scope: str):
    labels = Owner(app_name=app, namespace=model, scope=scope).labels
    for label_key, value in labels.items():
        assert LABEL_KEY_RE.match(label_key)
        assert LABEL_VALUE_RE.match(value), value


def test_owners_sharing_app_dash_model_have_different_label_sets():
    one = Owner(app_name="a-b", namespace="c").labels
    other = Owner(app_name="a", namespace="b-c").labels
    assert one["app.kubernetes.io/instance"] == other["app.kubernetes.io/instance"]
    assert one != other


def test_owner_scopes_are_separate():
    assert Owner("coord", "m", "cluster-internal").labels != Owner("coord", "m", "other").labels


def test_field_manager_is_app_dash_model():
    assert OWNER.field_manager == "coord-m"


# --- desired objects ------------------------------------------------------------------------------


def test_desired_objects_are_named_by_content_owned_deduplicated_and_sorted():
    policies = [unit_policy("w2"), unit_policy("w1"), unit_policy("w2")]
    objects = desired_objects(policies, owner=OWNER)
    assert len(objects) == 2
    assert objects == sorted(objects, key=key)
    for obj in objects:
        assert obj["metadata"]["labels"] == OWNER.labels
    assert {o["metadata"]["name"] for o in objects} == {
        policy_name(p, prefix="coord", owner="coord/m/cluster-internal") for p in policies
    }


@given(POLICIES)
def test_desired_objects_do_not_depend_on_input_order(policies: list[MeshPolicy]):
    assert desired_objects(policies, owner=OWNER) == desired_objects(policies[::-1], owner=OWNER)


# --- the diff -------------------------------------------------------------------------------------


@given(POLICIES)
def test_nothing_to_do_when_actual_equals_desired(policies: list[MeshPolicy]):
    desired = desired_objects(policies, owner=OWNER)
    listed = [as_listed(o, team="obs") for o in desired]  # others' labels do not count
    assert diff_objects(desired, listed) == ObjectDiff()


@given(POLICIES, POLICIES)
def test_diff_creates_missing_deletes_unwanted_and_updates_differing(
    wanted: list[MeshPolicy], existing: list[MeshPolicy]
):
    desired = desired_objects(wanted, owner=OWNER)
    actual = [as_listed(o) for o in desired_objects(existing, owner=OWNER)]
    # Corrupt every other shared object out of band.
    shared = {key(o) for o in desired} & {key(o) for o in actual}
    corrupted = set(sorted(shared)[::2])
    for obj in actual:
        if key(obj) in corrupted:
            obj["spec"]["action"] = "DENY"

    diff = diff_objects(desired, actual)

    assert {key(o) for o in diff.create} == {key(o) for o in desired} - shared
    assert {key(o) for o in diff.delete} == {key(o) for o in actual} - shared
    assert {key(d) for d, _ in diff.update} == corrupted
    assert all(key(d) == key(a) for d, a in diff.update)


def test_needs_update_on_spec_or_missing_owner_label_only():
    (desired,) = desired_objects([unit_policy("w1")], owner=OWNER)
    assert not needs_update(desired, as_listed(desired, team="x"))
    edited = as_listed(desired)
    edited["spec"]["rules"][0]["to"] = [{"operation": {"ports": ["1"]}}]
    assert needs_update(desired, edited)
    unlabelled = as_listed(desired)
    del unlabelled["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert needs_update(desired, unlabelled)


def test_replacement_restores_spec_and_labels_keeping_others_metadata():
    (desired,) = desired_objects([unit_policy("w1", [80])], owner=OWNER)
    actual = as_listed(desired, team="obs")
    actual["metadata"]["annotations"] = {"note": "kept"}
    actual["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone-else"
    actual["spec"] = {"action": "DENY", "rules": []}

    new = replacement(desired, actual)

    assert new["spec"] == desired["spec"]
    assert new["metadata"]["labels"] == {**desired["metadata"]["labels"], "team": "obs"}
    assert new["metadata"]["annotations"] == {"note": "kept"}
    assert new["metadata"]["resourceVersion"] == "7"
    assert "managedFields" not in new["metadata"]
    assert (new["apiVersion"], new["kind"]) == ("security.istio.io/v1", "AuthorizationPolicy")


def test_reconcile_result_changed():
    assert not ReconcileResult().changed
    assert ReconcileResult(created=("a",)).changed
    assert ReconcileResult(deleted=("a",)).changed
