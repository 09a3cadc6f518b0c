"""Render a :class:`~coordinated_mesh.mesh.policies.MeshPolicy` as an Istio ``AuthorizationPolicy``.

Pure: :func:`render_authorization_policy` builds the object as the ``service_mesh`` contract
describes it (``app`` targets: ``targetRefs`` to the Service, L7 ``to`` operations; ``unit``
targets: a pod ``selector``, ports only; the source app's service-account principal), and
:func:`policy_name` names it from its content. The contract:
``../shared/spec/service-mesh-relation.md`` and ``docs/reference/relations.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from coordinated_mesh.mesh.policies import Endpoint, MeshPolicy, PolicyTargetType

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "policy_name",
    "principal",
    "render_authorization_policy",
]

GROUP = "security.istio.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AuthorizationPolicy"
PLURAL = "authorizationpolicies"

_MAX_NAME = 63
_DIGEST_CHARS = 16
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_DEFAULT_PREFIX = "policy"


def principal(policy: MeshPolicy) -> str:
    """The Istio principal of the policy's source: Juju names the service account after the app."""
    return f"cluster.local/ns/{policy.source_namespace}/sa/{policy.source_app_name}"


def _operation(endpoint: Endpoint) -> dict[str, list[str]]:
    operation: dict[str, list[str]] = {}
    if endpoint.ports:
        operation["ports"] = [str(port) for port in endpoint.ports]
    if endpoint.methods:
        operation["methods"] = [method.value for method in endpoint.methods]
    if endpoint.paths:
        operation["paths"] = list(endpoint.paths)
    if endpoint.hosts:
        operation["hosts"] = list(endpoint.hosts)
    return operation


def _to(policy: MeshPolicy) -> list[dict[str, Any]]:
    operations = [_operation(endpoint) for endpoint in policy.endpoints]
    if not operations or not all(operations):
        return []
    return [{"operation": operation} for operation in operations]


def _target(policy: MeshPolicy) -> dict[str, Any]:
    if policy.target_type is PolicyTargetType.app:
        service = policy.target_service or policy.target_app_name
        return {"targetRefs": [{"group": "", "kind": "Service", "name": service}]}
    match_labels = policy.target_selector_labels or {
        "app.kubernetes.io/name": str(policy.target_app_name)
    }
    return {"selector": {"matchLabels": dict(sorted(match_labels.items()))}}


def render_authorization_policy(
    policy: MeshPolicy, *, name: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The ``AuthorizationPolicy`` object (a JSON-ready dict) that enforces ``policy``.

    Args:
        policy: the resolved policy.
        name: ``metadata.name``; see :func:`policy_name`.
        labels: ``metadata.labels`` (the owner's labels).

    Returns:
        A complete object for the target namespace, ready to create or compare.
    """
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": policy.target_namespace,
            "labels": dict(sorted(labels.items())),
        },
        "spec": {
            **_target(policy),
            "rules": [
                {
                    "from": [{"source": {"principals": [principal(policy)]}}],
                    "to": _to(policy),
                }
            ],
        },
    }


def canonical_json(value: Any) -> str:
    """A byte-stable JSON text for ``value``: sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def policy_name(policy: MeshPolicy, *, prefix: str, owner: str = "") -> str:
    """A stable, valid Kubernetes name for the object enforcing ``policy`` on behalf of ``owner``.

    The name is ``<prefix>-<digest>``: ``digest`` is the first 16 hex characters of the SHA-256 of
    the canonical JSON of ``{"owner": owner, "policy": policy.to_wire()}``, so it depends only on
    the policy's wire form (a contract) and the owner, never on Python's ``repr`` or hashing: it is
    the same in every library and Python version. A different policy (or owner) gives a different
    name; the same gives the same.

    ``prefix`` is only there to be readable: it is lower-cased, characters a DNS label cannot hold
    become ``-``, and it is cut so the whole name fits in 63 characters (a valid DNS-1123 label,
    hence also a valid DNS-1123 subdomain).

    Args:
        policy: the policy to name.
        prefix: a readable head, usually the owning application's name.
        owner: who owns the object (for example ``"<app>/<model>/<scope>"``), so that two owners
            granting the same policy in one namespace do not fight over one object.
    """
    document = canonical_json({"owner": owner, "policy": policy.to_wire()})
    digest = hashlib.sha256(document.encode("ascii")).hexdigest()[:_DIGEST_CHARS]
    head = _NOT_NAME_CHARS.sub("-", prefix.lower()).strip("-")
    head = head[: _MAX_NAME - _DIGEST_CHARS - 1].rstrip("-") or _DEFAULT_PREFIX
    return f"{head}-{digest}"
