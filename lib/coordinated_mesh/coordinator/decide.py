"""What the coordinator wants this hook, decided from what it observed: pure functions."""

from __future__ import annotations

from coordinated_mesh.mesh.policies import AppPolicy, Endpoint, Method, UnitPolicy
from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.pebble import EXPORTER_PORT

WORKER_METRICS_PATH_PATTERN = "/proxy/worker/{*}/metrics"
"""The proxied worker metrics paths, as an Istio path template (one segment: the worker unit)."""


def default_mesh_policies(
    proxy: WorkerTelemetryProxyConfig, *, metrics_relation: str
) -> list[AppPolicy | UnitPolicy]:
    """The external policies every coordinator needs, before the charm's own ones.

    * whoever scrapes us over ``metrics_relation`` may reach the nginx exporter on every unit;
    * and may ``GET`` the proxied worker metrics on the coordinator's Service, on the port the
      published scrape jobs point at (``http_port``: TLS is not served yet).
    """
    return [
        UnitPolicy(relation=metrics_relation, ports=[EXPORTER_PORT]),
        AppPolicy(
            relation=metrics_relation,
            endpoints=[
                Endpoint(
                    ports=[proxy.http_port],
                    methods=[Method.get],
                    paths=[WORKER_METRICS_PATH_PATTERN],
                )
            ],
        ),
    ]
