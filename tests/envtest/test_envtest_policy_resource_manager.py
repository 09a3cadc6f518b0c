"""PolicyResourceManager against a real API server: ownership, ordering, no needless requests."""

from __future__ import annotations

from typing import Any

import pytest
from coordinated_mesh.k8s.client import CRDMissingError, ForbiddenError, KubernetesError
from coordinated_mesh.k8s.policy_manager import (
    PolicyResourceManager,
    authorization_policy_resource,
    desired_objects,
    objects_digest,
)
from coordinated_mesh.mesh.authorization import policy_name
from coordinated_mesh.mesh.policies import Endpoint, MeshPolicy, Method, PolicyTargetType
from lightkube import Client

from tests.support.envtest import Envtest, RequestLog

PLURAL_PATH = "/authorizationpolicies"


def unit_policy(namespace: str, source: str, ports: list[int] | None = None) -> MeshPolicy:
    return MeshPolicy(
        source_namespace=namespace,
        source_app_name=source,
        target_namespace=namespace,
        target_selector_labels={"app.kubernetes.io/part-of": "coord"},
        target_type=PolicyTargetType.unit,
        endpoints=[Endpoint(ports=ports)] if ports else [],
    )


def app_policy(namespace: str, source: str, path: str = "/api") -> MeshPolicy:
    return MeshPolicy(
        source_namespace=namespace,
        source_app_name=source,
        target_namespace=namespace,
        target_app_name="coord",
        target_type=PolicyTargetType.app,
        endpoints=[Endpoint(ports=[8080], methods=[Method.get], paths=[path])],
    )


@pytest.fixture
def prm(k8s_client: Client, namespace: str, authorization_policy_crd: Any) -> PolicyResourceManager:
    return PolicyResourceManager(k8s_client, app_name="coord", namespace=namespace)


def names(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(obj["metadata"]["name"] for obj in objects)


def test_create_update_delete(prm: PolicyResourceManager, namespace: str):
    first = [unit_policy(namespace, "coord"), app_policy(namespace, "worker")]
    result = prm.reconcile(first)
    expected = desired_objects(first, owner=prm.owner)
    assert result.created == tuple(names(expected))
    assert (result.updated, result.deleted) == ((), ())
    owned = prm.list_owned([namespace])
    assert names(owned) == names(expected)
    assert [o["spec"] for o in owned] == [o["spec"] for o in expected]

    second = [unit_policy(namespace, "coord"), app_policy(namespace, "worker", path="/v2")]
    result = prm.reconcile(second)
    new_name = policy_name(second[1], prefix="coord", owner=prm.owner.identity)
    old_name = policy_name(first[1], prefix="coord", owner=prm.owner.identity)
    assert result.created == (new_name,)
    assert result.deleted == (old_name,)
    assert names(prm.list_owned([namespace])) == names(desired_objects(second, owner=prm.owner))

    result = prm.reconcile([])
    assert sorted(result.deleted) == names(desired_objects(second, owner=prm.owner))
    assert prm.list_owned([namespace]) == []


def test_writes_carry_the_field_manager(
    prm: PolicyResourceManager, namespace: str, k8s_client: Client
):
    prm.reconcile([unit_policy(namespace, "coord")])
    (owned,) = prm.list_owned([namespace])
    managers = {entry["manager"] for entry in owned["metadata"]["managedFields"]}
    assert managers == {f"coord-{namespace}"}


def test_second_reconcile_writes_nothing(
    prm: PolicyResourceManager, namespace: str, request_log: RequestLog
):
    policies = [unit_policy(namespace, "coord", [9090]), app_policy(namespace, "worker")]
    assert prm.reconcile(policies).changed
    request_log.clear()

    result = prm.reconcile(policies)

    assert not result.changed
    assert request_log.writes() == []
    assert request_log.methods() == {"GET": 1}  # one list, in the one namespace written to


def test_changed_policy_is_created_before_the_old_one_is_deleted(
    prm: PolicyResourceManager, namespace: str, request_log: RequestLog, k8s_client: Client
):
    old, kept = app_policy(namespace, "worker", "/old"), unit_policy(namespace, "coord", [9090])
    new = app_policy(namespace, "worker", "/new")
    prm.reconcile([old, kept])
    (kept_obj,) = desired_objects([kept], owner=prm.owner)
    edited = dict(
        k8s_client.get(
            authorization_policy_resource(), kept_obj["metadata"]["name"], namespace=namespace
        )
    )
    edited["spec"]["rules"][0]["to"] = []  # widened out of band: must be put back
    k8s_client.replace(authorization_policy_resource().from_dict(edited))
    request_log.clear()

    result = prm.reconcile([new, kept])

    assert [(r.method, r.resource, r.path.rsplit("/", 1)[-1]) for r in request_log.requests] == [
        ("GET", "authorizationpolicies", "authorizationpolicies"),
        ("POST", "authorizationpolicies", "authorizationpolicies"),
        ("PUT", "authorizationpolicies", kept_obj["metadata"]["name"]),
        ("DELETE", "authorizationpolicies", result.deleted[0]),
    ]
    assert result.created == (policy_name(new, prefix="coord", owner=prm.owner.identity),)
    assert result.deleted == (policy_name(old, prefix="coord", owner=prm.owner.identity),)


def test_out_of_band_deletion_is_restored(
    prm: PolicyResourceManager, namespace: str, k8s_client: Client
):
    policies = [unit_policy(namespace, "coord"), app_policy(namespace, "worker")]
    prm.reconcile(policies)
    victim = names(desired_objects(policies, owner=prm.owner))[0]
    k8s_client.delete(authorization_policy_resource(), victim, namespace=namespace)

    result = prm.reconcile(policies)

    assert result.created == (victim,)
    assert names(prm.list_owned([namespace])) == names(desired_objects(policies, owner=prm.owner))


def test_out_of_band_edit_is_undone_keeping_others_labels(
    prm: PolicyResourceManager, namespace: str, k8s_client: Client
):
    policies = [unit_policy(namespace, "coord", [9090])]
    prm.reconcile(policies)
    (desired,) = desired_objects(policies, owner=prm.owner)
    name = desired["metadata"]["name"]
    edited = dict(k8s_client.get(authorization_policy_resource(), name, namespace=namespace))
    edited["spec"] = {**edited["spec"], "action": "DENY", "rules": []}
    edited["metadata"]["labels"]["team"] = "observability"
    k8s_client.replace(authorization_policy_resource().from_dict(edited))

    result = prm.reconcile(policies)

    assert result.updated == (name,)
    restored = dict(k8s_client.get(authorization_policy_resource(), name, namespace=namespace))
    assert restored["spec"] == desired["spec"]
    assert restored["metadata"]["labels"] == {
        **desired["metadata"]["labels"],
        "team": "observability",
    }


def test_object_stripped_of_owner_labels_is_taken_back(
    prm: PolicyResourceManager, namespace: str, k8s_client: Client
):
    policies = [unit_policy(namespace, "coord")]
    prm.reconcile(policies)
    (desired,) = desired_objects(policies, owner=prm.owner)
    name = desired["metadata"]["name"]
    stripped = dict(k8s_client.get(authorization_policy_resource(), name, namespace=namespace))
    stripped["metadata"]["labels"] = {}
    k8s_client.replace(authorization_policy_resource().from_dict(stripped))
    assert prm.list_owned([namespace]) == []

    result = prm.reconcile(policies)

    assert result.created == (name,)
    (owned,) = prm.list_owned([namespace])
    assert owned["spec"] == desired["spec"]


def test_two_owners_in_one_namespace_never_touch_each_other(
    k8s_client: Client, namespace: str, authorization_policy_crd: Any
):
    # "a-b" in model "c" and "a" in model "b-c" would share "<app>-<model>"; scopes differ too.
    owners = [
        PolicyResourceManager(k8s_client, app_name="a-b", namespace=namespace),
        PolicyResourceManager(k8s_client, app_name="a", namespace=f"b-{namespace}"),
        PolicyResourceManager(k8s_client, app_name="a-b", namespace=namespace, scope="other"),
    ]
    same = [unit_policy(namespace, "coord"), app_policy(namespace, "worker")]
    for owner in owners:
        assert len(owner.reconcile(same).created) == 2
    assert len({n for o in owners for n in names(o.list_owned([namespace]))}) == 6

    assert len(owners[0].reconcile([]).deleted) == 2
    assert owners[0].list_owned([namespace]) == []
    for owner in owners[1:]:
        assert not owner.reconcile(same).changed
        assert len(owner.list_owned([namespace])) == 2


def test_delete_all_removes_everything_owned_in_every_namespace(
    k8s_client: Client, namespace: str, juju_app: Any, authorization_policy_crd: Any
):
    other = f"{namespace}-other"
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Namespace

    k8s_client.create(Namespace(metadata=ObjectMeta(name=other)))
    prm = PolicyResourceManager(k8s_client, app_name="coord", namespace=namespace)
    bystander = PolicyResourceManager(k8s_client, app_name="other", namespace=namespace)
    prm.reconcile([unit_policy(namespace, "coord"), unit_policy(other, "coord")])
    bystander.reconcile([unit_policy(namespace, "coord")])

    result = prm.delete_all()

    assert len(result.deleted) == 2
    assert prm.list_owned() == []
    assert len(bystander.list_owned()) == 1


def test_untrusted_app_gets_a_forbidden_error_naming_juju_trust(
    untrusted_client: Client, namespace: str, authorization_policy_crd: Any
):
    prm = PolicyResourceManager(untrusted_client, app_name="coord", namespace=namespace)
    with pytest.raises(ForbiddenError) as caught:
        prm.reconcile([unit_policy(namespace, "coord")])
    assert "juju trust coord --scope=cluster" in str(caught.value)
    assert caught.value.status == 403


def test_missing_crd_raises_crd_missing_when_policies_are_wanted(
    k8s_client: Client, namespace: str, no_authorization_policy_crd: None, request_log: RequestLog
):
    prm = PolicyResourceManager(k8s_client, app_name="coord", namespace=namespace)
    with pytest.raises(CRDMissingError) as caught:
        prm.reconcile([unit_policy(namespace, "coord")])
    assert "AuthorizationPolicy" in str(caught.value)
    assert "Istio" in str(caught.value)
    # Nothing wanted and nothing can exist: not an error.
    assert not prm.reconcile([]).changed
    assert not prm.delete_all().changed
    assert request_log.writes() == []


def test_envtest_counts_requests_by_identity(
    envtest: Envtest, prm: PolicyResourceManager, request_log: RequestLog, namespace: str
):
    prm.reconcile([unit_policy(namespace, "coord")])
    assert request_log.methods(user="admin") == {"GET": 1, "POST": 1}
    assert request_log.methods(user="untrusted") == {}


# --- With the leader's memory (PolicyCache): list only on a change or a due check -------------


class DictPolicyCache:
    """A ``PolicyCache`` in memory (the coordinator keeps its own in ``ops``' unit state).

    ``due``: whether this "hook" is the one whose turn it is to check the policies.
    """

    def __init__(self, *, due: bool = False) -> None:
        self.digest: str | None = None
        self.due = due

    def recall(self) -> str | None:
        return self.digest

    def remember(self, digest: str | None) -> None:
        self.digest = digest

    def check_due(self) -> bool:
        return self.due


@pytest.fixture
def cache() -> DictPolicyCache:
    return DictPolicyCache()


@pytest.fixture
def cached(
    k8s_client: Client, namespace: str, authorization_policy_crd: Any, cache: DictPolicyCache
) -> PolicyResourceManager:
    return PolicyResourceManager(k8s_client, app_name="coord", namespace=namespace, cache=cache)


def test_with_a_cache_unchanged_policies_are_listed_only_when_a_check_is_due(
    cached: PolicyResourceManager, cache: DictPolicyCache, namespace: str, request_log: RequestLog
):
    policies = [unit_policy(namespace, "coord", [9090]), app_policy(namespace, "worker")]
    assert cached.reconcile(policies).changed
    assert cache.digest == objects_digest(desired_objects(policies, owner=cached.owner))
    request_log.clear()

    assert not cached.reconcile(policies).changed
    assert request_log.requests == []  # nothing read, nothing written

    cache.due = True
    assert not cached.reconcile(policies).changed
    assert request_log.methods() == {"GET": 1}  # the one list


def test_with_a_cache_a_change_is_listed_and_written_at_once_create_first(
    cached: PolicyResourceManager, cache: DictPolicyCache, namespace: str, request_log: RequestLog
):
    old, kept = app_policy(namespace, "worker", "/old"), unit_policy(namespace, "coord", [9090])
    new = app_policy(namespace, "worker", "/new")
    cached.reconcile([old, kept])
    request_log.clear()

    result = cached.reconcile([new, kept])  # no check due: the change alone makes it list

    assert [r.method for r in request_log.requests] == ["GET", "POST", "DELETE"]
    assert result.created == (policy_name(new, prefix="coord", owner=cached.owner.identity),)
    assert result.deleted == (policy_name(old, prefix="coord", owner=cached.owner.identity),)
    assert cache.digest == objects_digest(desired_objects([new, kept], owner=cached.owner))


def test_with_a_cache_an_out_of_band_deletion_is_restored_on_the_check(
    cached: PolicyResourceManager, cache: DictPolicyCache, namespace: str, k8s_client: Client
):
    policies = [unit_policy(namespace, "coord")]
    cached.reconcile(policies)
    (obj,) = cached.list_owned([namespace])
    k8s_client.delete(authorization_policy_resource(), obj["metadata"]["name"], namespace=namespace)

    assert not cached.reconcile(policies).changed  # between checks: not seen
    assert cached.list_owned([namespace]) == []
    cache.due = True
    assert cached.reconcile(policies).created == (obj["metadata"]["name"],)
    assert names(cached.list_owned([namespace])) == [obj["metadata"]["name"]]


def test_with_a_cache_a_failed_write_forgets_so_the_next_call_lists(
    cached: PolicyResourceManager,
    cache: DictPolicyCache,
    namespace: str,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
):
    first = [unit_policy(namespace, "coord")]
    second = [*first, app_policy(namespace, "worker")]
    cached.reconcile(first)

    def refuse(self: Any, obj: Any) -> str:  # like an admission webhook refusing the object
        raise KubernetesError("Kubernetes API error 500: admission webhook", status=500)

    with monkeypatch.context() as patch:
        patch.setattr(PolicyResourceManager, "_create", refuse)
        with pytest.raises(KubernetesError):
            cached.reconcile(second)
    assert cache.digest is None
    request_log.clear()

    assert cached.reconcile(second).created  # no check due, yet it lists: nothing is known
    assert [r.method for r in request_log.requests] == ["GET", "POST"]


def test_with_a_cache_none_owned_is_remembered_and_a_stray_one_found_on_the_check(
    cached: PolicyResourceManager,
    cache: DictPolicyCache,
    namespace: str,
    k8s_client: Client,
    request_log: RequestLog,
):
    assert cached.list_local() == []
    assert cache.digest == objects_digest([])
    request_log.clear()
    assert cached.list_local() == []
    assert request_log.requests == []  # known: none owned

    # Someone (an interrupted hook, an old backup) leaves an object with our labels.
    PolicyResourceManager(k8s_client, app_name="coord", namespace=namespace).reconcile(
        [unit_policy(namespace, "coord")]
    )
    assert cached.list_local() == []  # between checks: not seen
    cache.due = True
    (found,) = cached.list_local()
    assert cache.digest is None  # now nothing is known until it is reconciled
    cache.due = False

    # Deleting what was just listed takes no second list, and then none is owned again.
    request_log.clear()
    result = cached.reconcile([], listed=[found])
    assert result.deleted == (found["metadata"]["name"],)
    assert [r.method for r in request_log.requests] == ["DELETE"]
    assert cache.digest == objects_digest([])


def test_with_a_cache_delete_all_remembers_that_none_is_owned(
    cached: PolicyResourceManager, cache: DictPolicyCache, namespace: str, request_log: RequestLog
):
    cached.reconcile([unit_policy(namespace, "coord")])
    assert cached.delete_all([namespace]).deleted
    assert cache.digest == objects_digest([])
    request_log.clear()
    assert not cached.reconcile([]).changed
    assert request_log.requests == []
