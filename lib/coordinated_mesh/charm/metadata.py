"""Checks that a charm declares the endpoints, containers and actions a library object uses.

``ops`` only knows what ``charmcraft.yaml`` declares: an undeclared endpoint fails when a hook
first touches it, which may be long after deployment (say, when somebody first relates Loki). The
library's objects check their names when the charm is constructed instead, so a typo or a missing
declaration fails on the first hook of every unit, with a message that says what to add.
"""

from __future__ import annotations

from collections.abc import Mapping

import ops

__all__ = ["require_declared"]


def require_declared(
    charm: ops.CharmBase,
    *,
    relations: Mapping[str, str] | None = None,
    containers: Mapping[str, str] | None = None,
    actions: Mapping[str, str] | None = None,
) -> None:
    """Raise unless ``charm`` declares every name given.

    Each mapping goes from a name to what it is for (for the message), e.g.
    ``{"logging": "logging_endpoint"}``.

    Raises:
        ValueError: something is not declared; the message lists all of them.
    """
    meta = charm.meta
    missing = [
        f"{kind} {name!r} ({purpose})"
        for kind, wanted, declared in (
            ("relation endpoint", relations, meta.relations),
            ("container", containers, meta.containers),
            ("action", actions, meta.actions),
        )
        for name, purpose in sorted((wanted or {}).items())
        if name not in declared
    ]
    if missing:
        raise ValueError(
            f"{meta.name} does not declare {', '.join(missing)}: "
            "add it to charmcraft.yaml or fix the name"
        )
