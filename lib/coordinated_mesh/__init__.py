"""Service mesh support for coordinated-worker charms: the names a charm author uses.

A coordinator charm creates a :class:`Coordinator`, a worker charm a :class:`Worker`; the other
names declare policies, configure the telemetry proxy, or are the building blocks on their own.
Everything else lives in the subpackages (``mesh``, ``proxy``, ``k8s``, ``relations``, ``charm``,
``coordinator``, ``worker``, and :mod:`coordinated_mesh.parse`), which are internal: import from
here. Guides and reference: ``docs/`` (start with ``docs/how-to/add-mesh-support.md``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "AppPolicy": "coordinated_mesh.mesh.policies",
    "Coordinator": "coordinated_mesh.coordinator",
    "Endpoint": "coordinated_mesh.mesh.policies",
    "HttpUrl": "coordinated_mesh.parse",
    "KubernetesError": "coordinated_mesh.k8s.client",
    "MeshPolicy": "coordinated_mesh.mesh.policies",
    "Method": "coordinated_mesh.mesh.policies",
    "PolicyResourceManager": "coordinated_mesh.k8s.policy_manager",
    "PolicyTargetType": "coordinated_mesh.mesh.policies",
    "ProxiedTelemetry": "coordinated_mesh.relations.cluster",
    "ServiceMeshConsumer": "coordinated_mesh.mesh.consumer",
    "UnitPolicy": "coordinated_mesh.mesh.policies",
    "Worker": "coordinated_mesh.worker",
    "WorkerContext": "coordinated_mesh.worker",
    "WorkerQueryApi": "coordinated_mesh.proxy.config",
    "WorkerTelemetryProxyConfig": "coordinated_mesh.proxy.config",
    "parse_http_url": "coordinated_mesh.parse",
    "push_and_reload": "coordinated_mesh.charm.pebble",
    "reconcile_charm_labels": "coordinated_mesh.k8s.labels",
}
"""Where each public name lives; imported on first use (PEP 562), so a worker charm never loads
the coordinator's modules, nor a coordinator the worker's."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
