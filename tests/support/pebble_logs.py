"""A model of Pebble's log forwarding: where each log target's lines really go, and re-sends.

``ops.testing`` treats the plan as the truth; real Pebble does not. Source: canonical/pebble,
``internals/overlord/logstate/manager.go`` (``LogManager.PlanChanged`` keeps the gatherer of a
target name already known, creating one only for a new name) and ``gatherer.go``
(``newLogGathererInternal`` builds the client, with the target's location, once;
``logGatherer.PlanChanged`` only re-attaches pullers to the services' buffers, which re-sends the
lines they hold: every layer added re-sends). A restart of the container starts from the plan.

TLS: the Loki client is ``&http.Client{Timeout: ...}`` (``internals/overlord/logstate/loki/loki.go``,
``NewClient``), Go's default transport, whose TLS verification uses the system roots; Go loads
those once per process (golang/go ``src/crypto/x509/root.go``: ``systemRootsPool`` runs
``once.Do(initSystemRoots)``), from every file of ``/etc/ssl/certs`` among others
(``root_unix.go`` ``loadSystemRoots``, ``root_linux.go`` ``certDirectories``). The model loads
the container's ``/etc/ssl/certs`` when the first ``https`` forwarder appears and keeps it
until a restart. Read at canonical/pebble v1.32.1 and golang/go commits 7926af0 (``root.go``,
``root_unix.go``) and a6ea860 (``root_linux.go``).
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
    roots: frozenset[str] | None = None
    """The PEM texts of Pebble's system roots, loaded once (``None``: not loaded yet)."""

    def plan_changed(
        self,
        log_targets: Mapping[str, pebble.LogTarget],
        read_roots: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        """A layer was added; ``log_targets`` are those of the new plan; ``read_roots`` reads
        the container's ``/etc/ssl/certs`` (called once, when the first ``https`` one appears)."""
        self.layers_added += 1
        for name in list(self.forwarders):
            if name not in log_targets:
                del self.forwarders[name]  # gone from the plan: its gatherer is stopped
        for name, target in log_targets.items():
            if name not in self.forwarders:
                self.forwarders[name] = target.location
        if self.roots is None and any(
            location.startswith("https://") for location in self.forwarders.values()
        ):
            self.roots = read_roots()

    def restarted(
        self,
        log_targets: Mapping[str, pebble.LogTarget],
        read_roots: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        """The container restarted: every forwarder is created afresh from the plan, and the
        roots are loaded again, by the first ``https`` one (``read_roots``: the image's)."""
        self.forwarders = {name: t.location for name, t in log_targets.items()}
        self.roots = None
        if any(location.startswith("https://") for location in self.forwarders.values()):
            self.roots = read_roots()

    def verifies(self, location: str, ca_pem: str) -> bool:
        """Whether a forwarder pushing to ``location`` gets through when the server's
        certificate is signed by ``ca_pem``: plain HTTP always, HTTPS if the roots hold it."""
        if not location.startswith("https://"):
            return True
        return self.roots is not None and ca_pem in self.roots

    def destinations(
        self, log_targets: Mapping[str, pebble.LogTarget], service: str
    ) -> dict[str, str]:
        """Where ``service``'s lines really go: target name -> location, forwarding ones only."""
        return {
            name: self.forwarders[name]
            for name, target in sorted(log_targets.items())
            if name in self.forwarders and logs_to(list(target.services), service)
        }


CERT_DIRECTORY = "/etc/ssl/certs"


def _system_roots(container: ops.Container) -> frozenset[str]:
    """The text of every regular file in the container's ``/etc/ssl/certs`` (Go reads them all)."""
    try:
        files = container.list_files(CERT_DIRECTORY)
    except pebble.APIError:
        return frozenset()
    return frozenset(container.pull(f.path).read() for f in files if f.type == pebble.FileType.FILE)


@contextmanager
def observe_pebble_logs(monkeypatch: pytest.MonkeyPatch) -> Generator[PebbleLogForwarding]:
    """Feed every ``Container.add_layer`` of the test (any container) to one model."""
    model = PebbleLogForwarding()
    original: Callable[..., Any] = ops.Container.add_layer

    def add_layer(self: ops.Container, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        model.plan_changed(self.get_plan().log_targets, lambda: _system_roots(self))

    monkeypatch.setattr(ops.Container, "add_layer", add_layer)
    yield model
