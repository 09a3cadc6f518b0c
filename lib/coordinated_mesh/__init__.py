"""Service mesh support for coordinated-worker charms: the names a charm author uses.

A coordinator charm creates a :class:`Coordinator`, a worker charm a :class:`Worker`; the other
names declare policies, configure the telemetry proxy, or are the building blocks on their own.
Everything else lives in the subpackages (``mesh``, ``proxy``, ``k8s``, ``relations``, ``charm``,
``coordinator``, ``worker``, and :mod:`coordinated_mesh.parse`), which are internal: import from
here. Guides and reference: ``docs/`` (start with ``docs/how-to/add-mesh-support.md``).
"""

from __future__ import annotations

from coordinated_mesh.charm.pebble import push_and_reload
from coordinated_mesh.coordinator import Coordinator
from coordinated_mesh.k8s.client import KubernetesError
from coordinated_mesh.k8s.labels import reconcile_charm_labels
from coordinated_mesh.k8s.policy_manager import PolicyResourceManager
from coordinated_mesh.mesh.consumer import ServiceMeshConsumer
from coordinated_mesh.mesh.policies import (
    AppPolicy,
    Endpoint,
    MeshPolicy,
    Method,
    PolicyTargetType,
    UnitPolicy,
)
from coordinated_mesh.parse import HttpUrl, parse_http_url
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.relations.cluster import ProxiedTelemetry
from coordinated_mesh.worker import Worker, WorkerContext

__version__ = "0.1.0"
"""This library's version (semver); the same as the ``coordinated-mesh`` package's."""

__all__ = [
    "AppPolicy",
    "Coordinator",
    "Endpoint",
    "HttpUrl",
    "KubernetesError",
    "MeshPolicy",
    "Method",
    "PolicyResourceManager",
    "PolicyTargetType",
    "ProxiedTelemetry",
    "ServiceMeshConsumer",
    "UnitPolicy",
    "Worker",
    "WorkerContext",
    "WorkerQueryApi",
    "WorkerTelemetryProxyConfig",
    "__version__",
    "parse_http_url",
    "push_and_reload",
    "reconcile_charm_labels",
]
