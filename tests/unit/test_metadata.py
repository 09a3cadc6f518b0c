"""require_declared, and the library objects that use it, fail early on undeclared names."""

from __future__ import annotations

from typing import Any

import ops
import pytest
from coordinated_mesh.charm.metadata import require_declared
from ops import testing

META: dict[str, Any] = {
    "name": "probe",
    "containers": {"workload": {}},
    "requires": {"logging": {"interface": "loki_push_api"}},
}
ACTIONS: dict[str, Any] = {"show": {}}


def _run(check: dict[str, Any]) -> None:
    class Probe(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            require_declared(self, **check)

    ctx = testing.Context(Probe, meta=META, actions=ACTIONS)
    ctx.run(ctx.on.update_status(), testing.State())


def test_declared_names_pass():
    _run(
        {
            "relations": {"logging": "logging_endpoint"},
            "containers": {"workload": "container_name"},
            "actions": {"show": "show_action"},
        }
    )


def test_every_missing_name_is_listed_with_its_purpose():
    with pytest.raises(testing.errors.UncaughtCharmError) as caught:
        _run(
            {
                "relations": {"logging": "ok", "send-remote-write": "remote_write_endpoint"},
                "containers": {"nginx": "nginx_container"},
                "actions": {"show-mesh": "show_mesh_action"},
            }
        )
    message = str(caught.value.__cause__)
    assert "relation endpoint 'send-remote-write' (remote_write_endpoint)" in message
    assert "container 'nginx' (nginx_container)" in message
    assert "action 'show-mesh' (show_mesh_action)" in message
    assert "'logging'" not in message
    assert message.startswith("probe does not declare")
