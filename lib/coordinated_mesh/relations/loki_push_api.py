"""``loki_push_api``, requirer side (``logging``): where to push logs.

Each Loki unit's databag: ``endpoint`` = JSON ``{"url": "<push URL>"}``; our application databag
(leader): ``metadata`` = JSON topology, optionally ``alert_rules``
(``../shared/spec/telemetry-interfaces.md``). The coordinator proxies each push URL and hands the
proxied ones to the workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ops

from coordinated_mesh.charm.memory import DatabagMemory
from coordinated_mesh.parse import Problem
from coordinated_mesh.relations._common import (
    TopologyMetadata,
    dumps,
    parse_unit_url,
    read_unit_urls,
    write_changed,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "TopologyMetadata",
    "parse_loki_unit_databag",
    "publish_loki_metadata",
    "read_loki_push_urls",
]

DEFAULT_ENDPOINT = "logging"


def parse_loki_unit_databag(databag: Mapping[str, str]) -> str | None:
    """The validated push URL in a Loki unit databag; ``None`` when not published yet.

    Raises:
        ValueError: the ``endpoint`` value is malformed or its URL is unsafe.
    """
    return parse_unit_url(databag, "endpoint")


def read_loki_push_urls(
    relations: Sequence[ops.Relation],
) -> tuple[dict[str, str], list[Problem]]:
    """Every Loki unit's push URL, by unit name, with the problems of units that were dropped.

    Args:
        relations: the ``logging`` relations (``self.model.relations["logging"]``).
    """
    return read_unit_urls(relations, "endpoint")


def publish_loki_metadata(
    model: ops.Model,
    *,
    charm_name: str,
    alert_rules: Mapping[str, Any] | None = None,
    endpoint: str = DEFAULT_ENDPOINT,
    memory: DatabagMemory | None = None,
) -> bool:
    """Publish our topology (and optional LogQL rules) to every Loki; leader only.

    Returns whether anything was written (always ``False`` on non-leaders).
    """
    if not model.unit.is_leader():
        return False
    values: dict[str, str | None] = {
        "metadata": dumps(TopologyMetadata.from_model(model, charm_name=charm_name).model_dump()),
        "alert_rules": None if alert_rules is None else dumps(dict(alert_rules)),
    }
    changed = False
    for relation in sorted(model.relations[endpoint], key=lambda r: r.id):
        changed |= write_changed(relation.data[model.app], values, memory)
    return changed
