"""The coordinator charm against a real Kubernetes API server (envtest), with its real adapters.

The charm runs under ``ops.testing``; its own ``lightkube.Client()`` reaches envtest through
``KUBECONFIG`` (the ``kubeconfig_env`` fixture), so the real label helpers and the real
``PolicyResourceManager`` do the work.

Leaving the mesh: envtest runs no controller and no kubelet, so the pods of a StatefulSet never
exist by themselves; tests create Pod objects with the labels a pod of the cluster would carry
(they stay ``Pending``, which is all the coordinator looks at), and label the Namespace for the
beacon's ``model-on-mesh``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from coordinated_mesh.mesh.cluster_policies import PART_OF_LABEL
from lightkube import ApiError, Client
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Pod
from lightkube.types import PatchType
from ops import testing

from tests.support.coordinator import (
    APP,
    MESH_LABELS,
    mesh_relation,
    running_state,
    worker_relation,
)
from tests.support.envtest import JujuApp, RequestLog, grant_namespace_rights, wait_until

Ctx = testing.Context[Any]
MakeApp = Callable[[str, str], JujuApp]


def _state(namespace: str, tmp_path: Path, *relations: testing.RelationBase) -> testing.State:
    return running_state(
        namespace, tmp_path, *relations, uuid="00000000-0000-4000-8000-0000000000aa"
    )


def _policies(
    client: Client, resource: type[GenericNamespacedResource], namespace: str
) -> list[dict[str, Any]]:
    return sorted(
        (dict(obj) for obj in client.list(resource, namespace=namespace)),
        key=lambda o: o["metadata"]["name"],
    )


def _principal(namespace: str, app: str) -> str:
    return f"cluster.local/ns/{namespace}/sa/{app}"


def _summary(policies: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(principal, target) of each policy; target is ``selector:<json>`` or ``service:<name>``."""
    out: set[tuple[str, str]] = set()
    for obj in policies:
        spec = obj["spec"]
        (rule,) = spec["rules"]
        (source,) = rule["from"]
        (principal,) = source["source"]["principals"]
        if "selector" in spec:
            target = "selector:" + json.dumps(spec["selector"]["matchLabels"], sort_keys=True)
        else:
            (ref,) = spec["targetRefs"]
            assert ref["kind"] == "Service"
            target = "service:" + ref["name"]
        out.add((principal, target))
    return out


@pytest.mark.usefixtures("kubeconfig_env")
def test_mesh_policies_labels_idempotence_and_removal(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    request_log: RequestLog,
    tmp_path: Path,
):
    coordinator = juju_app(APP, namespace)
    w1, w2, mesh = worker_relation("w1", 2), worker_relation("w2"), mesh_relation()
    out = ctx.run(ctx.on.relation_changed(mesh), _state(namespace, tmp_path, w1, w2, mesh))
    assert isinstance(out.unit_status, testing.ActiveStatus), out.unit_status

    # The three kinds of cluster-internal policy, with the right principals and selectors.
    selector = "selector:" + json.dumps({PART_OF_LABEL: APP})
    policies = _policies(k8s_client, authorization_policy_crd, namespace)
    assert _summary(policies) == {
        (_principal(namespace, APP), selector),
        (_principal(namespace, "w1"), selector),
        (_principal(namespace, "w2"), selector),
        (_principal(namespace, "w1"), f"service:{APP}"),
        (_principal(namespace, "w2"), f"service:{APP}"),
    }
    # Labels: membership and the beacon's, on the pod template and on the Service.
    wanted = {PART_OF_LABEL: APP, **MESH_LABELS}
    assert wanted.items() <= coordinator.template_labels().items()
    assert wanted.items() <= coordinator.service_labels().items()

    # A second identical hook writes nothing to Kubernetes, and reads two objects (the
    # StatefulSet, and this update-status the Service; the anchor makes 12 calls here).
    request_log.clear()
    out = ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    assert len(request_log.requests) == 2, request_log.requests

    # A worker application leaves: its two policies go, the others stay.
    (w2_out,) = [r for r in out.relations if r.id == w2.id]
    out = ctx.run(ctx.on.relation_broken(w2_out), out)
    policies = _policies(k8s_client, authorization_policy_crd, namespace)
    assert {principal for principal, _ in _summary(policies)} == {
        _principal(namespace, APP),
        _principal(namespace, "w1"),
    }
    assert len(policies) == 3

    # The mesh goes: the policies and the mesh labels go, part-of stays.
    remaining = [r for r in out.relations if r.id not in (w2.id, mesh.id)]
    (mesh_out,) = [r for r in out.relations if r.id == mesh.id]
    out = ctx.run(
        ctx.on.relation_broken(mesh_out), dataclasses.replace(out, relations=[*remaining, mesh_out])
    )
    assert _policies(k8s_client, authorization_policy_crd, namespace) == []
    for labels in (coordinator.template_labels(), coordinator.service_labels()):
        assert labels.get(PART_OF_LABEL) == APP
        assert not set(MESH_LABELS) & set(labels)
    assert out.unit_status == testing.ActiveStatus("1 worker app (2 units), mesh: none")


@pytest.mark.usefixtures("kubeconfig_env")
def test_labels_come_back_after_juju_resets_the_statefulset(
    ctx: Ctx,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
):
    coordinator = juju_app(APP, namespace)
    mesh = mesh_relation()
    out = ctx.run(ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1"), mesh))
    coordinator.juju_reset()
    assert PART_OF_LABEL not in coordinator.template_labels()
    ctx.run(ctx.on.update_status(), out)
    assert coordinator.template_labels()[PART_OF_LABEL] == APP


# --- What a steady-state hook reads (docs/explanation/labels-and-policies.md) ---------------


def _reads(request_log: RequestLog) -> list[str]:
    """The resource types this hook read (a LIST of policies shows as its collection), sorted."""
    assert request_log.writes() == []
    return sorted(r.resource for r in request_log.requests)


def _settled(ctx: Ctx, state: testing.State, request_log: RequestLog) -> testing.State:
    """The first hook (everything applied), then one more: the leader's memory is known."""
    out = ctx.run(ctx.on.config_changed(), state)
    out = ctx.run(ctx.on.config_changed(), out)
    request_log.clear()
    return out


@dataclasses.dataclass(frozen=True)
class Settled:
    """A meshed coordinator with one worker application, after two hooks: the steady state."""

    coordinator: JujuApp
    out: testing.State


@pytest.fixture
def settled(
    ctx: Ctx,
    kubeconfig_env: None,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    request_log: RequestLog,
    tmp_path: Path,
) -> Settled:
    """:func:`_settled` on the mesh, with ``w1``; the request log starts empty."""
    coordinator = juju_app(APP, namespace)
    state = _state(namespace, tmp_path, worker_relation("w1"), mesh_relation())
    return Settled(coordinator, _settled(ctx, state, request_log))


def _strip_service_labels(client: Client, coordinator: JujuApp) -> None:
    """Someone replaces the Service with Juju's labels only (``kubectl replace``)."""
    service = coordinator.service()
    assert service.metadata is not None
    service.metadata.labels = {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/managed-by": "juju",
    }
    client.replace(service)


def test_steady_hooks_read_the_statefulset_and_update_status_one_more_in_turn(
    ctx: Ctx,
    settled: Settled,
    request_log: RequestLog,
):
    out = settled.out

    # Between update-status hooks: the StatefulSet only.
    out = ctx.run(ctx.on.config_changed(), out)
    assert _reads(request_log) == ["statefulsets"]

    # update-status: the StatefulSet, and in turn the Service or the owned policies.
    seen: list[list[str]] = []
    for _ in range(4):
        request_log.clear()
        out = ctx.run(ctx.on.update_status(), out)
        seen.append(_reads(request_log))
    service, policies = ["services", "statefulsets"], ["authorizationpolicies", "statefulsets"]
    assert seen == [service, policies, service, policies]
    assert out.unit_status == testing.ActiveStatus(
        "1 worker app (1 unit), mesh: istio, 3 internal policies"
    )


def test_upgrade_charm_and_leader_elected_check_everything(
    ctx: Ctx,
    settled: Settled,
    request_log: RequestLog,
):
    out = settled.out

    out = ctx.run(ctx.on.upgrade_charm(), out)
    assert _reads(request_log) == ["authorizationpolicies", "services", "statefulsets"]

    # A new leader knows nothing: it reads everything, the label memory too, and writes nothing.
    request_log.clear()
    out = ctx.run(ctx.on.leader_elected(), out)
    assert _reads(request_log) == [
        "authorizationpolicies",
        "configmaps",
        "services",
        "statefulsets",
    ]
    request_log.clear()
    ctx.run(ctx.on.config_changed(), out)
    assert _reads(request_log) == ["statefulsets"]  # and then knows


def test_a_policy_deleted_out_of_band_is_recreated_within_two_update_status_hooks(
    ctx: Ctx,
    settled: Settled,
    request_log: RequestLog,
    k8s_client: Client,
    namespace: str,
    authorization_policy_crd: type[GenericNamespacedResource],
):
    out = settled.out
    policies = _policies(k8s_client, authorization_policy_crd, namespace)
    gone = policies[0]["metadata"]["name"]
    k8s_client.delete(authorization_policy_crd, gone, namespace=namespace)
    request_log.clear()

    # Nothing says so: a hook between update-status hooks does not look.
    out = ctx.run(ctx.on.config_changed(), out)
    assert _reads(request_log) == ["statefulsets"]
    posted: list[str] = []
    for _ in range(2):
        request_log.clear()
        out = ctx.run(ctx.on.update_status(), out)
        posted += [r.resource for r in request_log.writes()]
    assert posted == ["authorizationpolicies"]  # one POST: only what was missing
    restored = _policies(k8s_client, authorization_policy_crd, namespace)
    assert [o["metadata"]["name"] for o in restored] == [o["metadata"]["name"] for o in policies]
    assert [o["spec"] for o in restored] == [o["spec"] for o in policies]


def test_a_service_label_removed_out_of_band_is_restored_within_two_update_status_hooks(
    ctx: Ctx,
    settled: Settled,
    request_log: RequestLog,
    k8s_client: Client,
):
    out = settled.out
    coordinator = settled.coordinator
    wanted = {PART_OF_LABEL: APP, **MESH_LABELS}
    # The policies' turn comes first here, so that the Service's is the second hook.
    out = ctx.run(ctx.on.update_status(), out)
    _strip_service_labels(k8s_client, coordinator)
    request_log.clear()

    out = ctx.run(ctx.on.config_changed(), out)
    assert not wanted.items() <= coordinator.service_labels().items()  # not seen yet
    patched: list[str] = []
    for _ in range(2):
        request_log.clear()
        out = ctx.run(ctx.on.update_status(), out)
        patched += [f"{r.method} {r.resource}" for r in request_log.writes()]
    assert wanted.items() <= coordinator.service_labels().items()
    assert patched == ["PATCH services"]


def test_a_change_of_wanted_policies_is_applied_on_the_next_hook(
    ctx: Ctx,
    settled: Settled,
    request_log: RequestLog,
    k8s_client: Client,
    namespace: str,
    authorization_policy_crd: type[GenericNamespacedResource],
):
    out = settled.out
    before = {
        o["metadata"]["name"] for o in _policies(k8s_client, authorization_policy_crd, namespace)
    }

    # A second worker application joins: its two policies are created in that very hook, and
    # nothing else is touched (create before anything else; nothing to delete).
    w2 = worker_relation("w2")
    out = ctx.run(
        ctx.on.relation_changed(w2), dataclasses.replace(out, relations=[*out.relations, w2])
    )
    writes = [(r.method, r.resource) for r in request_log.writes()]
    assert writes == [("POST", "authorizationpolicies")] * 2
    after = {
        o["metadata"]["name"] for o in _policies(k8s_client, authorization_policy_crd, namespace)
    }
    assert before < after and len(after) == 5

    # It leaves: its two go on the hook that says so, listed first.
    request_log.clear()
    (w2_out,) = [r for r in out.relations if r.id == w2.id]
    out = ctx.run(ctx.on.relation_broken(w2_out), out)
    verbs = [r.method for r in request_log.requests if r.resource == "authorizationpolicies"]
    assert verbs == ["GET", "DELETE", "DELETE"]
    remaining = {
        o["metadata"]["name"] for o in _policies(k8s_client, authorization_policy_crd, namespace)
    }
    assert remaining == before


@pytest.mark.usefixtures("kubeconfig_env")
def test_off_the_mesh_the_steady_state_reads_at_most_two_and_finds_a_stray_policy(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    request_log: RequestLog,
    tmp_path: Path,
):
    juju_app(APP, namespace)
    out = _settled(ctx, _state(namespace, tmp_path, worker_relation("w1")), request_log)

    out = ctx.run(ctx.on.config_changed(), out)
    assert _reads(request_log) == ["statefulsets"]
    seen: list[list[str]] = []
    for _ in range(2):
        request_log.clear()
        out = ctx.run(ctx.on.update_status(), out)
        seen.append(_reads(request_log))
    assert seen == [["services", "statefulsets"], ["authorizationpolicies", "statefulsets"]]

    # A policy with our owner labels appears (left by an interrupted hook, say): the next
    # policies turn lists it, finds no pod of the cluster enrolled, and deletes it.
    from coordinated_mesh.k8s.policy_manager import PolicyResourceManager

    from tests.envtest.test_envtest_policy_resource_manager import unit_policy

    stray = PolicyResourceManager(k8s_client, app_name=APP, namespace=namespace)
    stray.reconcile([unit_policy(namespace, APP)])
    assert len(_policies(k8s_client, authorization_policy_crd, namespace)) == 1
    for _ in range(2):
        out = ctx.run(ctx.on.update_status(), out)
    assert _policies(k8s_client, authorization_policy_crd, namespace) == []
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")


@pytest.mark.usefixtures("untrusted_kubeconfig_env")
def test_without_trust_the_hook_succeeds_blocked_with_the_command(
    ctx: Ctx, namespace: str, juju_app: MakeApp, tmp_path: Path
):
    juju_app(APP, namespace)
    out = ctx.run(
        ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1"), mesh_relation())
    )
    assert out.unit_status == testing.BlockedStatus(
        f"not allowed to manage its Kubernetes objects: run juju trust {APP} --scope=cluster"
    )


@pytest.mark.usefixtures("kubeconfig_env", "no_authorization_policy_crd")
def test_without_istio_blocked_and_labels_held(
    ctx: Ctx, namespace: str, juju_app: MakeApp, tmp_path: Path
):
    coordinator = juju_app(APP, namespace)
    out = ctx.run(
        ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1"), mesh_relation())
    )
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "istio-k8s" in out.unit_status.message
    # No mesh label without policies, but cluster membership all the same (pods and workers).
    for labels in (coordinator.template_labels(), coordinator.service_labels()):
        assert labels[PART_OF_LABEL] == APP
        assert not set(MESH_LABELS) & set(labels)
    (cluster,) = [r for r in out.relations if r.endpoint == "cluster"]
    assert json.loads(cluster.local_app_data["worker_labels"]) == {PART_OF_LABEL: APP}
    # Juju rewrites the StatefulSet: the next hook puts membership back, still without Istio.
    coordinator.juju_reset()
    out = ctx.run(ctx.on.update_status(), out)
    assert coordinator.template_labels()[PART_OF_LABEL] == APP
    assert "istio.io/dataplane-mode" not in coordinator.template_labels()
    assert isinstance(out.unit_status, testing.BlockedStatus)


@pytest.mark.usefixtures("kubeconfig_env", "no_authorization_policy_crd")
def test_without_istio_and_without_mesh_all_is_well(
    ctx: Ctx, namespace: str, juju_app: MakeApp, tmp_path: Path
):
    coordinator = juju_app(APP, namespace)
    out = ctx.run(ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1")))
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")
    assert coordinator.template_labels()[PART_OF_LABEL] == APP


@pytest.mark.usefixtures("kubeconfig_env")
def test_remove_of_the_last_unit_deletes_every_owned_policy(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
):
    juju_app(APP, namespace)
    out = ctx.run(
        ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1"), mesh_relation())
    )
    assert len(_policies(k8s_client, authorization_policy_crd, namespace)) == 3
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=0))
    assert _policies(k8s_client, authorization_policy_crd, namespace) == []


@pytest.mark.usefixtures("kubeconfig_env")
def test_show_mesh_reads_kubernetes(
    ctx: Ctx,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
):
    juju_app(APP, namespace)
    out = ctx.run(
        ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1"), mesh_relation())
    )
    ctx.run(ctx.on.action("show-mesh"), out)
    results = ctx.action_results
    assert results is not None
    assert json.loads(results["labels-in-kubernetes"]) == {PART_OF_LABEL: APP, **MESH_LABELS}
    in_k8s = json.loads(results["cluster-policies-in-kubernetes"])
    assert len(in_k8s) == 3
    assert {p["namespace"] for p in in_k8s} == {namespace}


@pytest.mark.usefixtures("kubeconfig_env")
def test_without_mesh_an_unchanged_hook_reads_only_its_namespace(
    ctx: Ctx,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    request_log: RequestLog,
    tmp_path: Path,
):
    coordinator = juju_app(APP, namespace)
    out = ctx.run(ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1")))
    assert coordinator.template_labels()[PART_OF_LABEL] == APP
    request_log.clear()
    ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    assert 0 < len(request_log.requests) <= 2
    assert all(f"/namespaces/{namespace}/" in r.path for r in request_log.requests)


# --- Leaving the mesh: the policies stay while a cluster pod is enrolled --------------------

AMBIENT = {"istio.io/dataplane-mode": "ambient"}


def _create_pod(client: Client, namespace: str, name: str, labels: dict[str, str]) -> None:
    client.create(
        Pod(
            metadata=ObjectMeta(name=name, namespace=namespace, labels=labels),
            spec=PodSpec(containers=[Container(name="charm", image="ubuntu:22.04")]),
        )
    )


def _label(client: Client, resource: Any, name: str, labels: dict[str, str | None], **kw: Any):
    client.patch(resource, name, {"metadata": {"labels": labels}}, patch_type=PatchType.MERGE, **kw)


def _broken(ctx: Ctx, out: testing.State, relation_id: int) -> testing.State:
    """Break relation ``relation_id``, then drop it from the state (as Juju does)."""
    (gone,) = [r for r in out.relations if r.id == relation_id]
    out = ctx.run(ctx.on.relation_broken(gone), out)
    return dataclasses.replace(out, relations=[r for r in out.relations if r.id != relation_id])


@pytest.mark.usefixtures("kubeconfig_env")
def test_mesh_removed_policies_stay_while_a_pod_is_enrolled_and_go_when_it_leaves(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    request_log: RequestLog,
    tmp_path: Path,
):
    coordinator = juju_app(APP, namespace)
    mesh = mesh_relation()
    out = ctx.run(
        ctx.on.relation_changed(mesh), _state(namespace, tmp_path, worker_relation("w1"), mesh)
    )
    policies = _policies(k8s_client, authorization_policy_crd, namespace)
    assert len(policies) == 3
    # A pod of the cluster, enrolled, and one of someone else's (not a member).
    _create_pod(k8s_client, namespace, "w1-0", {PART_OF_LABEL: APP, **MESH_LABELS})
    _create_pod(k8s_client, namespace, "other-0", {PART_OF_LABEL: "other", **AMBIENT})

    out = _broken(ctx, out, mesh.id)
    assert _policies(k8s_client, authorization_policy_crd, namespace) == policies  # untouched
    assert not set(MESH_LABELS) & set(coordinator.template_labels())  # pods are told to leave
    assert coordinator.template_labels()[PART_OF_LABEL] == APP
    assert out.unit_status == testing.ActiveStatus(
        "1 worker app (1 unit), mesh removed: keeping 3 internal policies "
        "until 1 pod leaves the mesh"
    )

    # update-status re-checks; while draining nothing is written, and the pod's own label
    # settles it: 2 GETs for labels (the memory is known), the owned policies, the pods; no
    # namespace read.
    request_log.clear()
    out = ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    assert sorted(r.resource for r in request_log.requests) == [
        "authorizationpolicies",
        "pods",
        "services",
        "statefulsets",
    ]
    assert _policies(k8s_client, authorization_policy_crd, namespace) == policies

    # The worker's pod is re-created without the mesh labels (here: relabelled).
    _label(k8s_client, Pod, "w1-0", dict.fromkeys(MESH_LABELS), namespace=namespace)
    out = ctx.run(ctx.on.update_status(), out)
    assert _policies(k8s_client, authorization_policy_crd, namespace) == []
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")

    # The steady state off the mesh: at most 2 reads, no pod or namespace read.
    for _ in range(2):
        request_log.clear()
        out = ctx.run(ctx.on.update_status(), out)
        assert request_log.writes() == []
        assert 0 < len(request_log.requests) <= 2
        assert not {"pods", "namespaces"} & {r.resource for r in request_log.requests}


@pytest.mark.usefixtures("kubeconfig_env")
def test_model_on_mesh_policies_stay_while_the_namespace_keeps_a_pod_enrolled(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    request_log: RequestLog,
    tmp_path: Path,
):
    juju_app(APP, namespace)
    # model-on-mesh: the beacon publishes no labels and labels the namespace instead.
    _label(k8s_client, Namespace, namespace, dict(AMBIENT))
    mesh = mesh_relation(labels={})
    out = ctx.run(
        ctx.on.relation_changed(mesh), _state(namespace, tmp_path, worker_relation("w1"), mesh)
    )
    assert len(_policies(k8s_client, authorization_policy_crd, namespace)) == 3
    _create_pod(k8s_client, namespace, f"{APP}-0", {PART_OF_LABEL: APP})
    _create_pod(k8s_client, namespace, "w1-0", {PART_OF_LABEL: APP})

    request_log.clear()
    out = _broken(ctx, out, mesh.id)
    assert len(_policies(k8s_client, authorization_policy_crd, namespace)) == 3
    assert "namespaces" in {r.resource for r in request_log.requests}
    assert out.unit_status == testing.ActiveStatus(
        "1 worker app (1 unit), mesh removed: keeping 3 internal policies until 2 pods leave "
        "the mesh (the namespace is labelled istio.io/dataplane-mode=ambient)"
    )

    # One pod opts out, the other still counts.
    _label(k8s_client, Pod, f"{APP}-0", {"istio.io/dataplane-mode": "none"}, namespace=namespace)
    out = ctx.run(ctx.on.update_status(), out)
    assert len(_policies(k8s_client, authorization_policy_crd, namespace)) == 3
    assert "until 1 pod leaves the mesh" in out.unit_status.message

    # The last enrolled pod goes away: the policies go.
    k8s_client.delete(Pod, "w1-0", namespace=namespace, grace_period=0)
    wait_until(lambda: _absent(k8s_client, "w1-0", namespace), "the pod is deleted")
    out = ctx.run(ctx.on.update_status(), out)
    assert _policies(k8s_client, authorization_policy_crd, namespace) == []
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")


def _absent(client: Client, name: str, namespace: str) -> bool:
    try:
        client.get(Pod, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return True
        raise
    return False


RIGHTS = {
    "": ["configmaps", "namespaces", "pods", "services"],
    "apps": ["statefulsets"],
    "security.istio.io": ["authorizationpolicies"],
}
"""What the coordinator reads and writes (every verb), by API group."""


@pytest.mark.parametrize("withheld", ["pods", "namespaces"])
@pytest.mark.usefixtures("untrusted_kubeconfig_env")
def test_forbidden_read_while_draining_keeps_the_policies(
    ctx: Ctx,
    k8s_client: Client,
    untrusted_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    request_log: RequestLog,
    tmp_path: Path,
    withheld: str,
):
    juju_app(APP, namespace)
    grant_namespace_rights(
        k8s_client, untrusted_client, namespace, rights=RIGHTS, withheld=withheld
    )
    mesh = mesh_relation()
    out = ctx.run(
        ctx.on.relation_changed(mesh), _state(namespace, tmp_path, worker_relation("w1"), mesh)
    )
    assert isinstance(out.unit_status, testing.ActiveStatus), out.unit_status
    policies = _policies(k8s_client, authorization_policy_crd, namespace)
    assert len(policies) == 3
    # A pod without a mesh label of its own: only the namespace can tell.
    _create_pod(k8s_client, namespace, "w1-0", {PART_OF_LABEL: APP})
    request_log.clear()
    out = _broken(ctx, out, mesh.id)
    refused = [r for r in request_log.requests if r.resource == withheld]
    assert len(refused) == 1, request_log.requests
    assert _policies(k8s_client, authorization_policy_crd, namespace) == policies
    assert not [r for r in request_log.writes() if r.resource == "authorizationpolicies"]
    assert out.unit_status == testing.BlockedStatus(
        f"not allowed to manage its Kubernetes objects: run juju trust {APP} --scope=cluster"
    )
