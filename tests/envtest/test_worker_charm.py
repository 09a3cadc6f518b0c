"""The worker charm against a real Kubernetes API server (envtest), with its real label adapter.

The charm runs under ``ops.testing``; its own lightkube client reaches envtest through
``KUBECONFIG`` (the ``kubeconfig_env`` fixture), so the real
:func:`~coordinated_mesh.k8s.labels.reconcile_charm_labels` patches the StatefulSet and the Service
that ``juju_app`` created, as Juju would have.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType
from ops import testing

from tests.support.charm_loader import load_charm_module
from tests.support.envtest import JujuApp, RequestLog

CHARM = load_charm_module("worker")
APP = "mesh-worker-k8s"
JUJU_LABELS = {"app.kubernetes.io/name": APP}
PART_OF = {"app.kubernetes.io/part-of": "coord"}
MESH = {
    **PART_OF,
    "istio.io/dataplane-mode": "ambient",
    "istio.io/use-waypoint": "mymodel-istio-beacon-k8s-waypoint",
}
OTHERS = {"team.example.com/owner": "observability"}

Ctx = testing.Context[Any]
MakeApp = Callable[[str, str], JujuApp]


@pytest.fixture
def ctx() -> Ctx:
    return testing.Context(CHARM.MeshWorkerCharm)


@pytest.fixture
def app(juju_app: MakeApp, namespace: str) -> JujuApp:
    return juju_app(APP, namespace)


def cluster(labels: Mapping[str, str] | None) -> testing.Relation:
    data: dict[str, str] = {"worker_config": json.dumps("global: {}\n")}
    if labels is not None:
        data["worker_labels"] = json.dumps(dict(labels))
    return testing.Relation("cluster", remote_app_name="coord", remote_app_data=data)


def state(
    namespace: str, tmp_path: Path, *relations: testing.Relation, leader: bool = True
) -> testing.State:
    mount = testing.Mount(location="/etc/prometheus", source=tmp_path)
    return testing.State(
        leader=leader,
        model=testing.Model(name=namespace, uuid="00000000-0000-4000-8000-0000000000bb"),
        relations=list(relations),
        containers=[testing.Container("prometheus", can_connect=True, mounts={"etc": mount})],
    )


def coordinator_writes(
    ctx: Ctx, out: testing.State, relation: testing.Relation, labels: Mapping[str, str] | str
) -> testing.State:
    """Run ``cluster-relation-changed`` after the coordinator published ``labels`` (or raw text)."""
    value = labels if isinstance(labels, str) else json.dumps(dict(labels))
    current = out.get_relation(relation.id)
    changed = dataclasses.replace(
        current, remote_app_data={**relation.remote_app_data, "worker_labels": value}
    )
    new = dataclasses.replace(
        out, relations=[changed if r.id == relation.id else r for r in out.relations]
    )
    return ctx.run(ctx.on.relation_changed(changed), new)


def label_out_of_band(client: Client, app: JujuApp, labels: Mapping[str, str]) -> None:
    """Someone else (an operator, another tool) labels the pods and the Service."""
    client.patch(
        StatefulSet,
        app.name,
        {"spec": {"template": {"metadata": {"labels": dict(labels)}}}},
        namespace=app.namespace,
        patch_type=PatchType.MERGE,
    )
    client.patch(
        Service,
        app.name,
        {"metadata": {"labels": dict(labels)}},
        namespace=app.namespace,
        patch_type=PatchType.MERGE,
    )


def worker_requests(log: RequestLog) -> list[tuple[str, str]]:
    return [(r.method, r.resource) for r in log.requests]


@pytest.mark.usefixtures("kubeconfig_env")
def test_labels_land_once_and_others_labels_survive(
    ctx: Ctx,
    app: JujuApp,
    k8s_client: Client,
    namespace: str,
    request_log: RequestLog,
    tmp_path: Path,
):
    relation = cluster(MESH)
    out = ctx.run(ctx.on.relation_changed(relation), state(namespace, tmp_path, relation))
    assert out.unit_status == testing.ActiveStatus("coordinator: coord, role: all")
    assert app.template_labels() == {**JUJU_LABELS, **MESH}
    assert MESH.items() <= app.service_labels().items()

    # A second identical hook only reads the StatefulSet and the Service: the label memory is
    # known from the leader's own state, written in the first hook.
    request_log.clear()
    out = ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    assert sorted(worker_requests(request_log)) == [
        ("GET", "services"),
        ("GET", "statefulsets"),
    ]

    # Labels someone else adds are left alone, and cost no write.
    label_out_of_band(k8s_client, app, OTHERS)
    request_log.clear()
    out = ctx.run(ctx.on.update_status(), out)
    assert request_log.writes() == []
    assert app.template_labels() == {**JUJU_LABELS, **MESH, **OTHERS}
    assert OTHERS.items() <= app.service_labels().items()


@pytest.mark.usefixtures("kubeconfig_env")
def test_mesh_labels_removed_then_coordinator_removed(
    ctx: Ctx,
    app: JujuApp,
    k8s_client: Client,
    namespace: str,
    request_log: RequestLog,
    tmp_path: Path,
):
    relation = cluster(MESH)
    out = ctx.run(ctx.on.relation_changed(relation), state(namespace, tmp_path, relation))
    label_out_of_band(k8s_client, app, OTHERS)

    # The mesh relation left the coordinator: it now sends only the membership label.
    out = coordinator_writes(ctx, out, relation, PART_OF)
    assert app.template_labels() == {**JUJU_LABELS, **PART_OF, **OTHERS}
    service = app.service_labels()
    assert PART_OF.items() <= service.items() and OTHERS.items() <= service.items()
    assert "istio.io/dataplane-mode" not in service and "istio.io/use-waypoint" not in service

    # The coordinator goes: the worker leaves the cluster and takes back every label it set.
    out = ctx.run(ctx.on.relation_broken(out.get_relation(relation.id)), out)
    assert app.template_labels() == {**JUJU_LABELS, **OTHERS}
    assert "app.kubernetes.io/part-of" not in app.service_labels()
    assert out.unit_status.name == "blocked"

    # Later hooks without a coordinator: one read of the memory, nothing else.
    request_log.clear()
    ctx.run(ctx.on.update_status(), dataclasses.replace(out, relations=[]))
    assert worker_requests(request_log) == [("GET", "configmaps")]


@pytest.mark.usefixtures("kubeconfig_env")
def test_juju_reset_is_healed_while_the_coordinators_data_is_invalid(
    ctx: Ctx, app: JujuApp, namespace: str, tmp_path: Path
):
    relation = cluster(MESH)
    out = ctx.run(ctx.on.relation_changed(relation), state(namespace, tmp_path, relation))
    app.juju_reset()  # Juju rewrites the StatefulSet (charm upgrade): our labels are gone
    assert app.template_labels() == JUJU_LABELS

    out = coordinator_writes(ctx, out, relation, "{not json")
    assert out.unit_status.name == "waiting"
    assert app.template_labels() == {**JUJU_LABELS, **MESH}  # the last good labels, back


@pytest.mark.usefixtures("kubeconfig_env")
def test_non_leader_sends_no_request(
    ctx: Ctx, app: JujuApp, namespace: str, request_log: RequestLog, tmp_path: Path
):
    relation = cluster(MESH)
    request_log.clear()
    out = ctx.run(
        ctx.on.relation_changed(relation), state(namespace, tmp_path, relation, leader=False)
    )
    assert request_log.requests == []
    assert out.unit_status == testing.ActiveStatus("coordinator: coord, role: all")
    assert app.template_labels() == JUJU_LABELS


@pytest.mark.usefixtures("untrusted_kubeconfig_env")
def test_without_trust_the_status_says_juju_trust(
    ctx: Ctx, app: JujuApp, namespace: str, tmp_path: Path
):
    relation = cluster(MESH)
    out = ctx.run(ctx.on.relation_changed(relation), state(namespace, tmp_path, relation))
    assert out.unit_status == testing.BlockedStatus(
        f"not allowed to label its pods: run juju trust {APP} --scope=cluster"
    )
    assert app.template_labels() == JUJU_LABELS
    # The workload is configured all the same.
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    assert config["global"]["external_labels"]["juju_unit"] == f"{APP}/0"
    assert config["scrape_configs"][0]["job_name"] == "prometheus"
