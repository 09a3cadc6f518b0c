"""The commands a status tells an operator to run, written once."""

from __future__ import annotations

__all__ = ["integrate_hint", "trust_hint"]


def trust_hint(app_name: str) -> str:
    """The command that grants ``app_name`` the Kubernetes access this library needs."""
    return f"juju trust {app_name} --scope=cluster"


def integrate_hint(app_name: str, endpoint: str, other: str, other_endpoint: str) -> str:
    """The command that relates ``app_name:endpoint`` to ``other:other_endpoint``."""
    return f"juju integrate {app_name}:{endpoint} {other}:{other_endpoint}"
