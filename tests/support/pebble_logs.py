"""A model of Pebble's log forwarding: where each log target's lines really go, and re-sends.

``ops.testing`` treats the plan as the truth; real Pebble does not. Source: canonical/pebble,
``internals/overlord/logstate/manager.go`` (``LogManager.PlanChanged`` keeps the gatherer of a
target name already known, creating one only for a new name) and ``gatherer.go``
(``newLogGathererInternal`` builds the client, with the target's location, once;
``logGatherer.PlanChanged`` only re-attaches pullers to the services' buffers, which re-sends the
lines they hold: every layer added re-sends). A restart of the container starts from the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ops
import pytest
from ops import pebble


def logs_to(services: Sequence[str], service: str) -> bool:
    """Whether a target with ``services`` forwards ``service``'s logs (Pebble's ``LogsTo``).

    Entries apply in order, the last one naming the service (or ``all``) wins.
    """
    result = False
    for entry in services:
        if entry in ("all", service):
            result = True
        elif entry in ("-all", f"-{service}"):
            result = False
    return result


@dataclass
class PebbleLogForwarding:
    """The forwarders of one container, fed with its log targets after every layer added."""

    forwarders: dict[str, str] = field(default_factory=dict[str, str])
    """Target name -> the location its forwarder pushes to (fixed when the name appeared)."""
    layers_added: int = 0
    """Layers added so far: each one re-sends the buffered lines of every forwarded service."""

    def plan_changed(self, log_targets: Mapping[str, pebble.LogTarget]) -> None:
        """A layer was added; ``log_targets`` are those of the new plan."""
        self.layers_added += 1
        for name in list(self.forwarders):
            if name not in log_targets:
                del self.forwarders[name]  # gone from the plan: its gatherer is stopped
        for name, target in log_targets.items():
            if name not in self.forwarders:
                self.forwarders[name] = target.location

    def restarted(self, log_targets: Mapping[str, pebble.LogTarget]) -> None:
        """The container restarted: every forwarder is created afresh from the plan."""
        self.forwarders = {name: t.location for name, t in log_targets.items()}

    def destinations(
        self, log_targets: Mapping[str, pebble.LogTarget], service: str
    ) -> dict[str, str]:
        """Where ``service``'s lines really go: target name -> location, forwarding ones only."""
        return {
            name: self.forwarders[name]
            for name, target in sorted(log_targets.items())
            if name in self.forwarders and logs_to(list(target.services), service)
        }


@contextmanager
def observe_pebble_logs(monkeypatch: pytest.MonkeyPatch) -> Generator[PebbleLogForwarding]:
    """Feed every ``Container.add_layer`` of the test (any container) to one model."""
    model = PebbleLogForwarding()
    original: Callable[..., Any] = ops.Container.add_layer

    def add_layer(self: ops.Container, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        model.plan_changed(self.get_plan().log_targets)

    monkeypatch.setattr(ops.Container, "add_layer", add_layer)
    yield model
