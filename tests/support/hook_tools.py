"""Juju's hook tools' argument constraint, for ``ops.testing`` runs.

The model, and its source: Juju hands a charm its hook tools (``juju-log``, ``status-set``,
``action-log``, ``action-set``) as executables, and ops runs them through ``subprocess``
(``ops.hookcmds``) with the text as a command-line argument. A command-line argument is a
NUL-terminated C string (execve(2)); CPython refuses to build one from text holding NUL
(``ValueError: embedded null byte``, ``PyUnicode_FSConverter``) and from a lone surrogate it
cannot encode (``UnicodeEncodeError``, ``os.fsencode``). Either escapes the hook: under Juju the
hook errors. ``ops.testing`` keeps logs and statuses in-process, so it never sees this;
:func:`enforce_hook_tool_arguments` makes it. ``test_hook_tool_model_matches_subprocess`` checks
this model against a real ``subprocess`` call.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from scenario import mocking

__all__ = ["check_argument", "enforce_hook_tool_arguments", "is_display_safe"]


def check_argument(text: str) -> None:
    """Raise as CPython's ``subprocess`` does for an argument it cannot pass to a hook tool."""
    os.fsencode(text)  # UnicodeEncodeError for a surrogate surrogateescape cannot encode
    if "\0" in text:
        raise ValueError("embedded null byte")


def is_display_safe(text: str, *, multiline: bool = False) -> bool:
    """Our stricter rule: no control, format (bidi) or unassigned characters (but line breaks)."""
    lines = text.split("\n") if multiline else [text]
    return all(line.isprintable() for line in lines)


def enforce_hook_tool_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``ops.testing``'s status-set, juju-log, action-log and action-set fail like Juju's."""
    backend: Any = mocking._MockModelBackend  # pyright: ignore[reportPrivateUsage]
    status_set = backend.status_set
    juju_log = backend.juju_log
    action_log = backend.action_log
    action_set = backend.action_set

    def checked_status_set(self: Any, status: Any, message: str = "", **kwargs: Any) -> None:
        check_argument(message)
        status_set(self, status, message, **kwargs)

    def checked_juju_log(self: Any, level: str, message: str) -> None:
        check_argument(message)
        juju_log(self, level, message)

    def checked_action_log(self: Any, message: str) -> None:
        check_argument(message)
        action_log(self, message)

    def checked_action_set(self: Any, results: dict[str, Any]) -> None:
        for key, value in results.items():
            check_argument(f"{key}={value}")
        action_set(self, results)

    monkeypatch.setattr(backend, "status_set", checked_status_set)
    monkeypatch.setattr(backend, "juju_log", checked_juju_log)
    monkeypatch.setattr(backend, "action_log", checked_action_log)
    monkeypatch.setattr(backend, "action_set", checked_action_set)
