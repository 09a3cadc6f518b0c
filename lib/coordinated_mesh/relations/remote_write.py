"""``prometheus_remote_write``, requirer side: where to remote-write (``send-remote-write``).

Wire format: each provider unit's databag holds ``remote_write`` = JSON ``{"url": "<URL>"}``
(Prometheus ``.../api/v1/write``, Mimir ``.../api/v1/push``). Our application databag carries only
``alert_rules``, which the coordinator does not publish.

Several units may publish the same URL (a load-balanced Service); the proxy then routes that URL
once (see :func:`coordinated_mesh.proxy.plan.build_telemetry_proxy`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ops

from coordinated_mesh.parse import Problem
from coordinated_mesh.relations._common import parse_unit_url, read_unit_urls

__all__ = [
    "DEFAULT_ENDPOINT",
    "parse_remote_write_unit_databag",
    "read_remote_write_urls",
]

DEFAULT_ENDPOINT = "send-remote-write"


def parse_remote_write_unit_databag(databag: Mapping[str, str]) -> str | None:
    """The validated remote-write URL in a provider unit databag; ``None`` when not published.

    Raises:
        ValueError: the ``remote_write`` value is malformed or its URL is unsafe.
    """
    return parse_unit_url(databag, "remote_write")


def read_remote_write_urls(
    relations: Sequence[ops.Relation],
) -> tuple[dict[str, str], list[Problem]]:
    """Every provider unit's remote-write URL, by unit name, with the problems of dropped units.

    Args:
        relations: the ``send-remote-write`` relations.
    """
    return read_unit_urls(relations, "remote_write")
