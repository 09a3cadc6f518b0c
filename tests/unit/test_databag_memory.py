"""Our own databags are written from memory: a steady-state hook reads none of them.

:class:`~coordinated_mesh.charm.memory.DatabagMemory` keeps a digest of what this unit last wrote
to each of its databags in the unit's local state. What is checked here: the steady state reads
no databag of ours; a change is still written; a leadership change (``leader-elected``, or a hook
seen as a non-leader) forgets the application digests, so a new leader reads and rewrites.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import ops
from coordinated_mesh.charm.memory import DatabagMemory
from ops import testing

from tests.support.coordinator import (
    APP,
    FakeKubernetes,
    loki_relation,
    mesh_relation,
    metrics_relation,
    state,
    worker_relation,
)

Ctx = testing.Context[Any]


def own(bags_read: list[str]) -> list[str]:
    """The databags of ours that were read (the app's and the unit's)."""
    return [name for name in bags_read if name in (APP, f"{APP}/0")]


def cluster_bag(out: testing.State) -> dict[str, str]:
    (relation,) = [r for r in out.relations if r.endpoint == "cluster"]
    return dict(relation.local_app_data)


def test_the_steady_state_reads_none_of_our_databags(
    ctx: Ctx, kube: FakeKubernetes, bags_read: list[str]
):
    st = state(worker_relation("w1", 2), mesh_relation(), loki_relation(), metrics_relation())
    out = ctx.run(ctx.on.config_changed(), st)
    assert own(bags_read) != []  # the first hook compares with what is there
    bags_read.clear()
    again = ctx.run(ctx.on.update_status(), out)
    assert own(bags_read) == []
    assert again.relations == out.relations  # and nothing was lost or rewritten


def test_a_change_is_still_written(ctx: Ctx, kube: FakeKubernetes):
    out = ctx.run(ctx.on.config_changed(), state(worker_relation("w1"), loki_relation(1)))
    before = json.loads(cluster_bag(out)["loki_endpoints"])
    assert sorted(before) == ["loki/0"]
    relations = [r for r in out.relations if r.endpoint != "logging"] + [loki_relation(2)]
    after = ctx.run(ctx.on.update_status(), dataclasses.replace(out, relations=relations))
    assert sorted(json.loads(cluster_bag(after)["loki_endpoints"])) == ["loki/0", "loki/1"]


def _tampered(out: testing.State) -> tuple[testing.State, dict[str, str]]:
    """``out`` with the cluster application databag as another leader might have left it."""
    (relation,) = [r for r in out.relations if r.endpoint == "cluster"]
    wanted = dict(relation.local_app_data)
    stale = {**wanted, "worker_config": json.dumps("written by another leader")}
    relations = [r for r in out.relations if r.endpoint != "cluster"]
    relations.append(dataclasses.replace(relation, local_app_data=stale))
    return dataclasses.replace(out, relations=relations), wanted


def test_leader_elected_forgets_what_was_written(ctx: Ctx, kube: FakeKubernetes):
    out = ctx.run(ctx.on.config_changed(), state(worker_relation("w1")))
    tampered, wanted = _tampered(out)
    again = ctx.run(ctx.on.leader_elected(), tampered)
    assert cluster_bag(again) == wanted


def test_a_hook_as_non_leader_forgets_what_was_written(ctx: Ctx, kube: FakeKubernetes):
    out = ctx.run(ctx.on.config_changed(), state(worker_relation("w1")))
    out = ctx.run(ctx.on.update_status(), dataclasses.replace(out, leader=False))
    tampered, wanted = _tampered(dataclasses.replace(out, leader=True))
    again = ctx.run(ctx.on.update_status(), tampered)
    assert cluster_bag(again) == wanted


def test_unit_databags_are_remembered_as_leadership_changes(
    ctx: Ctx, kube: FakeKubernetes, bags_read: list[str]
):
    out = ctx.run(ctx.on.config_changed(), state(worker_relation("w1"), metrics_relation()))
    bags_read.clear()
    ctx.run(ctx.on.update_status(), dataclasses.replace(out, leader=False))
    assert f"{APP}/0" not in bags_read


class _RememberingCharm(ops.CharmBase):
    """A charm that records labels in a ``DatabagMemory`` as a leader would (and reads them)."""

    seen: typing.ClassVar[list[dict[str, str] | None]] = []

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.memory = DatabagMemory(self, "memory")
        framework.observe(self.on.config_changed, self._remember)
        framework.observe(self.on.update_status, self._recall)

    def _remember(self, _: ops.EventBase) -> None:
        self.memory.label_memory().remember({"b": "2", "a": "1"})

    def _recall(self, _: ops.EventBase) -> None:
        if not self.unit.is_leader():
            self.memory.forget_app()
        self.seen.append(self.memory.label_memory().recall())


def test_the_label_memory_is_kept_across_hooks_and_forgotten_with_leadership():
    ctx = testing.Context(_RememberingCharm, meta={"name": "remembering"})
    _RememberingCharm.seen.clear()
    out = ctx.run(ctx.on.config_changed(), testing.State(leader=True))
    out = ctx.run(ctx.on.update_status(), out)
    assert _RememberingCharm.seen == [{"a": "1", "b": "2"}]
    elected = ctx.run(ctx.on.leader_elected(), out)
    ctx.run(ctx.on.update_status(), elected)
    ctx.run(ctx.on.update_status(), dataclasses.replace(out, leader=False))
    assert _RememberingCharm.seen[1:] == [None, None]


class _PeriodicCharm(ops.CharmBase):
    """Records, in each hook, whether the label memory says a check of the Service is due."""

    seen: typing.ClassVar[list[bool]] = []

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.memory = DatabagMemory(self, "memory")
        for event in (
            self.on.update_status,
            self.on.upgrade_charm,
            self.on.config_changed,
            self.on.leader_elected,
        ):
            framework.observe(event, self._record)

    def _record(self, _: ops.EventBase) -> None:
        self.seen.append(self.memory.label_memory().service_check_due())


def test_the_service_check_is_due_on_update_status_and_upgrade_charm_only():
    ctx = testing.Context(_PeriodicCharm, meta={"name": "periodic"})
    _PeriodicCharm.seen.clear()
    state = testing.State(leader=True)
    for event in (
        ctx.on.config_changed(),
        ctx.on.update_status(),
        ctx.on.leader_elected(),
        ctx.on.upgrade_charm(),
        ctx.on.config_changed(),
    ):
        state = ctx.run(event, state)
    assert _PeriodicCharm.seen == [False, True, False, True, False]


class _TurnsCharm(ops.CharmBase):
    """Uses both leader memories, as the coordinator does; records which check is due."""

    seen: typing.ClassVar[list[tuple[bool, bool]]] = []

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.memory = DatabagMemory(self, "memory")
        self.labels = self.memory.label_memory()
        self.policies = self.memory.policy_memory()
        for event in (
            self.on.update_status,
            self.on.upgrade_charm,
            self.on.config_changed,
            self.on.leader_elected,
        ):
            framework.observe(event, self._record)

    def _record(self, _: ops.EventBase) -> None:
        # Asked twice, in either order: the turn moves once per hook.
        due = (self.labels.service_check_due(), self.policies.check_due())
        assert (self.policies.check_due(), self.labels.service_check_due()) == due[::-1]
        self.seen.append(due)


def test_with_policies_too_update_status_checks_the_service_and_the_policies_in_turn():
    ctx = testing.Context(_TurnsCharm, meta={"name": "turns"})
    _TurnsCharm.seen.clear()
    state = testing.State(leader=True)
    for event in (
        ctx.on.update_status(),
        ctx.on.config_changed(),
        ctx.on.update_status(),
        ctx.on.update_status(),
        ctx.on.upgrade_charm(),
        ctx.on.update_status(),
        ctx.on.leader_elected(),  # forgets the turn with the rest: the Service comes first
        ctx.on.update_status(),
        ctx.on.update_status(),
    ):
        state = ctx.run(event, state)
    service, policies, none, both = (True, False), (False, True), (False, False), (True, True)
    assert _TurnsCharm.seen == [
        service,
        none,
        policies,
        service,
        both,
        policies,
        none,
        service,
        policies,
    ]


def test_the_policy_memory_is_kept_across_hooks_and_forgotten_with_leadership():
    class _Charm(ops.CharmBase):
        seen: typing.ClassVar[list[str | None]] = []

        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            self.memory = DatabagMemory(self, "memory")
            framework.observe(self.on.config_changed, self._remember)
            framework.observe(self.on.update_status, self._recall)

        def _remember(self, _: ops.EventBase) -> None:
            self.memory.label_memory().remember({"a": "1"})  # both kept side by side
            self.memory.policy_memory().remember("digest")

        def _recall(self, _: ops.EventBase) -> None:
            self.seen.append(self.memory.policy_memory().recall())

    ctx = testing.Context(_Charm, meta={"name": "remembering"})
    out = ctx.run(ctx.on.config_changed(), testing.State(leader=True))
    out = ctx.run(ctx.on.update_status(), out)
    elected = ctx.run(ctx.on.leader_elected(), out)
    ctx.run(ctx.on.update_status(), elected)
    assert _Charm.seen == ["digest", None]
