"""Pebble log forwarding to Loki (pure): targets wanted, stopped, left alone, and idempotence.

Where lines really go is checked with :class:`~tests.support.pebble_logs.PebbleLogForwarding`,
the model of real Pebble (a target's location is fixed by its first declaration).
"""

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

from tests.support.pebble_logs import PebbleLogForwarding, logs_to

LABELS = log_target_labels(
    charm="mesh-worker-k8s",
    model="mymodel",
    model_uuid="00000000-0000-4000-8000-000000000000",
    application="mesh-worker-k8s",
    unit="mesh-worker-k8s/0",
)
URL0 = "http://coord.mymodel.svc.cluster.local:8080/proxy/loki/loki-0/push"
URL1 = "http://coord.mymodel.svc.cluster.local:8080/proxy/loki/loki-1/push"
URL0_TLS = "https://coord.mymodel.svc.cluster.local:8443/proxy/loki/loki-0/push"
T0, T1, T0_TLS = (loki_target_name(u) for u in (URL0, URL1, URL0_TLS))


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
    assert list(targets) == sorted([T0, T1])
    assert targets[T0] == {
        "override": "replace",
        "type": "loki",
        "location": URL0,
        "services": ["all"],
        "labels": LABELS,
    }


def test_names_follow_the_url_stably():
    assert T0 == loki_target_name(URL0) == "loki-" + T0.removeprefix("loki-")
    assert len({T0, T1, T0_TLS}) == 3  # any change of the URL (port, scheme, path) renames
    assert all(is_managed_target_name(t) for t in (T0, T1, T0_TLS))
    assert is_managed_target_name("loki/0")  # earlier versions' unit-named targets
    assert not is_managed_target_name("my-own-target")


def test_keys_sharing_a_url_share_a_target():
    targets = wanted_log_targets({"loki/0": URL0, "other": URL0}, current={}, labels=LABELS)
    assert list(targets) == [T0]


@given(st.text(max_size=80))
def test_every_url_gives_a_managed_name(url: str):
    name = loki_target_name(url)
    assert is_managed_target_name(name)
    assert "\n" not in name


# --- Where the lines really go (the model of real Pebble) ----------------------------------------


def test_model_keeps_the_first_location_of_a_name_until_a_restart():
    """The fact the naming exists for (Pebble ``logstate``): redeclaring moves nothing."""
    pebble_logs = PebbleLogForwarding()
    spec: pebble.LogTargetDict = {"type": "loki", "location": URL0, "services": ["all"]}
    pebble_logs.plan_changed({"t": pebble.LogTarget("t", spec)})
    moved = {"t": pebble.LogTarget("t", {**spec, "location": URL1})}
    pebble_logs.plan_changed(moved)
    assert pebble_logs.destinations(moved, "svc") == {"t": URL0}
    pebble_logs.restarted(moved)
    assert pebble_logs.destinations(moved, "svc") == {"t": URL1}
    assert pebble_logs.layers_added == 2


def test_model_services_are_pebbles_logs_to():
    assert logs_to(["all"], "svc") and not logs_to(["-all"], "svc")
    assert logs_to(["-all", "svc"], "svc") and not logs_to(["all", "-svc"], "svc")
    assert not logs_to([], "svc")


def forward(
    pebble_logs: PebbleLogForwarding, plan: dict[str, pebble.LogTarget], urls: dict[str, str]
):
    """Add the layer for ``urls`` (if any) to ``plan`` as Pebble does, and tell the model."""
    layer = log_forwarding_layer(urls, current=plan, labels=LABELS)
    if layer is None:
        return plan
    plan = {**plan, **{n: pebble.LogTarget(n, t) for n, t in layer.get("log-targets", {}).items()}}
    pebble_logs.plan_changed(plan)
    return plan


def test_a_changed_url_really_moves_the_logs():
    pebble_logs = PebbleLogForwarding()
    plan = forward(pebble_logs, {}, {"loki/0": URL0})
    plan = forward(pebble_logs, plan, {"loki/0": URL0_TLS})  # TLS arrived: same key, new URL
    assert pebble_logs.destinations(plan, "prometheus") == {T0_TLS: URL0_TLS}
    assert (plan[T0].location, plan[T0].services) == (URL0, ["-all"])
    assert pebble_logs.layers_added == 2
    plan = forward(pebble_logs, plan, {"loki/0": URL0_TLS})
    assert pebble_logs.layers_added == 2  # unchanged: no layer, nothing re-sent


def test_earlier_unit_named_targets_are_stopped_on_upgrade():
    old: pebble.LogTargetDict = {"type": "loki", "location": URL0, "services": ["all"]}
    plan = {"loki/0": pebble.LogTarget("loki/0", old)}
    pebble_logs = PebbleLogForwarding()
    pebble_logs.restarted(plan)
    plan = forward(pebble_logs, plan, {"loki/0": URL0})
    assert pebble_logs.destinations(plan, "prometheus") == {T0: URL0}
    assert plan["loki/0"].services == ["-all"]


def test_target_no_longer_wanted_is_stopped_keeping_its_location():
    plan = plan_after({}, {"loki/0": URL0, "loki/1": URL1})
    plan = plan_after(plan, {"loki/1": URL1})
    assert plan[T0].services == ["-all"]
    assert plan[T0].location == URL0
    assert plan[T1].services == ["all"]


def test_all_targets_stopped_when_no_url_is_left():
    plan = plan_after({}, {"loki/0": URL0})
    plan = plan_after(plan, {})
    assert [(n, t.services) for n, t in plan.items()] == [(T0, ["-all"])]


def test_a_stopped_target_restarts_when_its_url_returns():
    plan = plan_after(plan_after({}, {"loki/0": URL0}), {})
    plan = plan_after(plan, {"loki/1": URL0})
    assert list(plan) == [T0]
    assert plan[T0].services == ["all"]
    assert plan[T0].location == URL0


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
    assert list(changed_targets(wanted, current=plan)) == [T1]


def test_label_change_redeclares_the_target():
    plan = plan_after({}, {"loki/0": URL0})
    layer = log_forwarding_layer(
        {"loki/0": URL0}, current=plan, labels={**LABELS, "juju_unit": "mesh-worker-k8s/1"}
    )
    assert layer is not None
    assert list(layer.get("log-targets", {})) == [T0]
