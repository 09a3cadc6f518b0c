"""Labels on a Juju application's pods and Service, and taking back the ones no longer wanted.

:func:`reconcile_charm_labels` (leader only) puts a set of labels on the StatefulSet's pod
template and on the Service, remembers what it applied in the ConfigMap ``<app>-managed-labels``,
removes what it applied before and no longer wants, never touches others' labels, and writes
only what differs (:func:`plan_labels` decides, in a crash-safe order). How and why:
``docs/explanation/labels-and-policies.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from coordinated_mesh.k8s.client import MANAGED_BY, AppClient, api_errors
from coordinated_mesh.parse import is_juju_owned_label, validate_labels

if TYPE_CHECKING:  # lightkube's models are imported when a call needs them, not with the module
    from lightkube import Client
    from lightkube.resources.core_v1 import ConfigMap

__all__ = [
    "AppLabels",
    "LabelCache",
    "LabelPlan",
    "delete_label_memory",
    "label_patch",
    "managed_charm_labels",
    "memory_name",
    "plan_labels",
    "reconcile_charm_labels",
]

MEMORY_KEY = "labels"
"""The ConfigMap data key holding the JSON of the last applied label set."""

LabelPatch = dict[str, str | None]
"""Labels to set (a value) and to remove (``None``), as a JSON merge patch carries them."""

logger = logging.getLogger(__name__)


class LabelCache(Protocol):
    """A copy of the label memory kept by the leader across hooks (``charm.memory``).

    With one, a hook whose labels are all in place reads only the StatefulSet, or the StatefulSet
    and the Service when :meth:`service_check_due`; any write is still planned from the ConfigMap
    itself.
    """

    def recall(self) -> dict[str, str] | None:
        """The labels recorded last by this leader, ``None`` when unknown."""
        ...

    def remember(self, labels: Mapping[str, str]) -> None:
        """Record what the ConfigMap now holds."""
        ...

    def service_check_due(self) -> bool:
        """Whether this hook must read the Service even when the StatefulSet is in place.

        True on the hooks of the periodic check (``upgrade-charm``, and the Service's turn of
        ``update-status``): Juju never removes our labels, so only someone else can, and no hook
        says when.
        """
        ...


def memory_name(app_name: str) -> str:
    """The name of the ConfigMap remembering the labels applied to ``app_name``."""
    return f"{app_name}-managed-labels"


def label_patch(
    current: Mapping[str, str],
    *,
    wanted: Mapping[str, str],
    previous: Mapping[str, str],
    protected: Collection[str] = (),
) -> LabelPatch:
    """The labels to set and remove so that ``current`` holds ``wanted``.

    Args:
        current: the labels the object has now.
        wanted: the labels it must have.
        previous: the labels applied last time; those not wanted any more are removed.
        protected: keys never removed (a StatefulSet's selector must keep matching its pods).

    Returns:
        Sorted ``{key: value}`` to set and ``{key: None}`` to remove; ``{}`` when nothing differs.
        Keys in neither ``wanted`` nor ``previous`` (others' labels) never appear.
    """
    patch: LabelPatch = {key: value for key, value in wanted.items() if current.get(key) != value}
    for key in previous.keys() - wanted.keys():
        if key in current and key not in protected:
            patch[key] = None
    return dict(sorted(patch.items()))


@dataclasses.dataclass(frozen=True)
class LabelPlan:
    """The writes :func:`reconcile_charm_labels` makes, in order; empty parts are skipped."""

    memory_before: dict[str, str] | None
    """The memory to record before patching (labels about to be added), or ``None``."""
    statefulset: LabelPatch
    """The patch for the pod template labels."""
    service: LabelPatch
    """The patch for the Service labels."""
    memory_after: dict[str, str] | None
    """The memory to record at the end (the wanted set), or ``None`` when already recorded."""
    not_ours: tuple[str, ...] = ()
    """Wanted keys left alone because someone else set them (Juju, an operator), sorted."""

    @property
    def writes(self) -> bool:
        """Whether the plan writes anything."""
        return bool(
            self.memory_before is not None
            or self.statefulset
            or self.service
            or self.memory_after is not None
        )


def plan_labels(
    wanted: Mapping[str, str],
    *,
    previous: Mapping[str, str],
    statefulset_labels: Mapping[str, str],
    service_labels: Mapping[str, str],
    selector: Collection[str] = (),
) -> LabelPlan:
    """Decide the writes that put ``wanted`` in place (pure).

    Args:
        wanted: the labels to apply.
        previous: the labels remembered as applied last time.
        statefulset_labels: the pod template's labels now.
        service_labels: the Service's labels now.
        selector: the StatefulSet selector's keys: Juju's own identity labels, never removed from
            either object (the selector must keep matching the pods).

    A wanted key that is on either object with another value but not in ``previous`` was set by
    someone else, Juju or an operator: it is neither overwritten nor remembered as ours, so it is
    never removed either (``not_ours`` names it). One with the wanted value is taken as ours (a
    lost memory is rebuilt). A selector key or a key Juju owns is never ours.
    """

    def set_otherwise(key: str) -> bool:
        return any(
            key in labels and labels[key] != wanted[key]
            for labels in (
                statefulset_labels,
                service_labels,
            )
        )

    foreign = {
        key
        for key in wanted
        if key in selector
        or is_juju_owned_label(key)
        or (key not in previous and set_otherwise(key))
    }
    wanted = {k: v for k, v in sorted(wanted.items()) if k not in foreign}
    # Never removed either, even if an older version took them over and remembered them.
    protected = {*selector, *(key for key in previous if is_juju_owned_label(key))}
    statefulset = label_patch(
        statefulset_labels, wanted=wanted, previous=previous, protected=protected
    )
    service = label_patch(service_labels, wanted=wanted, previous=previous, protected=protected)
    intent = dict(sorted({**previous, **wanted}.items()))
    adds = any(value is not None for value in (*statefulset.values(), *service.values()))
    memory_before = intent if adds and intent != dict(previous) else None
    recorded = memory_before if memory_before is not None else dict(previous)
    return LabelPlan(
        memory_before=memory_before,
        statefulset=statefulset,
        service=service,
        memory_after=wanted if recorded != wanted else None,
        not_ours=tuple(sorted(foreign)),
    )


def _parse_memory(config_map: ConfigMap, *, app_name: str) -> dict[str, str]:
    raw = (config_map.data or {}).get(MEMORY_KEY, "{}")
    try:
        parsed: Any = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." edited in out of band
        parsed = None
    if not isinstance(parsed, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in parsed.items()
    ):
        logger.warning("ignoring unreadable label memory %s: %r", memory_name(app_name), raw)
        return {}
    return dict(parsed)


def _get_memory(client: Client, *, app_name: str, namespace: str) -> ConfigMap | None:
    from lightkube import ApiError
    from lightkube.resources.core_v1 import ConfigMap

    try:
        return client.get(ConfigMap, memory_name(app_name), namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise


def managed_charm_labels(client: Client, *, app_name: str, namespace: str) -> dict[str, str]:
    """The labels last applied by :func:`reconcile_charm_labels` (``{}`` if none yet).

    Raises:
        KubernetesError: the API failed (``ForbiddenError`` when the app is not trusted).
    """
    with api_errors(app_name=app_name):
        config_map = _get_memory(client, app_name=app_name, namespace=namespace)
    return {} if config_map is None else _parse_memory(config_map, app_name=app_name)


def _write_memory(
    client: Client,
    labels: Mapping[str, str],
    *,
    app_name: str,
    namespace: str,
    exists: bool,
    field_manager: str,
) -> None:
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap
    from lightkube.types import PatchType

    data = {MEMORY_KEY: json.dumps(dict(sorted(labels.items())), sort_keys=True)}
    if exists:
        client.patch(
            ConfigMap,
            memory_name(app_name),
            {"data": data},
            namespace=namespace,
            patch_type=PatchType.MERGE,
            field_manager=field_manager,
        )
        return
    config_map = ConfigMap(
        metadata=ObjectMeta(
            name=memory_name(app_name),
            namespace=namespace,
            labels={"app.kubernetes.io/managed-by": MANAGED_BY},
        ),
        data=data,
    )
    client.create(config_map, field_manager=field_manager)


@dataclasses.dataclass(frozen=True)
class _Objects:
    """The labels on our StatefulSet's pod template and Service, and its selector's keys.

    ``service`` is ``None`` when the Service was not read: it is then taken to carry what the
    StatefulSet does (a plan can only find that the StatefulSet is in place, or not).
    """

    statefulset: Mapping[str, str]
    service: Mapping[str, str] | None
    selector: Collection[str]

    def plan(self, wanted: Mapping[str, str], previous: Mapping[str, str]) -> LabelPlan:
        return plan_labels(
            wanted,
            previous=previous,
            statefulset_labels=self.statefulset,
            service_labels=self.statefulset if self.service is None else self.service,
            selector=self.selector,
        )


def _ours(wanted: Mapping[str, str], plan: LabelPlan) -> dict[str, str]:
    """The wanted labels that are ours to set and remember (not someone else's)."""
    return {key: value for key, value in wanted.items() if key not in plan.not_ours}


def _in_place(objects: _Objects, wanted: Mapping[str, str], cached: Mapping[str, str]) -> bool:
    """Whether ``objects`` carry ``wanted`` and the cache records it: nothing to write."""
    plan = objects.plan(wanted, cached)
    return dict(cached) == _ours(wanted, plan) and not plan.writes


def _plan_with_cache(
    wanted: dict[str, str],
    *,
    recorded: dict[str, str],
    cached: Mapping[str, str],
    objects: _Objects,
) -> LabelPlan:
    """:func:`plan_labels`, removing what the ConfigMap or the cache says we applied.

    The memory writes are decided against the ConfigMap itself, so it is rewritten when it
    lacks what the cache knows (deleted or edited out of band).
    """
    known = {**cached, **recorded}
    plan = objects.plan(wanted, known)
    if known == recorded:
        return plan
    wanted = _ours(wanted, plan)
    adds = any(value is not None for value in (*plan.statefulset.values(), *plan.service.values()))
    intent = dict(sorted({**known, **wanted}.items()))
    before = intent if adds and intent != recorded else None
    after = before if before is not None else recorded
    return dataclasses.replace(
        plan, memory_before=before, memory_after=wanted if after != wanted else None
    )


def reconcile_charm_labels(
    client: Client,
    *,
    app_name: str,
    namespace: str,
    labels: Mapping[str, str],
    cache: LabelCache | None = None,
) -> bool:
    """Make ``labels`` present on the application's pod template and Service; remove stale ones.

    Only the leader unit may call this. Labels this function did not set are never changed; a
    label it set earlier and that is no longer in ``labels`` is removed. Nothing is written when
    everything is in place.

    Args:
        client: a lightkube client.
        app_name: the Juju application (its StatefulSet and Service have this name).
        namespace: the Juju model's namespace.
        labels: the complete set of labels this application's pods must carry.
        cache: what this leader recorded last. When it is ``labels`` and the StatefulSet
            carries them, that is the only read, unless the cache says a check of the Service is
            due (then two reads); the memory ConfigMap is read only when something differs.
            Whatever the cache holds is also taken as applied by us, so a memory deleted out of
            band cannot hide stale labels.

    Returns:
        Whether anything was written.

    Raises:
        ValueError: a key or value is not a valid Kubernetes label (nothing is written).
        ForbiddenError: the application is not trusted (``juju trust <app> --scope=cluster``).
        KubernetesError: any other API failure (for example a missing StatefulSet).
    """
    from lightkube.resources.apps_v1 import StatefulSet
    from lightkube.resources.core_v1 import Service
    from lightkube.types import PatchType

    wanted = validate_labels(dict(labels))
    field_manager = f"{app_name}-{namespace}"
    cached = cache.recall() if cache is not None else None
    with api_errors(app_name=app_name):
        statefulset = client.get(StatefulSet, app_name, namespace=namespace)
        spec = statefulset.spec
        template_meta = spec.template.metadata if spec else None
        selector = (spec.selector.matchLabels if spec else None) or {}
        objects = _Objects(
            statefulset=(template_meta.labels if template_meta else None) or {},
            service=None,
            selector=tuple(selector),
        )
        between_checks = cache is not None and not cache.service_check_due()
        if cached is not None and between_checks and _in_place(objects, wanted, cached):
            return False  # the StatefulSet is in place; the Service is checked periodically
        service = client.get(Service, app_name, namespace=namespace)
        objects = dataclasses.replace(
            objects, service=(service.metadata.labels if service.metadata else None) or {}
        )
        if cached is not None and _in_place(objects, wanted, cached):
            return False  # the steady state: in place, and recorded as such
        config_map = _get_memory(client, app_name=app_name, namespace=namespace)
        recorded = {} if config_map is None else _parse_memory(config_map, app_name=app_name)
        plan = _plan_with_cache(wanted, recorded=recorded, cached=cached or {}, objects=objects)
        exists = config_map is not None
        if plan.not_ours:
            logger.warning(
                "not setting labels of %s that someone else set: %s",
                app_name,
                ", ".join(plan.not_ours),
            )
        if plan.memory_before is not None:
            _write_memory(
                client,
                plan.memory_before,
                app_name=app_name,
                namespace=namespace,
                exists=exists,
                field_manager=field_manager,
            )
            exists = True
        if plan.statefulset:
            logger.info("setting pod template labels of %s: %s", app_name, plan.statefulset)
            client.patch(
                StatefulSet,
                app_name,
                {"spec": {"template": {"metadata": {"labels": plan.statefulset}}}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=field_manager,
            )
        if plan.service:
            logger.info("setting Service labels of %s: %s", app_name, plan.service)
            client.patch(
                Service,
                app_name,
                {"metadata": {"labels": plan.service}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=field_manager,
            )
        if plan.memory_after is not None:
            _write_memory(
                client,
                plan.memory_after,
                app_name=app_name,
                namespace=namespace,
                exists=exists,
                field_manager=field_manager,
            )
    if cache is not None:
        cache.remember(_ours(wanted, plan))  # what the ConfigMap holds now
    return plan.writes


def delete_label_memory(client: Client, *, app_name: str, namespace: str) -> bool:
    """Delete the ConfigMap remembering ``app_name``'s labels; whether there was one.

    For the removal of the application: its StatefulSet and Service go with it, the memory would
    stay forever otherwise.

    Raises:
        KubernetesError: the API failed (``ForbiddenError`` when the app is not trusted).
    """
    from lightkube import ApiError
    from lightkube.resources.core_v1 import ConfigMap

    with api_errors(app_name=app_name):
        try:
            client.delete(ConfigMap, memory_name(app_name), namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:
                return False
            raise
    logger.info("deleted the label memory %s", memory_name(app_name))
    return True


class AppLabels:
    """The labels an application's leader manages on its own StatefulSet and Service.

    Bound to one :class:`~coordinated_mesh.k8s.client.AppClient`; see
    :func:`reconcile_charm_labels` for what reconciling does and writes. Only the leader may use it.
    """

    def __init__(self, client: AppClient, cache: LabelCache | None = None):
        self._client = client
        self._cache = cache

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        """Make ``labels`` the managed labels; True if anything was written."""
        client = self._client
        return reconcile_charm_labels(
            client.get(),
            app_name=client.app_name,
            namespace=client.namespace,
            labels=labels,
            cache=self._cache,
        )

    def managed_labels(self) -> dict[str, str]:
        """The labels applied last (``{}`` when none)."""
        client = self._client
        return managed_charm_labels(
            client.get(), app_name=client.app_name, namespace=client.namespace
        )

    def delete_label_memory(self) -> bool:
        """Delete the label memory (on the application's removal); whether there was one."""
        client = self._client
        return delete_label_memory(
            client.get(), app_name=client.app_name, namespace=client.namespace
        )
