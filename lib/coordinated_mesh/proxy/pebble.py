"""The Pebble layers of the coordinator's nginx and nginx-prometheus-exporter containers."""

from __future__ import annotations

from collections.abc import Sequence

from ops.pebble import LayerDict

from coordinated_mesh.proxy.nginx import DEFAULT_CONFIG_PATH, nginx_command
from coordinated_mesh.proxy.plan import NGINX_EXPORTER_PORT

__all__ = ["EXPORTER_PORT", "NGINX_CONFIG_PATH", "exporter_layer", "nginx_layer"]

EXPORTER_PORT = NGINX_EXPORTER_PORT
"""Where nginx-prometheus-exporter serves the coordinator's own nginx metrics."""
NGINX_CONFIG_PATH = DEFAULT_CONFIG_PATH
"""Where the rendered nginx configuration goes in the nginx container."""


def nginx_layer() -> LayerDict:
    """The Pebble layer of the nginx container (nginx in the foreground)."""
    return {
        "summary": "telemetry proxy",
        "services": {
            "nginx": {
                "override": "replace",
                "summary": "nginx: the workers' telemetry proxy",
                "command": nginx_command(NGINX_CONFIG_PATH),
                "startup": "enabled",
            }
        },
    }


def exporter_layer(status_port: int) -> LayerDict:
    """The Pebble layer of the exporter, reading nginx's ``stub_status`` on ``status_port``."""
    command: Sequence[str] = (
        "nginx-prometheus-exporter",
        f"--web.listen-address=:{EXPORTER_PORT}",
        f"--nginx.scrape-uri=http://127.0.0.1:{status_port}/status",
    )
    return {
        "summary": "nginx metrics",
        "services": {
            "nginx-prometheus-exporter": {
                "override": "replace",
                "summary": "exports nginx's status as Prometheus metrics",
                "command": " ".join(command),
                "startup": "enabled",
            }
        },
    }
