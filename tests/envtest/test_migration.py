"""Refreshing a coordinated-workers coordinator to one built on this library, on a real API server.

Each test first builds what ``coordinated-workers`` 4.1 (with the istio-beacon ``service_mesh``
library, LIBPATCH 15) leaves in the model (facts and sources: ``coordinated_mesh.k8s.migration``):
its label memories, the labels on the StatefulSet's pod template and the Service, and its
cluster-internal AuthorizationPolicies; then runs the new coordinator's first hook and checks the
end state and the order of the writes (``RequestLog``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from coordinated_mesh.k8s.labels import memory_name
from coordinated_mesh.k8s.migration import legacy_memory_names, legacy_policy_selector
from coordinated_mesh.k8s.policy_manager import OWNER_LABEL
from coordinated_mesh.mesh.cluster_policies import PART_OF_LABEL
from lightkube import ApiError, Client
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap, Service
from lightkube.types import PatchType
from ops import testing

from tests.support.coordinator import (
    APP,
    MESH_LABELS,
    mesh_relation,
    running_state,
    worker_relation,
)
from tests.support.envtest import JujuApp, RequestLog

Ctx = testing.Context[Any]
MakeApp = Callable[[str, str], JujuApp]
OTHERS = {"example.com/team": "observability"}
"""A label someone else put on our objects: never touched."""


def _state(namespace: str, tmp_path: Path, *relations: testing.RelationBase) -> testing.State:
    return running_state(
        namespace, tmp_path, *relations, uuid="00000000-0000-4000-8000-0000000000ab"
    )


def _legacy_policy(
    name: str, namespace: str, labels: dict[str, str], principal_app: str
) -> dict[str, Any]:
    """An AuthorizationPolicy as the old PolicyResourceManager renders a cluster-internal one."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {PART_OF_LABEL: APP}},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [
                        {
                            "source": {
                                "principals": [f"cluster.local/ns/{namespace}/sa/{principal_app}"]
                            }
                        }
                    ]
                }
            ],
        },
    }


def leave_coordinated_workers_state(
    client: Client,
    resource: type[GenericNamespacedResource],
    app: JujuApp,
    *,
    meshed: bool,
) -> list[str]:
    """What the old coordinator leaves in ``app``'s namespace; the names of its policies."""
    namespace = app.namespace
    part_of = {PART_OF_LABEL: APP}
    mesh = dict(MESH_LABELS) if meshed else {}
    applied = {**part_of, **mesh, **OTHERS}
    # Both label managers write the memory first, then patch the objects (json.dumps, unsorted).
    pod_labels, mesh_memory = legacy_memory_names(APP)
    memories = {pod_labels: part_of, mesh_memory: mesh}
    for name, labels in memories.items():
        client.create(
            ConfigMap(
                metadata=ObjectMeta(name=name, namespace=namespace),
                data={"labels": json.dumps(labels)},
            )
        )
    client.patch(
        StatefulSet,
        APP,
        {"spec": {"template": {"metadata": {"labels": applied}}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    client.patch(
        Service,
        APP,
        {"metadata": {"labels": applied}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    names: list[str] = []
    if meshed:
        labels = legacy_policy_selector(APP, namespace)
        for principal in (APP, "w1"):
            name = f"{APP}-{namespace}-policy-{principal}-{namespace}-{APP}-0123abcd"
            client.create(resource.from_dict(_legacy_policy(name, namespace, labels, principal)))
            names.append(name)
    # Not the old coordinator's: another app's cluster-internal policy, and one of ours for another
    # purpose (the old library's other scope), both in the same namespace.
    other = legacy_policy_selector("other", namespace)
    client.create(resource.from_dict(_legacy_policy("other-policy", namespace, other, "other")))
    external = {
        "app.kubernetes.io/instance": f"{APP}-{namespace}",
        "kubernetes-resource-handler-scope": "external",
    }
    client.create(resource.from_dict(_legacy_policy("external-policy", namespace, external, APP)))
    # Carries the old labels but also our ownership label: ours to judge, never the old package's.
    marked = {
        **legacy_policy_selector(APP, namespace),
        OWNER_LABEL: "someone.else.cluster-internal",
    }
    client.create(resource.from_dict(_legacy_policy("marked-policy", namespace, marked, APP)))
    return sorted(names)


def _names(client: Client, resource: type[GenericNamespacedResource], namespace: str) -> set[str]:
    return {str(obj["metadata"]["name"]) for obj in client.list(resource, namespace=namespace)}


def _memory(client: Client, namespace: str) -> dict[str, str]:
    config_map = client.get(ConfigMap, memory_name(APP), namespace=namespace)
    return json.loads((config_map.data or {})["labels"])


def _absent(client: Client, name: str, namespace: str) -> bool:
    try:
        client.get(ConfigMap, name, namespace=namespace)
    except ApiError as error:
        return error.status.code == 404
    return False


def _index(requests: list[Any], method: str, resource: str, name: str | None = None) -> list[int]:
    return [
        i
        for i, r in enumerate(requests)
        if r.method == method
        and r.resource == resource
        and (name is None or r.path.rstrip("/").endswith(f"/{name}"))
    ]


@pytest.mark.usefixtures("kubeconfig_env")
def test_meshed_refresh_creates_the_new_policies_before_deleting_the_old(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    request_log: RequestLog,
    tmp_path: Path,
):
    coordinator = juju_app(APP, namespace)
    old = leave_coordinated_workers_state(
        k8s_client, authorization_policy_crd, coordinator, meshed=True
    )
    before = _names(k8s_client, authorization_policy_crd, namespace)
    request_log.clear()

    mesh = mesh_relation()
    out = ctx.run(ctx.on.upgrade_charm(), _state(namespace, tmp_path, worker_relation("w1"), mesh))

    assert isinstance(out.unit_status, testing.ActiveStatus), out.unit_status
    # End state: ours in place, the old package's gone, nobody else's touched.
    after = _names(k8s_client, authorization_policy_crd, namespace)
    assert not set(old) & after
    assert {"other-policy", "external-policy", "marked-policy"} <= after
    ours = after - before
    assert len(ours) == 3  # coordinator -> cluster, w1 -> cluster, w1 -> Service
    # Labels taken over: the same values (no duplicate, no removal), others' label kept.
    wanted = {PART_OF_LABEL: APP, **MESH_LABELS}
    assert coordinator.template_labels() == {"app.kubernetes.io/name": APP, **wanted, **OTHERS}
    assert {**coordinator.service_labels()} == {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/managed-by": "juju",
        **wanted,
        **OTHERS,
    }
    assert _memory(k8s_client, namespace) == wanted
    for name in legacy_memory_names(APP):
        assert _absent(k8s_client, name, namespace), name

    # Write order: every new policy is created before any old one is deleted (no deny window),
    # our memory exists before the old memories go, and the labels were not rewritten.
    requests = request_log.requests
    creates = _index(requests, "POST", "authorizationpolicies")
    deletes = _index(requests, "DELETE", "authorizationpolicies")
    assert len(creates) == 3 and len(deletes) == 2
    assert max(creates) < min(deletes)
    (memory_created,) = _index(requests, "POST", "configmaps")
    memory_deletes = _index(requests, "DELETE", "configmaps")
    assert len(memory_deletes) == 2 and memory_created < min(memory_deletes)
    assert not _index(requests, "PATCH", "statefulsets")
    assert not _index(requests, "PATCH", "services")

    # The next hook finds nothing left to take over, and looks for nothing.
    request_log.clear()
    ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    assert not [
        r for r in request_log.requests if r.resource == "configmaps" and "pod-labels" in r.path
    ]


@pytest.mark.usefixtures("kubeconfig_env")
def test_refresh_off_the_mesh_removes_the_old_mesh_labels_and_keeps_part_of(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
):
    # The mesh relation was removed around the refresh: the old mesh labels are stale now.
    coordinator = juju_app(APP, namespace)
    leave_coordinated_workers_state(k8s_client, authorization_policy_crd, coordinator, meshed=True)

    out = ctx.run(ctx.on.upgrade_charm(), _state(namespace, tmp_path, worker_relation("w1")))

    assert isinstance(out.unit_status, testing.ActiveStatus), out.unit_status
    for labels in (coordinator.template_labels(), coordinator.service_labels()):
        assert labels[PART_OF_LABEL] == APP
        assert not set(MESH_LABELS) & set(labels)  # taken over, so removed; not orphaned
        assert OTHERS.items() <= labels.items()
    assert _memory(k8s_client, namespace) == {PART_OF_LABEL: APP}
    # No pod of the cluster is enrolled (envtest runs none): the old policies go too.
    assert _names(k8s_client, authorization_policy_crd, namespace) == {
        "other-policy",
        "external-policy",
        "marked-policy",
    }


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_failed_policy_apply_keeps_the_old_policies(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    coordinator = juju_app(APP, namespace)
    old = leave_coordinated_workers_state(
        k8s_client, authorization_policy_crd, coordinator, meshed=True
    )
    from coordinated_mesh.k8s import policy_manager
    from coordinated_mesh.k8s.client import KubernetesError

    create = policy_manager.PolicyResourceManager._create
    refusing = [True]

    def refuse(self: Any, obj: Any) -> str:
        if refusing[0]:  # like an admission webhook refusing the object
            raise KubernetesError("Kubernetes API error 500: admission webhook", status=500)
        return create(self, obj)

    monkeypatch.setattr(policy_manager.PolicyResourceManager, "_create", refuse)
    mesh = mesh_relation()
    out = ctx.run(ctx.on.upgrade_charm(), _state(namespace, tmp_path, worker_relation("w1"), mesh))

    assert not isinstance(out.unit_status, testing.ActiveStatus)
    assert set(old) <= _names(k8s_client, authorization_policy_crd, namespace)  # still allowed
    assert MESH_LABELS.items() <= coordinator.template_labels().items()  # pods stay enrolled

    refusing[0] = False
    out = ctx.run(ctx.on.update_status(), out)
    assert isinstance(out.unit_status, testing.ActiveStatus), out.unit_status
    assert not set(old) & _names(k8s_client, authorization_policy_crd, namespace)


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_refreshed_worker_takes_over_its_labels(
    k8s_client: Client, namespace: str, juju_app: MakeApp, request_log: RequestLog, tmp_path: Path
):
    from tests.support.charm_loader import load_charm_module

    charm = load_charm_module("worker")
    worker_app = "mesh-worker-k8s"
    worker = juju_app(worker_app, namespace)
    # The old worker applied what its coordinator sent, remembered in <app>-pod-labels; the
    # coordinator (refreshed already) no longer sends the mesh labels.
    old = {PART_OF_LABEL: APP, **MESH_LABELS}
    k8s_client.create(
        ConfigMap(
            metadata=ObjectMeta(name=legacy_memory_names(worker_app)[0], namespace=namespace),
            data={"labels": json.dumps(old)},
        )
    )
    k8s_client.patch(
        StatefulSet,
        worker_app,
        {"spec": {"template": {"metadata": {"labels": {**old, **OTHERS}}}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    request_log.clear()
    cluster = testing.Relation(
        "cluster",
        remote_app_name=APP,
        remote_app_data={
            "worker_labels": json.dumps({PART_OF_LABEL: APP}),
            "worker_config": json.dumps("global: {}\n"),
        },
    )
    ctx = testing.Context(charm.MeshWorkerCharm)
    mount = testing.Mount(location="/etc/prometheus", source=tmp_path)
    out = ctx.run(
        ctx.on.upgrade_charm(),
        testing.State(
            leader=True,
            model=testing.Model(name=namespace, uuid="00000000-0000-4000-8000-0000000000ac"),
            relations=[cluster],
            containers=[testing.Container("prometheus", can_connect=True, mounts={"etc": mount})],
        ),
    )
    assert worker.template_labels() == {
        "app.kubernetes.io/name": worker_app,
        PART_OF_LABEL: APP,
        **OTHERS,
    }  # the stale mesh labels are removed, not orphaned; others' stay
    memory = k8s_client.get(ConfigMap, memory_name(worker_app), namespace=namespace)
    assert json.loads((memory.data or {})["labels"]) == {PART_OF_LABEL: APP}
    assert _absent(k8s_client, legacy_memory_names(worker_app)[0], namespace)
    requests = request_log.requests
    (created,) = _index(requests, "POST", "configmaps")
    (deleted,) = _index(requests, "DELETE", "configmaps")
    assert created < deleted
    request_log.clear()
    ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    assert not [r for r in request_log.requests if "pod-labels" in r.path]


@pytest.mark.usefixtures("kubeconfig_env")
def test_an_unreadable_old_memory_is_dropped_with_a_warning(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    juju_app(APP, namespace)
    for name, raw in zip(
        legacy_memory_names(APP), ["[[[not json", '{"bad key!": "x"}'], strict=True
    ):
        k8s_client.create(
            ConfigMap(metadata=ObjectMeta(name=name, namespace=namespace), data={"labels": raw})
        )
    out = ctx.run(ctx.on.upgrade_charm(), _state(namespace, tmp_path, worker_relation("w1")))
    assert isinstance(out.unit_status, testing.ActiveStatus), out.unit_status
    assert _memory(k8s_client, namespace) == {PART_OF_LABEL: APP}
    for name in legacy_memory_names(APP):
        assert _absent(k8s_client, name, namespace)
    assert "unreadable label memory" in caplog.text


@pytest.mark.usefixtures("kubeconfig_env")
def test_refresh_off_the_mesh_keeps_the_old_policies_while_a_pod_is_enrolled(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
):
    from lightkube.models.core_v1 import Container, PodSpec
    from lightkube.resources.core_v1 import Pod

    coordinator = juju_app(APP, namespace)
    old = leave_coordinated_workers_state(
        k8s_client, authorization_policy_crd, coordinator, meshed=True
    )
    # A worker pod that has not rolled out of the mesh yet (envtest runs no kubelet: it stays).
    k8s_client.create(
        Pod(
            metadata=ObjectMeta(
                name="w1-0", namespace=namespace, labels={PART_OF_LABEL: APP, **MESH_LABELS}
            ),
            spec=PodSpec(containers=[Container(name="charm", image="ubuntu:22.04")]),
        )
    )
    out = ctx.run(ctx.on.upgrade_charm(), _state(namespace, tmp_path, worker_relation("w1")))
    assert set(old) <= _names(k8s_client, authorization_policy_crd, namespace)  # no deny window
    assert not set(MESH_LABELS) & set(coordinator.template_labels())  # pods leave the mesh
    k8s_client.patch(
        Pod,
        "w1-0",
        {"metadata": {"labels": dict.fromkeys(MESH_LABELS)}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )  # it rolled: no mesh label any more
    ctx.run(ctx.on.update_status(), out)
    assert not set(old) & _names(k8s_client, authorization_policy_crd, namespace)
