"""What this unit last wrote to its own databags, so a steady-state hook writes without reading.

Every ``relation-get`` is a hook-tool process under Juju, and ``ops`` caches a databag only for
one dispatch. :class:`DatabagMemory` keeps, in the unit's local state, a digest of the values last
written to each of our databags; a write of the same values reads and writes nothing. Why it is
safe (only we write our databags; leadership changes forget the application digests):
``docs/explanation/architecture.md#what-a-hook-costs``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, MutableMapping
from typing import Any

import ops

__all__ = [
    "PERIODIC_CHECKS",
    "DatabagMemory",
    "LeaderLabelMemory",
    "LeaderPolicyMemory",
    "write_changed",
]

PERIODIC_CHECKS = ("service", "policies")
"""The leader's periodic checks, in the order they take turns on ``update-status``.

``service``: the Service's labels (:class:`LeaderLabelMemory`); ``policies``: the owned
cluster-internal policies (:class:`LeaderPolicyMemory`). Only the checks of the memories in use
take turns (a worker has no policies: its Service is checked on every ``update-status``).
"""


def _apply(databag: MutableMapping[str, str], values: Mapping[str, str | None]) -> bool:
    changed = False
    for key, value in sorted(values.items()):
        if value is None:
            if key in databag:
                del databag[key]
                changed = True
        elif databag.get(key) != value:
            databag[key] = value
            changed = True
    return changed


class DatabagMemory(ops.Object):
    """Digests of the values this unit last wrote to each of its (and its app's) databags.

    Kept in ``ops``' local unit state (no hook tool; lost with the pod, then the next write reads
    again). Application digests are forgotten whenever the unit is seen not leading and on
    ``leader-elected``, since another leader may have written meanwhile.

    Args:
        charm: the charm.
        key: the ``ops.Object`` key (one memory per charm object using it).
    """

    _stored = ops.StoredState()

    def __init__(self, charm: ops.CharmBase, key: str):
        super().__init__(charm, key)
        self._charm = charm
        self._stored.set_default(digests={}, values={})
        self._event = ""
        self._checks: set[str] = set()
        self._turn: str | None = None
        self.framework.observe(charm.on.leader_elected, self._on_leader_elected)
        self.framework.observe(charm.on.update_status, self._on_update_status)
        self.framework.observe(charm.on.upgrade_charm, self._on_upgrade_charm)

    def _on_leader_elected(self, _: ops.LeaderElectedEvent) -> None:
        self.forget_app()

    def _on_update_status(self, _: ops.UpdateStatusEvent) -> None:
        self._event = "update-status"

    def _on_upgrade_charm(self, _: ops.UpgradeCharmEvent) -> None:
        self._event = "upgrade-charm"

    @property
    def periodic_hook(self) -> bool:
        """Whether this dispatch is ``update-status`` or ``upgrade-charm``.

        For checks that are cheap enough to make in full on each (the TLS backends' handshake),
        unlike the Kubernetes reads, which take turns (:meth:`check_due`).
        """
        return self._event in ("update-status", "upgrade-charm")

    def check_due(self, name: str) -> bool:
        """Whether the periodic check ``name`` (one of :data:`PERIODIC_CHECKS`) is due now.

        Every check on ``upgrade-charm`` (after a refresh, when Juju rewrites the StatefulSet and
        the Service); on ``update-status`` (Juju's only periodic hook), one check per hook, each
        in turn, so each is made at least every ``len(checks in use)`` ``update-status`` hooks;
        on any other hook, none. The turn is kept with what only the leader writes (forgotten
        with it) and moves on the first time this is asked in an ``update-status`` hook.
        Why: ``docs/explanation/labels-and-policies.md#when-each-object-is-read``.
        """
        if self._event == "upgrade-charm":
            return True
        return self._event == "update-status" and self._this_turn() == name

    def _use_check(self, name: str) -> None:
        self._checks.add(name)

    def _this_turn(self) -> str:
        if self._turn is None:
            checks = [name for name in PERIODIC_CHECKS if name in self._checks]
            count = self._recall("periodic-turn")
            turn = count if isinstance(count, int) and count >= 0 else 0
            self._turn = checks[turn % len(checks)] if checks else ""
            self._remember("periodic-turn", (turn + 1) % max(len(checks), 1))
        return self._turn

    def forget_app(self) -> None:
        """Forget everything only the leader writes (the next writes read first)."""
        digests: dict[str, str] = dict(self._stored.digests)  # pyright: ignore[reportUnknownArgumentType]
        kept = {key: value for key, value in digests.items() if not key.endswith("/app")}
        if kept != digests:
            self._stored.digests = kept
        if self._stored.values:
            self._stored.values = {}

    def label_memory(self) -> LeaderLabelMemory:
        """What this unit, as the leader, last applied as its application's labels (see there)."""
        self._use_check("service")
        return LeaderLabelMemory(self)

    def policy_memory(self) -> LeaderPolicyMemory:
        """What this unit, as the leader, last found or made its owned policies (see there)."""
        self._use_check("policies")
        return LeaderPolicyMemory(self)

    def _recall(self, name: str) -> Any:
        return self._stored.values.get(name)

    def _remember(self, name: str, value: Any) -> None:
        values = self._stored.values  # an ops StoredDict: setting a key marks it for saving
        if name not in values or values[name] != value:
            values[name] = value

    def _key(self, databag: ops.RelationDataContent) -> str | None:
        relation = databag.relation
        if databag is relation.data[self._charm.app]:
            return f"{relation.id}/app"
        if databag is relation.data[self._charm.unit]:
            return f"{relation.id}/unit"
        return None  # not ours: never remembered

    def write(self, databag: MutableMapping[str, str], values: Mapping[str, str | None]) -> bool:
        """:func:`write_changed`, skipped (no read) when these values were written last time."""
        key = self._key(databag) if isinstance(databag, ops.RelationDataContent) else None
        if key is None:
            return _apply(databag, values)
        digest = _digest(values)
        if self._stored.digests.get(key) == digest:
            return False
        changed = _apply(databag, values)
        digests: dict[str, Any] = dict(self._stored.digests)  # pyright: ignore[reportUnknownArgumentType]
        digests[key] = digest
        self._stored.digests = digests
        return changed


class LeaderLabelMemory:
    """The labels this leader last applied to its StatefulSet and Service, kept across hooks.

    It mirrors the Kubernetes label memory (``k8s/labels.py``) so that a steady-state hook need
    not read it; forgotten, like the application digests, whenever leadership may have moved.
    """

    def __init__(self, memory: DatabagMemory):
        self._memory = memory

    def recall(self) -> dict[str, str] | None:
        """The labels applied last, or ``None`` when not known here."""
        value = self._memory._recall("k8s-labels")  # pyright: ignore[reportPrivateUsage]
        return None if value is None else {str(k): str(v) for k, v in dict(value).items()}

    def remember(self, labels: Mapping[str, str]) -> None:
        """Record the labels just applied (and recorded in Kubernetes)."""
        self._memory._remember("k8s-labels", dict(sorted(labels.items())))  # pyright: ignore[reportPrivateUsage]

    def service_check_due(self) -> bool:
        """Whether the Service is checked in this hook (:meth:`DatabagMemory.check_due`)."""
        return self._memory.check_due("service")


class LeaderPolicyMemory:
    """The digest of the cluster-internal policies this leader last listed or wrote as owned.

    A hook whose wanted policies have this digest need not list them, unless
    :meth:`check_due`; forgotten, like the application digests, whenever leadership may have
    moved (a ``PolicyCache`` of ``k8s/policy_manager.py``).
    """

    def __init__(self, memory: DatabagMemory):
        self._memory = memory

    def recall(self) -> str | None:
        """The digest recorded last, or ``None`` when not known here."""
        value = self._memory._recall("k8s-policies")  # pyright: ignore[reportPrivateUsage]
        return value if isinstance(value, str) else None

    def remember(self, digest: str | None) -> None:
        """Record the digest of what is owned now; ``None`` forgets it (the next hook lists)."""
        self._memory._remember("k8s-policies", digest)  # pyright: ignore[reportPrivateUsage]

    def check_due(self) -> bool:
        """Whether the policies are listed in this hook (:meth:`DatabagMemory.check_due`)."""
        return self._memory.check_due("policies")


def _digest(values: Mapping[str, str | None]) -> str:
    text = json.dumps(sorted(values.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_changed(
    databag: MutableMapping[str, str],
    values: Mapping[str, str | None],
    memory: DatabagMemory | None = None,
) -> bool:
    """Set each key to its value (``None`` deletes the key) where it differs; return if any did.

    With ``memory``, values equal to those written last time are not even read.
    """
    if memory is not None:
        return memory.write(databag, values)
    return _apply(databag, values)
