"""Taking over what the ``coordinated-workers`` package left in Kubernetes (leader only).

Its label memories (ConfigMaps ``<app>-pod-labels`` and ``juju-service-mesh-<app>-labels``) become
ours, so the labels it applied are
reconciled, not duplicated or orphaned; its cluster-internal AuthorizationPolicies are deleted once
ours are in place. Facts and sources: the constants below. Why and in which order:
``docs/how-to/migrate-from-coordinated-workers.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from coordinated_mesh.k8s.client import MANAGED_BY, CRDMissingError, api_errors
from coordinated_mesh.k8s.labels import MEMORY_KEY, memory_name
from coordinated_mesh.k8s.policy_manager import (
    MANAGED_BY_LABEL,
    OWNER_LABEL,
    authorization_policy_resource,
)
from coordinated_mesh.mesh.authorization import KIND
from coordinated_mesh.parse import validate_labels

if TYPE_CHECKING:
    from lightkube import Client

__all__ = [
    "LEGACY_INSTANCE_LABEL",
    "LEGACY_SCOPE_LABEL",
    "adopt_legacy_label_memory",
    "delete_legacy_policies",
    "legacy_memory_names",
    "legacy_policies",
    "legacy_policy_selector",
]

logger = logging.getLogger(__name__)

# Source: canonical/cos-coordinated-workers (PyPI coordinated-workers 4.1.x),
# src/coordinated_workers/coordinator.py `_reconcile_charm_labels` (and worker.py, the same):
# reconcile_charm_labels(..., label_configmap_name=f"{app}-pod-labels", ...). The memory itself is
# written by charms.istio_beacon_k8s.v0.service_mesh (LIBPATCH 15) `reconcile_charm_labels`:
# ConfigMap data {"labels": json.dumps({key: value, ...})}, created without labels. That package's
# coordinator puts app.kubernetes.io/part-of there; the mesh labels are applied by the same
# library's ServiceMeshConsumer (auto_join) with its own memory, `label_configmap_name_template =
# "juju-service-mesh-{app_name}-labels"`. Two label managers, two ConfigMaps.
LEGACY_MEMORY_TEMPLATES = ("{app}-pod-labels", "juju-service-mesh-{app}-labels")
LEGACY_MEMORY_KEY = "labels"
# Source: the same package, src/coordinated_workers/service_mesh.py `_get_policy_resource_manager`:
# PolicyResourceManager(labels={"app.kubernetes.io/instance": trunc(f"{app}-{model}"),
# "kubernetes-resource-handler-scope": trunc(f"{app}-{model}-cluster-internal")}), objects in the
# model's namespace; trunc = `_truncate_label_value` (below, `_legacy_label_value`).
LEGACY_INSTANCE_LABEL = "app.kubernetes.io/instance"
LEGACY_SCOPE_LABEL = "kubernetes-resource-handler-scope"


def _legacy_label_value(value: str, max_length: int = 63) -> str:
    """``coordinated_workers.service_mesh._truncate_label_value``, as that package computes it."""
    if len(value) <= max_length:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{value[: max_length - 9]}-{digest}"


def legacy_memory_names(app_name: str) -> tuple[str, ...]:
    """The ConfigMaps in which ``coordinated-workers`` remembered the labels it applied."""
    return tuple(template.format(app=app_name) for template in LEGACY_MEMORY_TEMPLATES)


def legacy_policy_selector(app_name: str, model_name: str) -> dict[str, str]:
    """The labels ``coordinated-workers`` put on the cluster-internal policies of one app."""
    return {
        LEGACY_INSTANCE_LABEL: _legacy_label_value(f"{app_name}-{model_name}"),
        LEGACY_SCOPE_LABEL: _legacy_label_value(f"{app_name}-{model_name}-cluster-internal"),
    }


def _parse_labels(raw: object, *, name: str) -> dict[str, str]:
    """The labels a memory holds; ``{}``, with a warning, when it is not a valid label set."""
    try:
        parsed: Any = json.loads(raw) if isinstance(raw, str) else None
        if isinstance(parsed, dict):
            return validate_labels(parsed)
    except (ValueError, RecursionError, TypeError):
        pass
    logger.warning("ignoring the unreadable label memory %s", name)
    return {}


def adopt_legacy_label_memory(
    client: Client, *, app_name: str, namespace: str, worker: bool = False
) -> bool:
    """Make the labels ``coordinated-workers`` applied ours to manage; True if it wrote.

    ``worker``: only the worker's memory (``<app>-pod-labels``) is looked for; a worker never ran
    the beacon library's mesh consumer.

    When an old ConfigMap exists, its labels are added to our memory (created when missing) and
    then the old ConfigMaps are deleted, in that order: at no point are the labels remembered by
    nobody. The next :func:`~coordinated_mesh.k8s.labels.reconcile_charm_labels` keeps the ones
    still wanted (no write when the values agree) and removes the others. One GET per possible
    memory when there is nothing to adopt.

    Raises:
        KubernetesError: the API failed (``ForbiddenError`` when the app is not trusted).
    """
    from lightkube import ApiError
    from lightkube.resources.core_v1 import ConfigMap

    def get(name: str) -> ConfigMap | None:
        try:
            return client.get(ConfigMap, name, namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise

    with api_errors(app_name=app_name):
        names = legacy_memory_names(app_name)
        found = {name: get(name) for name in (names[:1] if worker else names)}
        old = {name: obj for name, obj in found.items() if obj is not None}
        if not old:
            return False
        legacy: dict[str, str] = {}
        for name, obj in old.items():
            legacy.update(_parse_labels((obj.data or {}).get(LEGACY_MEMORY_KEY), name=name))
        _remember(
            client, legacy, ours=get(memory_name(app_name)), app_name=app_name, namespace=namespace
        )
        for name in old:
            try:
                client.delete(ConfigMap, name, namespace=namespace)
            except ApiError as error:
                if error.status.code != 404:
                    raise
            logger.info("deleted the label memory %s of coordinated-workers", name)
    return True


def _remember(
    client: Client,
    legacy: Mapping[str, str],
    *,
    ours: Any,
    app_name: str,
    namespace: str,
) -> None:
    """Add ``legacy`` to our label memory ``ours`` (a ConfigMap, ``None`` when missing)."""
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap
    from lightkube.types import PatchType

    name = memory_name(app_name)
    field_manager = f"{app_name}-{namespace}"
    remembered = {} if ours is None else _parse_labels((ours.data or {}).get(MEMORY_KEY), name=name)
    merged = dict(sorted({**legacy, **remembered}.items()))
    data = {MEMORY_KEY: json.dumps(merged, sort_keys=True)}
    logger.info("taking over the labels coordinated-workers applied: %s", sorted(legacy))
    if ours is None:
        client.create(
            ConfigMap(
                metadata=ObjectMeta(
                    name=name, namespace=namespace, labels={MANAGED_BY_LABEL: MANAGED_BY}
                ),
                data=data,
            ),
            field_manager=field_manager,
        )
    elif merged != remembered:
        client.patch(
            ConfigMap,
            name,
            {"data": data},
            namespace=namespace,
            patch_type=PatchType.MERGE,
            field_manager=field_manager,
        )


def legacy_policies(client: Client, *, app_name: str, namespace: str) -> list[dict[str, Any]]:
    """The cluster-internal policies ``coordinated-workers`` left for this app, by name.

    Only objects in our namespace carrying both of its labels and none of ours: another
    application's policies, and ours, are never in the list. ``[]`` without Istio's CRD.
    """
    resource = authorization_policy_resource()
    selector: dict[str, Any] = dict(legacy_policy_selector(app_name, namespace))
    try:
        with api_errors(app_name=app_name, missing_kind=KIND):
            listed = [
                dict(obj) for obj in client.list(resource, namespace=namespace, labels=selector)
            ]
    except CRDMissingError:
        return []
    return sorted(
        (obj for obj in listed if not _ours(obj.get("metadata", {}).get("labels") or {})),
        key=lambda obj: str(obj["metadata"]["name"]),
    )


def _ours(labels: Mapping[str, str]) -> bool:
    return OWNER_LABEL in labels or labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def delete_legacy_policies(client: Client, *, app_name: str, namespace: str) -> list[str]:
    """Delete :func:`legacy_policies`; the names deleted, sorted (a 404 counts as deleted)."""
    from lightkube import ApiError

    resource = authorization_policy_resource()
    deleted: list[str] = []
    for obj in legacy_policies(client, app_name=app_name, namespace=namespace):
        name = str(obj["metadata"]["name"])
        with api_errors(app_name=app_name, missing_kind=KIND):
            try:
                client.delete(resource, name, namespace=namespace)
            except ApiError as error:
                if error.status.code != 404:
                    raise
        logger.info("deleted AuthorizationPolicy %s/%s of coordinated-workers", namespace, name)
        deleted.append(name)
    return deleted
