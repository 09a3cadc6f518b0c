"""Label ownership (pure): keys Juju owns and keys someone else set are never ours."""

from __future__ import annotations

import pytest
from coordinated_mesh.k8s.labels import plan_labels
from coordinated_mesh.parse import is_juju_owned_label, validate_mesh_labels

JUJU = {"app.kubernetes.io/name": "coord"}
WAYPOINT = {"istio.io/use-waypoint": "beacon-waypoint"}


def test_an_operators_key_with_another_value_is_left_alone_and_not_remembered():
    plan = plan_labels(
        {**WAYPOINT, "istio.io/dataplane-mode": "ambient"},
        previous={},
        statefulset_labels={**JUJU, "istio.io/use-waypoint": "operators-own"},
        service_labels={},
        selector=JUJU.keys(),
    )
    assert plan.not_ours == ("istio.io/use-waypoint",)
    assert plan.statefulset == {"istio.io/dataplane-mode": "ambient"}
    assert plan.service == {"istio.io/dataplane-mode": "ambient"}
    assert plan.memory_before == {"istio.io/dataplane-mode": "ambient"}


def test_a_key_we_remember_is_ours_whatever_its_value():
    plan = plan_labels(
        WAYPOINT,
        previous={"istio.io/use-waypoint": "old"},
        statefulset_labels={**JUJU, "istio.io/use-waypoint": "old"},
        service_labels={"istio.io/use-waypoint": "old"},
        selector=JUJU.keys(),
    )
    assert plan.not_ours == ()
    assert plan.statefulset == WAYPOINT


def test_a_lost_memory_is_rebuilt_from_matching_values():
    plan = plan_labels(
        WAYPOINT,
        previous={},
        statefulset_labels={**JUJU, **WAYPOINT},
        service_labels=WAYPOINT,
        selector=JUJU.keys(),
    )
    assert plan.not_ours == ()
    assert plan.memory_after == WAYPOINT


@pytest.mark.parametrize(
    "key", ["app.kubernetes.io/name", "app.kubernetes.io/managed-by", "model.juju.is/name"]
)
def test_keys_juju_owns_are_never_planned(key: str):
    on_objects = {key: "juju-set"}
    plan = plan_labels(
        {key: "x"}, previous={key: "x"}, statefulset_labels=on_objects, service_labels=on_objects
    )
    assert plan.not_ours == (key,)
    # Neither set nor removed (even though an older version remembered it); forgotten.
    assert plan.statefulset == plan.service == {}
    assert plan.memory_after == {}
    assert is_juju_owned_label(key)
    with pytest.raises(ValueError, match="Juju owns"):
        validate_mesh_labels({key: "x"})


@pytest.mark.parametrize("key", ["app.kubernetes.io/part-of", "istio.io/use-waypoint", "juju"])
def test_other_keys_are_not_jujus(key: str):
    assert not is_juju_owned_label(key)
    assert validate_mesh_labels({key: "x"}) == {key: "x"}
