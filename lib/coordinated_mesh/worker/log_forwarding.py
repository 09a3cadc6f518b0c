"""Pebble log forwarding to Loki: which log targets a workload container's plan must hold (pure).

:func:`log_forwarding_layer` decides the layer to add: one ``loki`` target per push URL, named
after the URL (Pebble keeps a target's first location until the container restarts), with the
Juju topology labels; a target no longer wanted is redeclared with ``services: ["-all"]`` (a plan
cannot delete one). The layer holds only what changes (Pebble re-sends on every layer added).
Why: ``docs/explanation/worker.md#log-forwarding``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from ops import pebble

__all__ = [
    "LAYER_LABEL",
    "LOKI_TARGET_TYPE",
    "changed_targets",
    "is_managed_target_name",
    "log_forwarding_layer",
    "log_target_labels",
    "loki_target_name",
    "wanted_log_targets",
]

LAYER_LABEL = "coordinated-mesh-log-forwarding"
"""The label of the Pebble layer holding the log targets."""
LOKI_TARGET_TYPE = "loki"
FORWARD_ALL = ("all",)
"""``services`` of a forwarding target: every service of the plan."""
FORWARD_NONE = ("-all",)
"""``services`` of a stopped target: no service."""

_LEGACY_UNIT_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,62}/[0-9]{1,9}")
"""Targets named after a Loki unit (``loki/0``), as earlier versions did: ours, to be stopped."""
_HASHED_NAME_RE = re.compile(r"loki-[0-9a-f]{12}")


def loki_target_name(location: str) -> str:
    """The log target name for the push URL ``location``: ``loki-<12 hex digits>``.

    The digits are a SHA-256 prefix of the URL, so the name is stable while the URL is unchanged
    and changes whenever it changes. Pebble creates a target's forwarder, with its location, when
    the name first appears in the plan and keeps it until the container restarts (redeclaring
    the name with a new ``location`` changes the plan, not where logs go); a new name is the only
    way to move logs to a new URL.
    """
    return "loki-" + hashlib.sha256(location.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def is_managed_target_name(name: str) -> bool:
    """Whether ``name`` is a log target this module manages (stops when not wanted).

    That is a name :func:`loki_target_name` gives, or a Loki unit's (``loki/0``), as earlier
    versions named their targets.
    """
    return bool(_LEGACY_UNIT_NAME_RE.fullmatch(name) or _HASHED_NAME_RE.fullmatch(name))


def log_target_labels(
    *, charm: str, model: str, model_uuid: str, application: str, unit: str
) -> dict[str, str]:
    """The Juju topology labels every forwarded log line carries (Pebble adds ``pebble_service``)."""
    return {
        "charm": charm,
        "juju_application": application,
        "juju_model": model,
        "juju_model_uuid": model_uuid,
        "juju_unit": unit,
        "product": "Juju",
    }


def _target(location: str, services: tuple[str, ...], labels: Mapping[str, str]):
    target: pebble.LogTargetDict = {
        "override": "replace",
        "type": LOKI_TARGET_TYPE,
        "location": location,
        "services": list(services),
    }
    if labels:
        target["labels"] = dict(sorted(labels.items()))
    return target


def wanted_log_targets(
    urls: Mapping[str, str],
    *,
    current: Mapping[str, pebble.LogTarget],
    labels: Mapping[str, str],
) -> dict[str, pebble.LogTargetDict]:
    """Every log target this module wants in the plan, sorted by name.

    Args:
        urls: the Loki push URLs to forward to, keyed as received (``{"loki/0": "http://..."}``).
            They must already be validated. Keys sharing a URL share its target.
        current: the log targets of the container's plan now (``container.get_plan().log_targets``).
        labels: the labels of every forwarded log line (see :func:`log_target_labels`).

    Returns:
        One forwarding target per distinct URL (named by :func:`loki_target_name`), plus every
        managed Loki target of ``current`` that is not wanted any more, stopped
        (``services: ["-all"]``, its location kept).
    """
    targets: dict[str, pebble.LogTargetDict] = {}
    for location in sorted(set(urls.values())):
        targets[loki_target_name(location)] = _target(location, FORWARD_ALL, labels)
    for name in sorted(current):
        existing = current[name]
        if name in targets or existing.type != LOKI_TARGET_TYPE:
            continue
        if not is_managed_target_name(name) or not existing.location:
            continue
        targets[name] = _target(existing.location, FORWARD_NONE, existing.labels)
    return dict(sorted(targets.items()))


def _same(target: pebble.LogTargetDict, existing: pebble.LogTarget | None) -> bool:
    """Whether ``existing`` already does what ``target`` says (``override`` is not compared)."""
    if existing is None:
        return False
    return (
        existing.type == target.get("type")
        and existing.location == target.get("location")
        and list(existing.services) == list(target.get("services", []))
        and dict(existing.labels) == dict(target.get("labels", {}))
    )


def changed_targets(
    wanted: Mapping[str, pebble.LogTargetDict], *, current: Mapping[str, pebble.LogTarget]
) -> dict[str, pebble.LogTargetDict]:
    """The targets of ``wanted`` that differ from ``current`` (``{}``: the plan is up to date)."""
    return {name: t for name, t in wanted.items() if not _same(t, current.get(name))}


def log_forwarding_layer(
    urls: Mapping[str, str],
    *,
    current: Mapping[str, pebble.LogTarget],
    labels: Mapping[str, str],
) -> pebble.LayerDict | None:
    """The layer to add (``combine=True``, label :data:`LAYER_LABEL`), or ``None`` if none is needed.

    Arguments are those of :func:`wanted_log_targets`. The layer holds only the targets that
    change, so adding it twice in a row is a no-op the second time (``None``).
    """
    changes = changed_targets(
        wanted_log_targets(urls, current=current, labels=labels), current=current
    )
    if not changes:
        return None
    return {"summary": "log forwarding to Loki", "log-targets": changes}
