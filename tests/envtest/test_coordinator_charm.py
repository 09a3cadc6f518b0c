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

    # A second identical hook writes nothing to Kubernetes.
    request_log.clear()
    out = ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    # 1 LIST of owned policies + 3 GETs for labels (the anchor makes 12 calls here).
    assert 0 < len(request_log.requests) <= 4, request_log.requests

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


@pytest.mark.usefixtures("kubeconfig_env")
def test_steady_reads_between_and_on_update_status_and_a_service_reset_repaired(
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
    out = ctx.run(ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1"), mesh))
    wanted = {PART_OF_LABEL: APP, **MESH_LABELS}

    # Between update-status hooks: the StatefulSet and the owned policies, nothing else.
    request_log.clear()
    out = ctx.run(ctx.on.config_changed(), out)
    assert sorted((r.method, r.resource) for r in request_log.requests) == [
        ("GET", "authorizationpolicies"),  # a LIST (the collection)
        ("GET", "statefulsets"),
    ]
    # update-status, the periodic check, reads the Service too.
    request_log.clear()
    out = ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    assert sorted(r.resource for r in request_log.requests) == [
        "authorizationpolicies",
        "services",
        "statefulsets",
    ]

    # Someone replaces the Service with Juju's labels only: the next update-status repairs it.
    service = coordinator.service()
    assert service.metadata is not None
    service.metadata.labels = {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/managed-by": "juju",
    }
    k8s_client.replace(service)
    out = ctx.run(ctx.on.config_changed(), out)
    assert not wanted.items() <= coordinator.service_labels().items()  # not seen yet
    request_log.clear()
    ctx.run(ctx.on.update_status(), out)
    assert wanted.items() <= coordinator.service_labels().items()
    assert [(r.method, r.resource) for r in request_log.writes()] == [("PATCH", "services")]


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
    assert 0 < len(request_log.requests) <= 4
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

    # The steady state off the mesh is what it was: at most 4 reads, no pod or namespace read.
    request_log.clear()
    ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    assert 0 < len(request_log.requests) <= 4
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
