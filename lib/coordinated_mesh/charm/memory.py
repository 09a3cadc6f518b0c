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

__all__ = ["DatabagMemory", "LeaderLabelMemory", "write_changed"]


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
        self._periodic = False
        self.framework.observe(charm.on.leader_elected, self._on_leader_elected)
        self.framework.observe(charm.on.update_status, self._on_periodic)
        self.framework.observe(charm.on.upgrade_charm, self._on_periodic)

    def _on_leader_elected(self, _: ops.LeaderElectedEvent) -> None:
        self.forget_app()

    def _on_periodic(self, _: ops.EventBase) -> None:
        self._periodic = True

    @property
    def periodic_check(self) -> bool:
        """Whether this dispatch is ``update-status`` or ``upgrade-charm``: check everything again.

        ``update-status`` is Juju's only periodic hook; ``upgrade-charm`` follows a refresh, when
        Juju rewrites the StatefulSet and the Service. Why these:
        ``docs/explanation/labels-and-policies.md#when-each-object-is-read``.
        """
        return self._periodic

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
        return LeaderLabelMemory(self)

    def _recall(self, name: str) -> Any:
        return self._stored.values.get(name)

    def _remember(self, name: str, value: Any) -> None:
        values: dict[str, Any] = dict(self._stored.values)  # pyright: ignore[reportUnknownArgumentType]
        if values.get(name) != value:
            values[name] = value
            self._stored.values = values

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
        """Whether this hook is one of the periodic check (:attr:`DatabagMemory.periodic_check`)."""
        return self._memory.periodic_check


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
