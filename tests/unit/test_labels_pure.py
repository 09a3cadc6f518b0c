"""The pure half of reconcile_charm_labels: which labels to set and remove, and in what order."""

from __future__ import annotations

import dataclasses

from coordinated_mesh.k8s.labels import LabelPatch, label_patch, memory_name, plan_labels
from hypothesis import given
from hypothesis import strategies as st

SELECTOR = {"app.kubernetes.io/name": "coord"}
OURS = st.dictionaries(
    st.sampled_from(["mesh/a", "mesh/b", "mesh/c", "app.kubernetes.io/part-of"]),
    st.sampled_from(["x", "y"]),
)
OTHERS = st.dictionaries(st.sampled_from(["team", "other/z"]), st.sampled_from(["1", "2"]))


def apply(labels: dict[str, str], patch: LabelPatch) -> dict[str, str]:
    """What a JSON merge patch of ``patch`` does to ``labels``."""
    result = dict(labels)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def test_memory_name():
    assert memory_name("coord") == "coord-managed-labels"


@given(OURS, OURS, OURS, OTHERS)
def test_patch_sets_wanted_removes_stale_and_ignores_others(
    current_ours: dict[str, str],
    wanted: dict[str, str],
    previous: dict[str, str],
    others: dict[str, str],
):
    current = {**SELECTOR, **others, **current_ours}
    patch = label_patch(current, wanted=wanted, previous=previous, protected=SELECTOR)
    result = apply(current, patch)

    assert wanted.items() <= result.items()
    for stale in previous.keys() - wanted.keys():
        assert stale not in result
    assert {k: result[k] for k in others} == others
    assert result.items() >= SELECTOR.items()
    assert label_patch(result, wanted=wanted, previous=previous, protected=SELECTOR) == {}


def test_patch_is_empty_when_in_place_and_sorted_otherwise():
    current = {**SELECTOR, "mesh/a": "x"}
    assert label_patch(current, wanted={"mesh/a": "x"}, previous={"mesh/a": "x"}) == {}
    patch = label_patch(current, wanted={"mesh/c": "x", "mesh/b": "y"}, previous={"mesh/a": "x"})
    assert list(patch.items()) == [("mesh/a", None), ("mesh/b", "y"), ("mesh/c", "x")]


def test_selector_label_is_protected_from_removal():
    current = {**SELECTOR}
    patch = label_patch(current, wanted={}, previous=SELECTOR, protected=SELECTOR)
    assert patch == {}


def test_statefulset_untouched_when_only_the_service_differs():
    wanted = {"mesh/a": "x"}
    plan = plan_labels(
        wanted,
        previous=wanted,
        statefulset_labels={**SELECTOR, **wanted},
        service_labels=dict(SELECTOR),
        selector=SELECTOR,
    )
    assert plan.statefulset == {}
    assert plan.service == {"mesh/a": "x"}
    assert (plan.memory_before, plan.memory_after) == (None, None)


def test_nothing_written_when_in_place_and_memory_absent_and_nothing_wanted():
    plan = plan_labels({}, previous={}, statefulset_labels=SELECTOR, service_labels=SELECTOR)
    assert not plan.writes


def test_additions_are_remembered_before_they_are_applied():
    plan = plan_labels(
        {"mesh/b": "y"},
        previous={"mesh/a": "x"},
        statefulset_labels={**SELECTOR, "mesh/a": "x"},
        service_labels={**SELECTOR, "mesh/a": "x"},
        selector=SELECTOR,
    )
    assert plan.memory_before == {"mesh/a": "x", "mesh/b": "y"}
    assert plan.memory_after == {"mesh/b": "y"}


@dataclasses.dataclass
class Cluster:
    """The objects and the memory, as reconcile_charm_labels sees them."""

    statefulset: dict[str, str]
    service: dict[str, str]
    memory: dict[str, str]

    def run(self, wanted: dict[str, str], crash_after: int | None = None) -> bool:
        """One call, possibly interrupted after ``crash_after`` writes; returns whether it wrote."""
        plan = plan_labels(
            wanted,
            previous=self.memory,
            statefulset_labels=self.statefulset,
            service_labels=self.service,
            selector=SELECTOR,
        )
        steps = []
        if plan.memory_before is not None:
            steps.append(lambda m=plan.memory_before: setattr(self, "memory", dict(m)))
        if plan.statefulset:
            steps.append(
                lambda: setattr(self, "statefulset", apply(self.statefulset, plan.statefulset))
            )
        if plan.service:
            steps.append(lambda: setattr(self, "service", apply(self.service, plan.service)))
        if plan.memory_after is not None:
            steps.append(lambda m=plan.memory_after: setattr(self, "memory", dict(m)))
        for done, step in enumerate(steps):
            if crash_after is not None and done >= crash_after:
                return True
            step()
        return plan.writes


@given(
    OTHERS,
    st.lists(st.tuples(OURS, st.none() | st.integers(0, 3)), max_size=5),
    OURS,
)
def test_interrupted_calls_never_leak_labels(
    others: dict[str, str], history: list[tuple[dict[str, str], int | None]], final: dict[str, str]
):
    """Whatever was wanted before and wherever calls were interrupted, one full call converges."""
    cluster = Cluster(statefulset={**SELECTOR, **others}, service={**SELECTOR, **others}, memory={})
    for wanted, crash_after in history:
        cluster.run(wanted, crash_after)

    cluster.run(final)

    assert cluster.statefulset == {**SELECTOR, **others, **final}
    assert cluster.service == {**SELECTOR, **others, **final}
    assert cluster.memory == final
    assert cluster.run(final) is False


def test_unreadable_label_memory_is_ignored_not_raised():
    """The ConfigMap is editable by anyone with access: nothing in it may escape a hook."""
    from coordinated_mesh.k8s.labels import MEMORY_KEY, _parse_memory
    from lightkube.resources.core_v1 import ConfigMap

    for raw in ["[" * 100_000, "not json", '{"a": 1}', '["a"]']:
        assert _parse_memory(ConfigMap(data={MEMORY_KEY: raw}), app_name="app") == {}
    assert _parse_memory(ConfigMap(data={MEMORY_KEY: '{"a": "b"}'}), app_name="app") == {"a": "b"}
