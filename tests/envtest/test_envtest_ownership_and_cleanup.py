"""Label ownership, held labels per relation and clean-up, on a real Kubernetes API server.

* Keys Juju owns are refused with a status (coordinator from the beacon, worker from the
  coordinator); a key an operator set is neither taken over nor removed on leaving the mesh.
* A worker application joining while the policies cannot be written gets no mesh labels.
* Removing the last unit deletes the label memory ConfigMap and, with rights limited to the
  model's namespace, every owned policy.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from coordinated_mesh.k8s.labels import memory_name
from coordinated_mesh.mesh.cluster_policies import PART_OF_LABEL
from lightkube import ApiError, Client
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType
from ops import testing

from tests.support.charm_loader import load_charm_module
from tests.support.coordinator import (
    APP,
    MESH_LABELS,
    mesh_relation,
    running_state,
    worker_relation,
)
from tests.support.envtest import JujuApp, grant_namespace_rights

Ctx = testing.Context[Any]
MakeApp = Callable[[str, str], JujuApp]
WORKER = load_charm_module("worker")


def _state(namespace: str, tmp_path: Path, *relations: testing.RelationBase) -> testing.State:
    return running_state(
        namespace, tmp_path, *relations, uuid="00000000-0000-4000-8000-0000000000cc"
    )


def _memory_exists(client: Client, app: str, namespace: str) -> bool:
    try:
        client.get(ConfigMap, memory_name(app), namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return False
        raise
    return True


def _policies(
    client: Client, resource: type[GenericNamespacedResource], namespace: str
) -> list[Any]:
    return list(client.list(resource, namespace=namespace))


def _broken(ctx: Ctx, out: testing.State, relation_id: int) -> testing.State:
    (gone,) = [r for r in out.relations if r.id == relation_id]
    out = ctx.run(ctx.on.relation_broken(gone), out)
    return dataclasses.replace(out, relations=[r for r in out.relations if r.id != relation_id])


# --- Class 5: ownership ---------------------------------------------------------------------


@pytest.mark.usefixtures("kubeconfig_env")
def test_an_operators_mesh_label_is_not_taken_over_nor_removed(
    ctx: Ctx,
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
):
    coordinator = juju_app(APP, namespace)
    own = {"istio.io/use-waypoint": "operators-own-waypoint"}
    k8s_client.patch(
        StatefulSet,
        APP,
        {"spec": {"template": {"metadata": {"labels": own}}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    mesh = mesh_relation()
    out = ctx.run(ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1"), mesh))
    labels = coordinator.template_labels()
    assert labels["istio.io/use-waypoint"] == "operators-own-waypoint"
    assert labels["istio.io/dataplane-mode"] == MESH_LABELS["istio.io/dataplane-mode"]
    memory = k8s_client.get(ConfigMap, memory_name(APP), namespace=namespace)
    assert "istio.io/use-waypoint" not in json.loads((memory.data or {})["labels"])
    # Leaving the mesh removes what we set, and leaves the operator's label alone.
    _broken(ctx, out, mesh.id)
    labels = coordinator.template_labels()
    assert labels["istio.io/use-waypoint"] == "operators-own-waypoint"
    assert "istio.io/dataplane-mode" not in labels


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_beacon_label_juju_owns_is_refused_with_a_status(
    ctx: Ctx,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
):
    coordinator = juju_app(APP, namespace)
    mesh = mesh_relation(labels={**MESH_LABELS, "app.kubernetes.io/managed-by": "istio"})
    out = ctx.run(ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1"), mesh))
    assert "app.kubernetes.io/managed-by" in out.unit_status.message, out.unit_status
    assert "Juju owns" in out.unit_status.message
    assert coordinator.service_labels()["app.kubernetes.io/managed-by"] == "juju"
    assert not set(MESH_LABELS) & set(coordinator.template_labels())


@pytest.mark.usefixtures("kubeconfig_env")
def test_the_worker_refuses_a_label_juju_owns_with_a_status(
    k8s_client: Client, namespace: str, juju_app: MakeApp, tmp_path: Path
):
    worker = juju_app("w1", namespace)
    ctx = testing.Context(WORKER.MeshWorkerCharm, app_name="w1")
    labels = {PART_OF_LABEL: APP, "app.kubernetes.io/name": "hijacked"}
    relation = testing.Relation(
        "cluster", remote_app_name=APP, remote_app_data={"worker_labels": json.dumps(labels)}
    )
    mount = testing.Mount(location="/etc/prometheus", source=tmp_path)
    st = testing.State(
        leader=True,
        model=testing.Model(name=namespace, uuid="00000000-0000-4000-8000-0000000000dd"),
        relations=[relation],
        containers=[testing.Container("prometheus", can_connect=True, mounts={"etc": mount})],
    )
    out = ctx.run(ctx.on.config_changed(), st)
    assert out.unit_status.name == "waiting", out.unit_status
    assert "app.kubernetes.io/name" in out.unit_status.message
    assert "Juju owns" in out.unit_status.message
    assert worker.template_labels() == {"app.kubernetes.io/name": "w1"}
    assert not _memory_exists(k8s_client, "w1", namespace)


# --- Class 4: held labels per relation ------------------------------------------------------


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_worker_app_joining_without_policies_gets_no_mesh_labels(
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
    meshed = {PART_OF_LABEL: APP, **MESH_LABELS}
    # The policies can no longer be written (a role without AuthorizationPolicy rights would do
    # the same): Istio's CRD is gone.
    from tests.support.envtest import remove_authorization_policy_crd

    remove_authorization_policy_crd(k8s_client)
    w2 = worker_relation("w2")
    out = ctx.run(
        ctx.on.relation_joined(w2), dataclasses.replace(out, relations=[*out.relations, w2])
    )
    assert out.unit_status.name == "blocked", out.unit_status
    published = {
        r.remote_app_name: json.loads(r.local_app_data["worker_labels"])
        for r in out.relations
        if isinstance(r, testing.Relation) and r.endpoint == "cluster"
    }
    assert published == {"w1": meshed, "w2": {PART_OF_LABEL: APP}}


# --- Class 7: clean-up ----------------------------------------------------------------------


@pytest.mark.usefixtures("kubeconfig_env")
def test_removal_deletes_the_coordinators_label_memory(
    ctx: Ctx, k8s_client: Client, namespace: str, juju_app: MakeApp, tmp_path: Path
):
    juju_app(APP, namespace)
    out = ctx.run(ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1")))
    assert _memory_exists(k8s_client, APP, namespace)
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=0))
    assert not _memory_exists(k8s_client, APP, namespace)


@pytest.mark.usefixtures("kubeconfig_env")
def test_removal_deletes_the_workers_label_memory(
    k8s_client: Client, namespace: str, juju_app: MakeApp, tmp_path: Path
):
    juju_app("w1", namespace)
    ctx = testing.Context(WORKER.MeshWorkerCharm, app_name="w1")
    relation = testing.Relation(
        "cluster",
        remote_app_name=APP,
        remote_app_data={"worker_labels": json.dumps({PART_OF_LABEL: APP})},
    )
    mount = testing.Mount(location="/etc/prometheus", source=tmp_path)
    st = testing.State(
        leader=True,
        model=testing.Model(name=namespace, uuid="00000000-0000-4000-8000-0000000000dd"),
        relations=[relation],
        containers=[testing.Container("prometheus", can_connect=True, mounts={"etc": mount})],
    )
    out = ctx.run(ctx.on.config_changed(), st)
    assert _memory_exists(k8s_client, "w1", namespace)
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=2))
    assert _memory_exists(k8s_client, "w1", namespace)  # scaling down: nothing deleted
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=0))
    assert not _memory_exists(k8s_client, "w1", namespace)


@pytest.mark.usefixtures("untrusted_kubeconfig_env")
def test_removal_with_namespace_rights_deletes_every_owned_policy(
    ctx: Ctx,
    k8s_client: Client,
    untrusted_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
    tmp_path: Path,
):
    juju_app(APP, namespace)
    grant_namespace_rights(k8s_client, untrusted_client, namespace)
    out = ctx.run(
        ctx.on.config_changed(), _state(namespace, tmp_path, worker_relation("w1"), mesh_relation())
    )
    assert out.unit_status.name == "active", out.unit_status
    assert len(_policies(k8s_client, authorization_policy_crd, namespace)) == 3
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=0))
    assert _policies(k8s_client, authorization_policy_crd, namespace) == []
    assert not _memory_exists(k8s_client, APP, namespace)
