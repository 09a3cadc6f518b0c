"""Keep the ``AuthorizationPolicy`` objects a charm owns equal to the policies it wants.

:func:`desired_objects` and :func:`diff_objects` decide (pure); :class:`PolicyResourceManager`
lists the owned objects, then creates, updates and deletes the difference in that order, so a new
allow exists before the old one goes; with a :class:`PolicyCache` it lists only when the wanted
objects changed or a check is due. Names come from content and ownership from labels, so two
owners never touch each other's objects: ``docs/explanation/labels-and-policies.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from coordinated_mesh.k8s.client import MANAGED_BY, CRDMissingError, api_errors
from coordinated_mesh.mesh.authorization import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    policy_name,
    render_authorization_policy,
)
from coordinated_mesh.mesh.policies import MeshPolicy
from coordinated_mesh.parse import safe_label_value

__all__ = [
    "ObjectDiff",
    "Owner",
    "PolicyCache",
    "PolicyResourceManager",
    "ReconcileResult",
    "authorization_policy_resource",
    "desired_objects",
    "diff_objects",
    "objects_digest",
]

if TYPE_CHECKING:  # lightkube is imported when a manager is used, not with this module
    from lightkube import Client
    from lightkube.generic_resource import GenericNamespacedResource


@functools.cache
def authorization_policy_resource() -> type[GenericNamespacedResource]:
    """The lightkube resource class for Istio's ``AuthorizationPolicy`` (generic: plain dicts)."""
    from lightkube.generic_resource import create_namespaced_resource

    return create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)


INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
OWNER_LABEL = "coordinated-mesh/owner"

Object = dict[str, Any]
Key = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who owns a set of policy objects: one application, in one model, for one purpose (scope)."""

    app_name: str
    namespace: str
    """The Juju model, which is the Kubernetes namespace it runs in."""
    scope: str = "cluster-internal"

    @property
    def identity(self) -> str:
        """An unambiguous text identity (Juju names cannot hold ``/``), hashed into names."""
        return f"{self.app_name}/{self.namespace}/{self.scope}"

    @property
    def labels(self) -> dict[str, str]:
        """The labels marking an object as owned; each value is a valid label value."""
        return {
            INSTANCE_LABEL: safe_label_value(f"{self.app_name}-{self.namespace}"),
            MANAGED_BY_LABEL: MANAGED_BY,
            # The instance label alone is ambiguous ("a-b" in "c" vs "a" in "b-c"); this is not.
            OWNER_LABEL: safe_label_value(f"{self.app_name}.{self.namespace}.{self.scope}"),
        }

    @property
    def field_manager(self) -> str:
        """The field manager recorded on the fields this owner writes."""
        return f"{self.app_name}-{self.namespace}"


@dataclasses.dataclass(frozen=True)
class ReconcileResult:
    """The names of the objects a reconciliation created, updated and deleted (each sorted)."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return bool(self.created or self.updated or self.deleted)


@dataclasses.dataclass(frozen=True)
class ObjectDiff:
    """What to write to turn the actual objects into the desired ones."""

    create: tuple[Object, ...] = ()
    """Desired objects that do not exist."""
    update: tuple[tuple[Object, Object], ...] = ()
    """``(desired, actual)`` pairs whose spec or owner labels differ."""
    delete: tuple[Object, ...] = ()
    """Owned objects nobody wants any more."""


def _key(obj: Mapping[str, Any]) -> Key:
    metadata = obj["metadata"]
    return (str(metadata.get("namespace") or ""), str(metadata["name"]))


def desired_objects(policies: Iterable[MeshPolicy], *, owner: Owner) -> list[Object]:
    """The ``AuthorizationPolicy`` objects enforcing ``policies``, one per distinct policy.

    Sorted by (namespace, name), so equal inputs give equal output.
    """
    objects: dict[Key, Object] = {}
    for policy in policies:
        name = policy_name(policy, prefix=owner.app_name, owner=owner.identity)
        obj = render_authorization_policy(policy, name=name, labels=owner.labels)
        objects[_key(obj)] = obj
    return [objects[key] for key in sorted(objects)]


def objects_digest(desired: Iterable[Mapping[str, Any]]) -> str:
    """A digest of the objects :func:`desired_objects` gives: equal objects, equal digests.

    SHA-256 of their canonical JSON in (namespace, name) order, so it covers every name, label
    and spec, and the empty set has a digest of its own.
    """
    ordered = sorted(desired, key=_key)
    text = json.dumps(ordered, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class PolicyCache(Protocol):
    """What the owner's leader knows of its objects across hooks (``charm.memory``).

    The :func:`objects_digest` of the desired objects that the owned objects last equalled, as
    listed or written by this leader. With one, :class:`PolicyResourceManager` does not list
    when the wanted objects have that digest and no check is due: only someone else can change
    the objects, and no hook says when.
    """

    def recall(self) -> str | None:
        """The digest recorded last, ``None`` when unknown."""
        ...

    def remember(self, digest: str | None) -> None:
        """Record the digest of what is owned now; ``None`` forgets it."""
        ...

    def check_due(self) -> bool:
        """Whether this hook must list the owned objects even when the digest matches."""
        ...


def needs_update(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """Whether ``actual`` must be rewritten: its spec or one of the desired labels differs.

    Labels that are not in ``desired`` (set by anyone else) do not count.
    """
    if actual.get("spec") != desired.get("spec"):
        return True
    actual_labels: Mapping[str, str] = actual.get("metadata", {}).get("labels") or {}
    wanted: Mapping[str, str] = desired["metadata"].get("labels") or {}
    return any(actual_labels.get(key) != value for key, value in wanted.items())


def diff_objects(desired: Iterable[Object], actual: Iterable[Object]) -> ObjectDiff:
    """Compare desired and actual objects by (namespace, name); each output part is sorted."""
    wanted = {_key(obj): obj for obj in desired}
    present = {_key(obj): obj for obj in actual}
    return ObjectDiff(
        create=tuple(wanted[key] for key in sorted(wanted.keys() - present.keys())),
        update=tuple(
            (wanted[key], present[key])
            for key in sorted(wanted.keys() & present.keys())
            if needs_update(wanted[key], present[key])
        ),
        delete=tuple(present[key] for key in sorted(present.keys() - wanted.keys())),
    )


def replacement(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> Object:
    """The full object to ``PUT`` over ``actual`` so it matches ``desired``.

    Keeps what others set in the metadata (other labels, annotations) and the resource version
    (so a concurrent change makes the write fail rather than be lost); everything in ``spec`` is
    ours, so an out-of-band edit of the spec (even an added field) is undone.
    """
    metadata = {key: value for key, value in actual["metadata"].items() if key != "managedFields"}
    metadata["labels"] = {**(metadata.get("labels") or {}), **desired["metadata"]["labels"]}
    return {
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": metadata,
        "spec": desired["spec"],
    }


class PolicyResourceManager:
    """Creates, updates and deletes the ``AuthorizationPolicy`` objects one owner wants.

    Only the leader unit should call the writing methods (like any charm code changing shared
    state). Every method raises :class:`~coordinated_mesh.k8s.client.ForbiddenError` when the
    application is not trusted, :class:`~coordinated_mesh.k8s.client.CRDMissingError` when
    Istio's ``AuthorizationPolicy`` kind is not served (Istio is not installed), and
    :class:`~coordinated_mesh.k8s.client.KubernetesError` for anything else.

    Args:
        client: a lightkube client.
        app_name: the owning Juju application.
        namespace: its namespace (the Juju model it runs in).
        scope: what the policies are for; one owner per (app, model, scope).
        logger: where to log writes; this module's logger by default.
        cache: what the leader knows of the owned objects across hooks (:class:`PolicyCache`);
            without one, every reconciliation lists.
    """

    def __init__(
        self,
        client: Client,
        *,
        app_name: str,
        namespace: str,
        scope: str = "cluster-internal",
        logger: logging.Logger | None = None,
        cache: PolicyCache | None = None,
    ):
        self._client = client
        self._owner = Owner(app_name=app_name, namespace=namespace, scope=scope)
        self._log = logger or logging.getLogger(__name__)
        self._cache = cache

    @property
    def owner(self) -> Owner:
        """The owner identity: its labels select the objects this manager manages."""
        return self._owner

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return api_errors(app_name=self._owner.app_name, missing_kind=KIND)

    def list_owned(self, namespaces: Iterable[str] | None = None) -> list[Object]:
        """The owned objects as they are in Kubernetes, sorted by (namespace, name).

        Args:
            namespaces: where to look; every namespace (one cluster-wide list) when ``None``.
        """
        targets = sorted(set(namespaces)) if namespaces is not None else ["*"]
        selector: dict[str, Any] = dict(self._owner.labels)
        found: list[Object] = []
        resource = authorization_policy_resource()
        with self._errors():
            for namespace in targets:
                found.extend(
                    dict(obj)
                    for obj in self._client.list(resource, namespace=namespace, labels=selector)
                )
        return sorted(found, key=_key)

    def reconcile(
        self,
        policies: Sequence[MeshPolicy],
        *,
        listed: Sequence[Mapping[str, Any]] | None = None,
    ) -> ReconcileResult:
        """Make the owned objects exactly those enforcing ``policies``.

        Lists the owned objects in the namespaces it writes to (the target namespaces of
        ``policies`` and the model's), then creates what is missing, updates what differs, and
        deletes what is no longer wanted, in that order. Writes nothing when nothing differs.
        With no policies and no ``AuthorizationPolicy`` kind served, there is nothing to do and
        no error. Without ``listed``, nothing is read when the cache records these very
        objects and no check is due.

        Args:
            policies: the policies wanted.
            listed: what :meth:`list_local` returned earlier in this hook. When every wanted
                object lives in the owner's namespace, the difference is taken from it and not
                listed again.
        """
        desired = desired_objects(policies, owner=self._owner)
        digest = objects_digest(desired)
        cache = self._cache
        here = all(_key(obj)[0] == self._owner.namespace for obj in desired)
        known = listed is None and cache is not None and cache.recall() == digest
        if known and cache is not None and not cache.check_due():
            return ReconcileResult()  # as this leader left them; checked periodically
        namespaces = {_key(obj)[0] for obj in desired} | {self._owner.namespace}
        self._remember(None)  # until it is done: some writes may fail, the next hook lists
        if listed is not None and here:
            actual = [dict(obj) for obj in listed]
        else:
            try:
                actual = self.list_owned(namespaces)
            except CRDMissingError:
                if desired:
                    raise
                actual = []  # nothing of the kind exists, so nothing is owned
        result = self._apply(diff_objects(desired, actual))
        self._remember(digest)
        return result

    def list_local(self) -> list[Object]:
        """The owned objects in the owner's namespace (one list); ``[]`` without the kind served.

        With a cache recording that none are owned and no check due, ``[]`` without a read.
        """
        empty = objects_digest([])
        cache = self._cache
        if cache is not None and cache.recall() == empty and not cache.check_due():
            return []
        try:
            found = self.list_owned([self._owner.namespace])
        except CRDMissingError:
            found = []  # nothing of the kind exists, so nothing is owned
        # None found: nothing is owned. Some: they are what this hook goes on to reconcile
        # (which records them), and until then nothing is known of them.
        self._remember(None if found else empty)
        return found

    def delete_all(self, namespaces: Iterable[str] | None = None) -> ReconcileResult:
        """Delete every owned object. Nothing to do when the kind is not served.

        Args:
            namespaces: where to look; every namespace (one cluster-wide list, which needs
                cluster-wide rights) when ``None``.
        """
        # Afterwards nothing is owned where it looked: known when that includes our namespace.
        targets = None if namespaces is None else list(namespaces)
        covers = targets is None or self._owner.namespace in targets
        try:
            actual = self.list_owned(targets)
        except CRDMissingError:
            actual = []
        self._remember(None)
        result = self._apply(ObjectDiff(delete=tuple(actual)))
        self._remember(objects_digest([]) if covers else None)
        return result

    def _remember(self, digest: str | None) -> None:
        if self._cache is not None:
            self._cache.remember(digest)

    def _apply(self, diff: ObjectDiff) -> ReconcileResult:
        created = [self._create(obj) for obj in diff.create]
        updated = [self._update(desired, actual) for desired, actual in diff.update]
        deleted = [self._delete(obj) for obj in diff.delete]
        return ReconcileResult(
            created=tuple(sorted(created)),
            updated=tuple(sorted(updated)),
            deleted=tuple(sorted(deleted)),
        )

    def _create(self, obj: Object) -> str:
        namespace, name = _key(obj)
        from lightkube import ApiError

        manager = self._owner.field_manager
        resource = authorization_policy_resource()
        with self._errors():
            try:
                self._client.create(resource.from_dict(obj), field_manager=manager)
            except ApiError as error:
                if error.status.code != 409:
                    raise
                # It exists without our labels (stripped out of band): take it back.
                actual = dict(self._client.get(resource, name, namespace=namespace))
                self._client.replace(
                    resource.from_dict(replacement(obj, actual)), field_manager=manager
                )
        self._log.info("created AuthorizationPolicy %s/%s", namespace, name)
        return name

    def _update(self, desired: Object, actual: Object) -> str:
        namespace, name = _key(desired)
        with self._errors():
            self._client.replace(
                authorization_policy_resource().from_dict(replacement(desired, actual)),
                field_manager=self._owner.field_manager,
            )
        self._log.info("updated AuthorizationPolicy %s/%s", namespace, name)
        return name

    def _delete(self, obj: Object) -> str:
        namespace, name = _key(obj)
        from lightkube import ApiError

        with self._errors():
            try:
                self._client.delete(authorization_policy_resource(), name, namespace=namespace)
            except ApiError as error:
                if error.status.code != 404:
                    raise
        self._log.info("deleted AuthorizationPolicy %s/%s", namespace, name)
        return name
