"""The charm's own traces (``ops[tracing]``): where to send them, set once per hook.

Both charm objects learn their receiver from data they already read (the coordinator from its
``charm-tracing`` backend, a worker from the proxied receivers on ``cluster``), so they use
``ops.tracing.set_destination`` rather than ``ops.tracing.Tracing`` (which would request
``otlp_http`` on a relation of its own). ``None`` stops sending; spans stay buffered by ops.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import ops

from coordinated_mesh.parse import parse_http_url

__all__ = ["OTLP_TRACES_PATH", "charm_traces_url", "send_charm_traces_to"]

logger = logging.getLogger(__name__)

OTLP_TRACES_PATH = "/v1/traces"
"""Where an OTLP/HTTP receiver takes traces, under its base URL."""


def charm_traces_url(receivers: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL of ``receivers`` (protocol -> URL), or ``None`` (pure).

    The ``otlp_http`` receiver (a base URL, perhaps with a path, as a proxy hands out) gets
    :data:`OTLP_TRACES_PATH` appended; an invalid one counts as none. ops' exporter speaks
    OTLP/HTTP only, so other protocols are not used.
    """
    raw = receivers.get("otlp_http")
    if not raw:
        return None
    try:
        url = parse_http_url(raw)
    except ValueError:
        return None
    return str(url).rstrip("/") + OTLP_TRACES_PATH


def send_charm_traces_to(url: str | None, *, ca: str | None = None) -> None:
    """Send this dispatch's (and the buffered) charm spans to ``url``; ``None`` stops sending.

    A no-op when ``ops[tracing]`` is not installed. ``ca`` (a PEM bundle) verifies an
    ``https`` receiver; ``None`` uses the system's CA list.
    """
    tracing = ops.tracing
    if tracing is None:  # the charm was built without the ops[tracing] extra
        return
    tracing.set_destination(url, ca if url and url.startswith("https://") else None)
