"""The wiring both charm objects share: one reconcile per dispatch, statuses, the backend seam."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import ops

from coordinated_mesh.charm.memory import DatabagMemory
from coordinated_mesh.parse import log_text, shorten

__all__ = ["MAX_STATUS_MESSAGE", "BackendFactory", "Reconciler", "SafeLogText"]

MAX_STATUS_MESSAGE = 250
"""The longest status message set; every message is also made printable."""

BackendT = TypeVar("BackendT")

BackendFactory = Callable[..., BackendT]
"""Builds a Kubernetes backend; called as ``factory(app_name=..., namespace=...)``."""

_NOT_RECONCILED = (ops.CollectStatusEvent, ops.CollectMetricsEvent, ops.ActionEvent)


class SafeLogText(logging.Filter):
    """Makes every record's message safe for ``juju-log`` (:func:`~coordinated_mesh.parse.log_text`).

    Juju's hook tools take the text as a command-line argument: a NUL in it makes the call, and
    so the hook, fail. Installed on the root logger's handlers by :class:`Reconciler`, so it also
    covers what ops and other libraries log with a peer's text in it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its safe form; never drops a record."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: still log something
            message = f"{record.msg!r} {record.args!r}"
        record.msg = log_text(message)
        record.args = ()
        return True


def _install_safe_log_text() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SafeLogText) for f in handler.filters):
            handler.addFilter(SafeLogText())


def _safe_status(status: ops.StatusBase) -> ops.StatusBase:
    message = shorten(status.message, MAX_STATUS_MESSAGE)
    if message == status.message:
        return status
    return ops.StatusBase.from_name(status.name, message)


class Reconciler(ops.Object, Generic[BackendT]):
    """Runs :meth:`reconcile` once per dispatch, whatever the event, and reports its statuses.

    Every Juju event but ``collect-status``, ``collect-metrics``, actions and ``remove`` runs
    :meth:`reconcile` (the first one of a dispatch; deferred events replayed in the same dispatch
    do not run it again); ``remove`` runs :meth:`on_remove` instead. In ``collect-status`` (unit
    and application) the statuses of :meth:`statuses` are added. The Kubernetes backend is built
    on first use by ``backend_factory``, so units that never touch Kubernetes never build one.
    :attr:`memory` remembers what this unit wrote to its databags across hooks. Every status
    message and log line is made safe for Juju's hook tools on the way out
    (:class:`SafeLogText`, :func:`~coordinated_mesh.parse.shorten`).

    Args:
        charm: the charm.
        key: the ``ops.Object`` key.
        backend_factory: builds the backend, called as ``factory(app_name=, namespace=)``.
    """

    def __init__(self, charm: ops.CharmBase, key: str, backend_factory: BackendFactory[BackendT]):
        super().__init__(charm, key)
        _install_safe_log_text()
        self._charm = charm
        # Before any observer below: on leader-elected it forgets before the reconcile writes.
        self.memory = DatabagMemory(charm, f"{key}-databags")
        """What this unit last wrote to its databags (pass it to every databag write)."""
        self._backend_factory = backend_factory
        self._backend: BackendT | None = None
        self._reconciled = False
        for bound in charm.on.events().values():
            if issubclass(bound.event_type, _NOT_RECONCILED):
                continue
            if issubclass(bound.event_type, ops.RemoveEvent):
                self.framework.observe(bound, self._on_remove)
            else:
                self.framework.observe(bound, self._on_event)
        self.framework.observe(charm.on.collect_unit_status, self._on_collect_status)
        self.framework.observe(charm.on.collect_app_status, self._on_collect_status)

    @property
    def backend(self) -> BackendT:
        """The Kubernetes backend, built on first use."""
        if self._backend is None:
            self._backend = self._backend_factory(
                app_name=self._charm.app.name, namespace=self._charm.model.name
            )
        return self._backend

    def reconcile(self) -> None:
        """Bring everything to its desired state; called once per dispatch, safe to call again."""
        raise NotImplementedError

    def on_remove(self) -> None:
        """Clean up when the unit is removed (nothing by default)."""

    def statuses(self) -> Sequence[ops.StatusBase]:
        """The statuses of the last reconcile of this dispatch, most important first.

        Empty when nothing was reconciled (an action): the status stays as it is.
        """
        return ()

    def _on_event(self, _: ops.EventBase) -> None:
        if not self._reconciled:
            self._reconciled = True
            if not self._charm.unit.is_leader():
                self.memory.forget_app()  # another unit writes them now
            self.reconcile()

    def _on_remove(self, _: ops.RemoveEvent) -> None:
        if not self._reconciled:
            self._reconciled = True
            self.on_remove()

    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        for status in self.statuses():
            event.add_status(_safe_status(status))
