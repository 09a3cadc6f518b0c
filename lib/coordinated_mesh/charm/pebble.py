"""Pebble helpers both charms use: write a file only when it changes, replan only when needed."""

from __future__ import annotations

import logging
from collections.abc import Callable

import ops

__all__ = ["ensure_layer", "is_running", "pull_text", "push_and_reload", "push_if_changed"]

logger = logging.getLogger(__name__)


def pull_text(container: ops.Container, path: str) -> str | None:
    """The text of ``path`` in the container; ``None`` when it does not exist or cannot be read."""
    try:
        return container.pull(path).read()
    except (ops.pebble.PathError, ops.pebble.ProtocolError):
        return None


def push_if_changed(
    container: ops.Container, path: str, text: str, *, permissions: int | None = None
) -> bool:
    """Write ``text`` to ``path`` unless the file already holds it; True if it wrote.

    ``permissions`` is the mode of a written file (Pebble's default, 0644, when ``None``).
    """
    if pull_text(container, path) == text:
        return False
    container.push(path, text, make_dirs=True, permissions=permissions)
    logger.info("%s: %s changed (%d bytes)", container.name, path, len(text))
    return True


def is_running(container: ops.Container, service: str) -> bool:
    """Whether Pebble runs ``service`` in the container."""
    services = container.get_services(service)
    return service in services and services[service].is_running()


def ensure_layer(container: ops.Container, label: str, layer: ops.pebble.LayerDict) -> bool:
    """Add ``layer`` and replan only when its services differ from the plan; True if it replanned.

    A service of the layer that is not running (it crashed, or never started) also replans.
    """
    wanted = ops.pebble.Layer(layer)
    plan = container.get_plan()
    unchanged = all(plan.services.get(name) == svc for name, svc in wanted.services.items())
    if unchanged and all(is_running(container, name) for name in wanted.services):
        return False
    container.add_layer(label, wanted, combine=True)
    container.replan()
    logger.info("replanned %s", container.name)
    return True


def push_and_reload(
    container: ops.Container,
    *,
    path: str,
    text: str,
    layer_label: str,
    layer: ops.pebble.LayerDict,
    reload: Callable[[], None],
) -> bool:
    """Write a service's configuration file and keep its layer; reload it only when needed.

    The file is written only when it differs; the layer is added (and replanned) only when it
    differs or a service is not running, which also starts the service with the new file; else a
    changed file calls ``reload`` (``nginx -s reload``, ``SIGHUP``). Returns whether anything
    changed.
    """
    changed = push_if_changed(container, path, text)
    replanned = ensure_layer(container, layer_label, layer)
    if changed and not replanned:
        reload()
    return changed or replanned
