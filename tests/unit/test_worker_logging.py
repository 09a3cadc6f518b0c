"""Pebble log forwarding to Loki (pure): targets wanted, stopped, left alone, and idempotence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from coordinated_mesh.worker.log_forwarding import (
    changed_targets,
    is_managed_target_name,
    log_forwarding_layer,
    log_target_labels,
    loki_target_name,
    wanted_log_targets,
)
from hypothesis import given
from hypothesis import strategies as st
from ops import pebble

LABELS = log_target_labels(
    charm="mesh-worker-k8s",
    model="mymodel",
    model_uuid="00000000-0000-4000-8000-000000000000",
    application="mesh-worker-k8s",
    unit="mesh-worker-k8s/0",
)
URL0 = "http://coord.mymodel.svc.cluster.local:8080/proxy/loki/loki-0/push"
URL1 = "http://coord.mymodel.svc.cluster.local:8080/proxy/loki/loki-1/push"


def plan_after(
    current: Mapping[str, pebble.LogTarget], urls: Mapping[str, str]
) -> dict[str, pebble.LogTarget]:
    """Apply the layer as Pebble does (override: replace per target) and return the new targets."""
    layer = log_forwarding_layer(urls, current=current, labels=LABELS)
    result = dict(current)
    if layer is not None:
        for name, target in layer.get("log-targets", {}).items():
            result[name] = pebble.LogTarget(name, target)
    return result


def test_labels_are_the_juju_topology_of_the_spec():
    assert LABELS == {
        "charm": "mesh-worker-k8s",
        "juju_application": "mesh-worker-k8s",
        "juju_model": "mymodel",
        "juju_model_uuid": "00000000-0000-4000-8000-000000000000",
        "juju_unit": "mesh-worker-k8s/0",
        "product": "Juju",
    }


def test_one_target_per_url_in_the_spec_format():
    targets = wanted_log_targets({"loki/1": URL1, "loki/0": URL0}, current={}, labels=LABELS)
    assert list(targets) == ["loki/0", "loki/1"]
    assert targets["loki/0"] == {
        "override": "replace",
        "type": "loki",
        "location": URL0,
        "services": ["all"],
        "labels": LABELS,
    }


def test_unit_names_are_kept_and_other_keys_hashed_stably():
    assert loki_target_name("loki/0") == "loki/0"
    odd = loki_target_name("Loki unit 0!")
    assert odd.startswith("loki-")
    assert odd == loki_target_name("Loki unit 0!")
    assert odd != loki_target_name("Loki unit 1!")
    assert is_managed_target_name(odd)
    assert is_managed_target_name("loki/0")
    assert not is_managed_target_name("my-own-target")


@given(st.text(max_size=80))
def test_every_key_gives_a_managed_name(key: str):
    name = loki_target_name(key)
    assert is_managed_target_name(name)
    assert "\n" not in name


def test_target_no_longer_wanted_is_stopped_keeping_its_location():
    plan = plan_after({}, {"loki/0": URL0, "loki/1": URL1})
    plan = plan_after(plan, {"loki/1": URL1})
    assert plan["loki/0"].services == ["-all"]
    assert plan["loki/0"].location == URL0
    assert plan["loki/1"].services == ["all"]


def test_all_targets_stopped_when_no_url_is_left():
    plan = plan_after({}, {"loki/0": URL0})
    plan = plan_after(plan, {})
    assert [(n, t.services) for n, t in plan.items()] == [("loki/0", ["-all"])]


def test_a_stopped_target_restarts_when_its_url_returns():
    plan = plan_after(plan_after({}, {"loki/0": URL0}), {})
    plan = plan_after(plan, {"loki/0": URL1})
    assert plan["loki/0"].services == ["all"]
    assert plan["loki/0"].location == URL1


def test_second_application_is_a_no_op():
    for urls in ({"loki/0": URL0}, {"loki/0": URL0, "loki/1": URL1}, {}):
        plan = plan_after(plan_after({}, {"loki/0": URL0, "loki/1": URL1}), urls)
        assert log_forwarding_layer(urls, current=plan, labels=LABELS) is None


def test_nothing_to_do_from_an_empty_plan_without_urls():
    assert log_forwarding_layer({}, current={}, labels=LABELS) is None


def test_others_targets_are_never_touched():
    current = {
        "my-own-target": pebble.LogTarget(
            "my-own-target", {"type": "loki", "location": URL0, "services": ["all"]}
        ),
        "loki/9": pebble.LogTarget(
            # A type ops does not know yet (Pebble may add more): still not ours.
            "loki/9",
            cast(pebble.LogTargetDict, {"type": "syslog", "location": "udp://x:514"}),
        ),
    }
    assert wanted_log_targets({}, current=current, labels=LABELS) == {}


def test_only_changed_targets_are_redeclared():
    plan = plan_after({}, {"loki/0": URL0})
    wanted = wanted_log_targets({"loki/0": URL0, "loki/1": URL1}, current=plan, labels=LABELS)
    assert list(changed_targets(wanted, current=plan)) == ["loki/1"]


def test_label_change_redeclares_the_target():
    plan = plan_after({}, {"loki/0": URL0})
    layer = log_forwarding_layer(
        {"loki/0": URL0}, current=plan, labels={**LABELS, "juju_unit": "mesh-worker-k8s/1"}
    )
    assert layer is not None
    assert list(layer.get("log-targets", {})) == ["loki/0"]
