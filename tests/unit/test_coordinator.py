"""The coordinator charm under ``ops.testing``: mesh, labels, policies, databags, statuses.

Kubernetes is the in-memory :class:`FakeKubernetes` (the real adapters are exercised against a
real API server in ``tests/envtest/test_coordinator_charm.py``). Every nginx configuration a test
renders is checked with the real ``nginx -t``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import ops
import pytest
import yaml
from coordinated_mesh.k8s.client import CRDMissingError, ForbiddenError, KubernetesError
from coordinated_mesh.mesh.cluster_policies import PART_OF_LABEL
from coordinated_mesh.mesh.drain import ClusterPod
from ops import testing

from tests.support.charm_loader import ROOT
from tests.support.coordinator import (
    APP,
    MESH_LABELS,
    MODEL,
    FakeKubernetes,
    app_data,
    check_all_nginx,
    check_nginx,
    loki_relation,
    make_context,
    mesh_relation,
    metrics_relation,
    nginx_config,
    relation,
    running_containers,
    state,
    worker_relation,
)

Ctx = testing.Context[Any]


def run(ctx: Ctx, event: Any, st: testing.State) -> testing.State:
    """Run one hook and check the nginx configuration it left with the real nginx."""
    out = ctx.run(event, st)
    config = nginx_config(ctx, out)
    if config is not None:
        check_nginx(config)
    return out


def published(out: testing.State) -> dict[str, Any]:
    """The first cluster relation's coordinator databag, decoded."""
    (first, *_) = app_data(out)
    return {k: json.loads(v) for k, v in first.items()}


# --- Leader, no mesh ------------------------------------------------------------------------


def test_model_name_starting_with_a_digit_is_a_normal_model(ctx: Ctx, kube: FakeKubernetes):
    """Juju allows model names such as ``2024-prod``; every hook there must work as anywhere."""
    st = dataclasses.replace(
        state(worker_relation("w1", 1)), model=dataclasses.replace(MODEL, name="2024-prod")
    )
    out = run(ctx, ctx.on.config_changed(), st)
    assert kube.labels == {PART_OF_LABEL: APP}
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")


def test_leader_without_mesh_labels_part_of_and_deletes_nothing(ctx: Ctx, kube: FakeKubernetes):
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1", 2)))
    assert kube.labels == {PART_OF_LABEL: APP}
    assert kube.policies == {}
    assert kube.writes == ["labels"]
    data = published(out)
    assert data["worker_labels"] == {PART_OF_LABEL: APP}
    assert "scrape_interval" in data["worker_config"]
    assert out.unit_status == testing.ActiveStatus("1 worker app (2 units), mesh: none")
    assert out.app_status == out.unit_status
    config = nginx_config(ctx, out)
    assert config is not None
    assert "location = /proxy/worker/w1-0/metrics" in config
    assert "location = /proxy/worker/w1-1/metrics" in config


def test_ports_and_layers(ctx: Ctx, kube: FakeKubernetes):
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1")))
    # HTTP proxy, gRPC proxy (OTLP gRPC's own port), exporter; the status port stays local.
    assert {p.port for p in out.opened_ports} == {8080, 4317, 9113}
    config = nginx_config(ctx, out)
    assert config is not None
    listens = sorted(line.strip() for line in config.splitlines() if "listen " in line)
    assert listens == ["listen 127.0.0.1:8081;", "listen 4317;", "listen 8080;"]
    assert "http2 on;" in config  # the image's nginx 1.28 deprecates `listen ... http2`
    nginx = out.get_container("nginx").plan.services["nginx"]
    assert nginx.command == "nginx -c /etc/nginx/nginx.conf -g 'daemon off;'"
    exporter = out.get_container("nginx-prometheus-exporter").plan.services[
        "nginx-prometheus-exporter"
    ]
    assert exporter.command == (
        "nginx-prometheus-exporter --web.listen-address=:9113 "
        "--nginx.scrape-uri=http://127.0.0.1:8081/status"
    )


def test_a_second_identical_hook_writes_nothing(ctx: Ctx, kube: FakeKubernetes, tmp_path: Path):
    st = testing.State(
        leader=True,
        model=MODEL,
        relations=[worker_relation("w1"), mesh_relation()],
        containers=running_containers(tmp_path / "etc-nginx", None),
    )
    out = run(ctx, ctx.on.config_changed(), st)
    writes = list(kube.writes)
    ctx.exec_history.clear()
    again = run(ctx, ctx.on.update_status(), out)
    assert kube.writes == writes
    assert app_data(again) == app_data(out)
    assert dict(relation(again, "service-mesh").local_app_data) == dict(
        relation(out, "service-mesh").local_app_data
    )
    assert ctx.exec_history.get("nginx", []) == []


# --- Non-leader -----------------------------------------------------------------------------


def test_non_leader_renders_nginx_and_writes_nothing_else(ctx: Ctx, kube: FakeKubernetes):
    out = run(
        ctx,
        ctx.on.config_changed(),
        state(worker_relation("w1"), mesh_relation(), leader=False),
    )
    assert kube.calls == []
    assert app_data(out) == [{}]
    assert dict(relation(out, "service-mesh").local_app_data) == {}
    assert nginx_config(ctx, out) is not None
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: istio")


# --- Mesh -----------------------------------------------------------------------------------


def _policy_kinds(kube: FakeKubernetes) -> set[tuple[str, str, str]]:
    kinds: set[tuple[str, str, str]] = set()
    for p in kube.policy_wires():
        target = p["target_app_name"] or json.dumps(p["target_selector_labels"], sort_keys=True)
        kinds.add((p["source_app_name"], p["target_type"], target))
    return kinds


def test_mesh_present_applies_policies_labels_and_publishes(ctx: Ctx, kube: FakeKubernetes):
    mesh = mesh_relation()
    out = run(
        ctx,
        ctx.on.relation_changed(mesh),
        state(worker_relation("w1", 2), worker_relation("w2"), mesh),
    )
    selector = json.dumps({PART_OF_LABEL: APP})
    assert _policy_kinds(kube) == {
        (APP, "unit", selector),
        ("w1", "unit", selector),
        ("w2", "unit", selector),
        ("w1", "app", APP),
        ("w2", "app", APP),
    }
    assert kube.labels == {PART_OF_LABEL: APP, **MESH_LABELS}
    assert kube.writes == ["policies", "labels"]  # policies before labels
    for data in app_data(out):
        assert json.loads(data["worker_labels"]) == {PART_OF_LABEL: APP, **MESH_LABELS}
    external = json.loads(relation(out, "service-mesh").local_app_data["policies"])
    assert external == []  # nobody related over metrics-endpoint or grafana-source yet
    assert out.unit_status == testing.ActiveStatus(
        "2 worker apps (3 units), mesh: istio, 5 internal policies"
    )


def test_external_policies_are_published_for_related_apps(ctx: Ctx, kube: FakeKubernetes):
    metrics = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    grafana = testing.Relation("grafana-source", remote_app_name="grafana")
    out = run(
        ctx,
        ctx.on.config_changed(),
        state(worker_relation("w1"), mesh_relation(), metrics, grafana),
    )
    external = json.loads(relation(out, "service-mesh").local_app_data["policies"])
    summary = sorted(
        (p["source_app_name"], p["target_type"], json.dumps(p["endpoints"], sort_keys=True))
        for p in external
    )
    assert summary == sorted(
        [
            (
                "grafana",
                "app",
                json.dumps(
                    [_endpoint(ports=[8080, 8443], methods=["GET", "POST"], paths=["/query/*"])],
                    sort_keys=True,
                ),
            ),
            ("prometheus", "unit", json.dumps([_endpoint(ports=[9113])], sort_keys=True)),
            (
                "prometheus",
                "app",
                json.dumps(
                    [
                        _endpoint(
                            ports=[8080, 8443], methods=["GET"], paths=["/proxy/worker/{*}/metrics"]
                        )
                    ],
                    sort_keys=True,
                ),
            ),
        ]
    )
    for p in external:
        assert p["target_app_name"] == APP
        assert p["source_namespace"] == p["target_namespace"] == MODEL.name


def _endpoint(**kwargs: Any) -> dict[str, Any]:
    return {"hosts": None, "ports": None, "methods": None, "paths": None, **kwargs}


def test_mesh_not_ready_waits_and_keeps_off_the_mesh(ctx: Ctx, kube: FakeKubernetes):
    mesh = mesh_relation(ready=False)
    out = run(ctx, ctx.on.relation_created(mesh), state(worker_relation("w1"), mesh))
    assert kube.policies == {}
    assert kube.labels == {PART_OF_LABEL: APP}
    assert published(out)["worker_labels"] == {PART_OF_LABEL: APP}
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert "service-mesh" in out.unit_status.message
    assert "istio-beacon" in out.unit_status.message


def test_mesh_removed_deletes_policies_and_mesh_labels(ctx: Ctx, kube: FakeKubernetes):
    mesh = mesh_relation()
    out = run(ctx, ctx.on.relation_changed(mesh), state(worker_relation("w1"), mesh))
    assert kube.policies
    out = run(ctx, ctx.on.relation_broken(relation(out, "service-mesh")), out)
    assert kube.policies == {}
    assert kube.labels == {PART_OF_LABEL: APP}
    assert kube.writes[-2:] == ["labels", "policies"]  # labels first, then the policies
    assert published(out)["worker_labels"] == {PART_OF_LABEL: APP}
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")


def test_namespace_wide_mesh_labels_are_empty_but_mesh_is_active(ctx: Ctx, kube: FakeKubernetes):
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation(labels={})))
    assert kube.labels == {PART_OF_LABEL: APP}
    assert len(kube.policies) == 3
    assert out.unit_status == testing.ActiveStatus(
        "1 worker app (1 unit), mesh: istio, 3 internal policies"
    )


# --- Workers joining and leaving ------------------------------------------------------------


def test_workers_joining_and_leaving(ctx: Ctx, kube: FakeKubernetes):
    w1 = worker_relation("w1")
    w2 = worker_relation("w2", 2)
    out = run(ctx, ctx.on.relation_joined(w1, remote_unit=0), state(w1, mesh_relation()))
    assert len(kube.policies) == 3
    st = testing.State(
        leader=True,
        model=MODEL,
        relations=[*out.relations, w2],
        containers=out.containers,
    )
    out = run(ctx, ctx.on.relation_changed(w2, remote_unit=1), st)
    assert len(kube.policies) == 5
    assert out.unit_status == testing.ActiveStatus(
        "2 worker apps (3 units), mesh: istio, 5 internal policies"
    )
    (w2_out,) = [r for r in out.relations if r.id == w2.id]
    out = run(ctx, ctx.on.relation_broken(w2_out), out)
    assert len(kube.policies) == 3
    assert {p["source_app_name"] for p in kube.policy_wires()} == {APP, "w1"}
    config = nginx_config(ctx, out)
    assert config is not None
    assert "w2-" not in config


def test_no_workers_is_blocked_with_the_command(ctx: Ctx, kube: FakeKubernetes):
    out = run(ctx, ctx.on.install(), state())
    assert out.unit_status == testing.BlockedStatus(
        f"no workers: run juju integrate {APP}:cluster <worker-app>:cluster"
    )
    assert kube.labels == {PART_OF_LABEL: APP}


def test_worker_joined_without_data_yet_is_not_an_error(ctx: Ctx, kube: FakeKubernetes):
    rel = testing.Relation("cluster", remote_app_name="w1", remote_units_data={0: {}})
    out = run(ctx, ctx.on.relation_joined(rel, remote_unit=0), state(rel))
    assert out.unit_status == testing.ActiveStatus("1 worker app (0 units), mesh: none")


# --- Invalid relation data ------------------------------------------------------------------


def test_invalid_worker_data_names_relation_and_unit_the_rest_works(ctx: Ctx, kube: FakeKubernetes):
    bad = testing.Relation(
        "cluster",
        remote_app_name="w2",
        remote_units_data={0: {"juju_topology": "{not json", "address": '"x"'}},
    )
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), bad, mesh_relation()))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "cluster" in out.unit_status.message
    assert "w2/0" in out.unit_status.message
    assert "juju_topology" in out.unit_status.message
    config = nginx_config(ctx, out)
    assert config is not None
    assert "/proxy/worker/w1-0/metrics" in config
    assert len(kube.policies) == 5  # w2 is still a related application
    assert published(out)["worker_labels"][PART_OF_LABEL] == APP


def test_worker_claiming_another_units_name_is_refused(ctx: Ctx, kube: FakeKubernetes):
    from tests.support.coordinator import worker_unit_data

    impostor = testing.Relation(
        "cluster", remote_app_name="w2", remote_units_data={0: worker_unit_data("w1", 5)}
    )
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), impostor))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "w2/0" in out.unit_status.message
    config = nginx_config(ctx, out)
    assert config is not None
    assert "w1-5" not in config


def test_invalid_beacon_data_waits_naming_the_relation(ctx: Ctx, kube: FakeKubernetes):
    mesh = testing.Relation(
        "service-mesh",
        remote_app_name="istio-beacon",
        remote_app_data={"labels": '{"bad key!": "x"}', "mesh_type": '"istio"'},
    )
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh))
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert "service-mesh" in out.unit_status.message
    assert kube.policies == {}


# --- Kubernetes failures --------------------------------------------------------------------


def test_without_trust_blocked_with_the_command_and_the_rest_works(ctx: Ctx, kube: FakeKubernetes):
    kube.fail_with = ForbiddenError("403 forbidden", status=403)
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    assert out.unit_status == testing.BlockedStatus(
        f"not allowed to manage its Kubernetes objects: run juju trust {APP} --scope=cluster"
    )
    # One 403 is enough: no more calls this hook (the first, a look for what coordinated-workers
    # left, is refused like every other).
    assert kube.calls == ["adopt_legacy_labels"]
    assert nginx_config(ctx, out) is not None
    assert json.loads(relation(out, "service-mesh").local_app_data["policies"]) == []
    # Policies failed, so the workers get no mesh label (nothing published before): membership.
    assert published(out)["worker_labels"] == {PART_OF_LABEL: APP}
    assert "worker_config" in app_data(out)[0]


def test_trust_granted_later_recovers(ctx: Ctx, kube: FakeKubernetes):
    kube.fail_with = ForbiddenError("403 forbidden", status=403)
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1")))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    kube.fail_with = None
    out = run(ctx, ctx.on.update_status(), out)
    assert kube.labels == {PART_OF_LABEL: APP}
    assert isinstance(out.unit_status, testing.ActiveStatus)


def test_crd_missing_with_mesh_is_blocked_and_keeps_what_was_applied(
    ctx: Ctx, kube: FakeKubernetes
):
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1")))
    assert published(out)["worker_labels"] == {PART_OF_LABEL: APP}
    kube.policies_fail_with = CRDMissingError("no AuthorizationPolicy", status=404)
    st = testing.State(
        leader=True,
        model=MODEL,
        relations=[*out.relations, mesh_relation()],
        containers=out.containers,
    )
    out = run(ctx, ctx.on.relation_changed(relation(st, "service-mesh")), st)
    assert out.unit_status == testing.BlockedStatus(
        "Istio AuthorizationPolicy CRD missing: deploy istio-k8s (--trust) "
        "or remove the service-mesh relation"
    )
    # No pod is enrolled without its policies: labels and worker labels stay as they were.
    assert kube.labels == {PART_OF_LABEL: APP}
    assert published(out)["worker_labels"] == {PART_OF_LABEL: APP}


def test_crd_missing_on_a_first_hook_applies_and_publishes_membership_only(
    ctx: Ctx, kube: FakeKubernetes
):
    kube.policies_fail_with = CRDMissingError("no AuthorizationPolicy", status=404)
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "istio-k8s" in out.unit_status.message
    # No pod joins the mesh without its policies, but every pod is a cluster member.
    assert kube.labels == {PART_OF_LABEL: APP}
    assert published(out)["worker_labels"] == {PART_OF_LABEL: APP}
    assert kube.policies == {}


def test_crd_missing_membership_comes_back_after_a_juju_reset(ctx: Ctx, kube: FakeKubernetes):
    kube.policies_fail_with = CRDMissingError("no AuthorizationPolicy", status=404)
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    assert kube.labels == {PART_OF_LABEL: APP}
    kube.labels = {}  # Juju rewrote the StatefulSet: our labels are gone (and so is the memory)
    kube.calls.clear()
    out = run(ctx, ctx.on.update_status(), out)
    assert kube.labels == {PART_OF_LABEL: APP}
    # The first hook found nothing of coordinated-workers (no CRD: no old policy either), so
    # this one does not look again.
    assert kube.calls == ["reconcile_policies", "managed_labels", "reconcile_labels"]
    assert isinstance(out.unit_status, testing.BlockedStatus)


def test_policies_failing_on_the_mesh_keep_the_mesh_labels_applied_before(
    ctx: Ctx, kube: FakeKubernetes
):
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    meshed = {PART_OF_LABEL: APP, **MESH_LABELS}
    assert kube.labels == meshed
    # A transient failure (or Istio removed): pods already enrolled stay enrolled, no restart.
    kube.policies_fail_with = KubernetesError("Kubernetes API error 500: etcd timeout", status=500)
    writes = list(kube.writes)
    out = run(ctx, ctx.on.update_status(), out)
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert kube.labels == meshed
    assert kube.writes == writes
    assert published(out)["worker_labels"] == meshed


def test_policies_failing_hold_only_what_was_not_applied(ctx: Ctx, kube: FakeKubernetes):
    # Labels someone else's run left in our memory stay; membership is added; no mesh label.
    kube.labels = {"example.com/team": "observability"}
    kube.policies_fail_with = CRDMissingError("no AuthorizationPolicy", status=404)
    run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    assert kube.labels == {"example.com/team": "observability", PART_OF_LABEL: APP}


def test_crd_missing_without_mesh_is_fine(ctx: Ctx, kube: FakeKubernetes):
    kube.policies_fail_with = CRDMissingError("no AuthorizationPolicy", status=404)
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1")))
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")


def test_api_error_waits_and_does_not_crash(ctx: Ctx, kube: FakeKubernetes):
    kube.fail_with = KubernetesError("Kubernetes API error 500: etcd timeout", status=500)
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert "etcd timeout" in out.unit_status.message
    assert "retrying" in out.unit_status.message


def test_real_backend_without_credentials_is_an_api_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_kubeconfig: None
):
    real = make_context(monkeypatch, tmp_path)  # the real backend: no configuration found
    out = run(real, real.on.config_changed(), state(worker_relation("w1")))
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert "no Kubernetes client: ConfigError" in out.unit_status.message


# --- Leaving the mesh: no deny window ------------------------------------------------------

AMBIENT = {"istio.io/dataplane-mode": "ambient"}
MEMBER = {PART_OF_LABEL: APP}


def pod(name: str, *labels: dict[str, str], phase: str | None = "Running") -> ClusterPod:
    merged: dict[str, str] = {}
    for item in labels:
        merged.update(item)
    return ClusterPod(name=name, labels=merged, phase=phase)


def meshed(ctx: Ctx, kube: FakeKubernetes, *workers: testing.Relation) -> testing.State:
    """Run a hook on the mesh; the cluster's pods are enrolled (they carry the mesh labels)."""
    out = run(ctx, ctx.on.config_changed(), state(*workers, mesh_relation()))
    assert kube.policies
    kube.pods = [pod(f"{APP}-0", MEMBER, MESH_LABELS)] + [
        pod(f"{w.remote_app_name}-{i}", MEMBER, MESH_LABELS)
        for w in workers
        for i in w.remote_units_data
    ]
    return out


def break_mesh(ctx: Ctx, out: testing.State) -> testing.State:
    return run(ctx, ctx.on.relation_broken(relation(out, "service-mesh")), out)


def without_mesh(out: testing.State) -> testing.State:
    return dataclasses.replace(
        out, relations=[r for r in out.relations if r.endpoint != "service-mesh"]
    )


def test_mesh_removed_keeps_policies_while_pods_are_enrolled_then_deletes_them(
    ctx: Ctx, kube: FakeKubernetes
):
    out = meshed(ctx, kube, worker_relation("w1", 2))
    before = dict(kube.policies)
    assert len(before) == 3
    out = break_mesh(ctx, out)
    # The mesh labels go at once (that is what makes pods leave), the policies stay.
    assert kube.labels == MEMBER
    assert published(out)["worker_labels"] == MEMBER
    assert kube.policies == before
    assert kube.writes[-1] == "labels"
    assert out.unit_status == testing.ActiveStatus(
        "1 worker app (2 units), mesh removed: keeping 3 internal policies "
        "until 3 pods leave the mesh"
    )
    # Every pod settles it with its own label: the namespace is not read.
    assert "namespace_labels" not in kube.calls

    # update-status re-checks: the coordinator's pod was re-created without the mesh labels.
    out = without_mesh(out)
    kube.pods[0] = pod(f"{APP}-0", MEMBER)
    writes = list(kube.writes)
    out = run(ctx, ctx.on.update_status(), out)
    assert kube.writes == writes  # nothing rewritten while draining
    assert kube.policies == before
    assert out.unit_status == testing.ActiveStatus(
        "1 worker app (2 units), mesh removed: keeping 3 internal policies "
        "until 2 pods leave the mesh"
    )

    # The workers rolled too: the next update-status deletes the policies.
    kube.pods = [pod(p.name, MEMBER) for p in kube.pods]
    kube.calls.clear()
    out = run(ctx, ctx.on.update_status(), out)
    assert kube.policies == {}
    assert kube.writes[-1] == "policies"
    assert kube.calls == [
        "reconcile_labels",
        "local_policies",
        "cluster_pods",
        "namespace_labels",  # unlabelled pods: the namespace decides
        "reconcile_policies",
    ]
    assert out.unit_status == testing.ActiveStatus("1 worker app (2 units), mesh: none")

    # Then the steady state off the mesh: one list of policies, nothing else.
    kube.calls.clear()
    run(ctx, ctx.on.update_status(), out)
    assert kube.calls == ["reconcile_labels", "local_policies"]


def test_one_enrolled_pod_is_enough_and_terminated_pods_do_not_count(
    ctx: Ctx, kube: FakeKubernetes
):
    out = meshed(ctx, kube, worker_relation("w1", 2))
    kube.pods = [
        pod(f"{APP}-0", MEMBER),
        pod("w1-0", MEMBER, AMBIENT),
        pod("w1-1", MEMBER, AMBIENT, phase="Failed"),
        pod("stranger-0", AMBIENT),  # not a cluster member: not ours to wait for
    ]
    out = break_mesh(ctx, out)
    assert len(kube.policies) == 3
    assert out.unit_status == testing.ActiveStatus(
        "1 worker app (2 units), mesh removed: keeping 3 internal policies "
        "until 1 pod leaves the mesh"
    )
    kube.pods = [pod(f"{APP}-0", MEMBER), pod("w1-0", MEMBER, {"istio.io/dataplane-mode": "none"})]
    run(ctx, ctx.on.update_status(), without_mesh(out))
    assert kube.policies == {}


def test_namespace_on_the_mesh_keeps_policies_until_its_label_goes(ctx: Ctx, kube: FakeKubernetes):
    # The beacon's model-on-mesh: the namespace is labelled, the pods carry no mesh label.
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation(labels={})))
    assert len(kube.policies) == 3
    kube.namespace_labels_ = dict(AMBIENT)
    kube.pods = [pod(f"{APP}-0", MEMBER), pod("w1-0", MEMBER)]
    out = without_mesh(break_mesh(ctx, out))
    assert len(kube.policies) == 3
    assert out.unit_status == testing.ActiveStatus(
        "1 worker app (1 unit), mesh removed: keeping 3 internal policies until 2 pods leave "
        "the mesh (the namespace is labelled istio.io/dataplane-mode=ambient)"
    )
    # A pod that opts out no longer counts; the other one still does.
    kube.pods[0] = pod(f"{APP}-0", MEMBER, {"istio.io/dataplane-mode": "none"})
    out = run(ctx, ctx.on.update_status(), out)
    assert len(kube.policies) == 3
    assert "until 1 pod leaves" in out.unit_status.message
    kube.namespace_labels_ = {}
    out = run(ctx, ctx.on.update_status(), out)
    assert kube.policies == {}
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")


def test_a_worker_app_that_leaves_while_draining_loses_its_policies(ctx: Ctx, kube: FakeKubernetes):
    w1, w2 = worker_relation("w1"), worker_relation("w2")
    out = without_mesh(break_mesh(ctx, meshed(ctx, kube, w1, w2)))
    assert len(kube.policies) == 5
    (w2_out,) = [r for r in out.relations if r.id == w2.id]
    out = run(ctx, ctx.on.relation_broken(w2_out), out)
    assert {p["source_app_name"] for p in kube.policy_wires()} == {APP, "w1"}
    assert len(kube.policies) == 3
    assert "keeping 3 internal policies" in out.unit_status.message


def test_beacon_no_longer_ready_drains_like_a_removal(ctx: Ctx, kube: FakeKubernetes):
    out = meshed(ctx, kube, worker_relation("w1"))
    st = dataclasses.replace(
        out,
        relations=[
            *(r for r in out.relations if r.endpoint != "service-mesh"),
            dataclasses.replace(relation(out, "service-mesh"), remote_app_data={}),
        ],
    )
    out = run(ctx, ctx.on.relation_changed(relation(st, "service-mesh")), st)
    assert kube.labels == MEMBER
    assert len(kube.policies) == 3
    assert isinstance(out.unit_status, testing.WaitingStatus)  # waiting for the beacon wins


@pytest.mark.parametrize("call", ["cluster_pods", "namespace_labels"])
def test_forbidden_while_draining_keeps_policies_with_the_trust_hint(
    ctx: Ctx, kube: FakeKubernetes, call: str
):
    out = meshed(ctx, kube, worker_relation("w1"))
    kube.pods = [pod(p.name, MEMBER) for p in kube.pods]  # unlabelled: the namespace decides
    kube.fail_on[call] = ForbiddenError("403 forbidden", status=403)
    before = dict(kube.policies)
    out = break_mesh(ctx, out)
    assert kube.policies == before
    assert out.unit_status == testing.BlockedStatus(
        f"not allowed to manage its Kubernetes objects: run juju trust {APP} --scope=cluster"
    )
    assert kube.labels == MEMBER  # the pods still leave the mesh
    assert kube.calls[-1] == call  # nothing after the refusal
    del kube.fail_on[call]
    run(ctx, ctx.on.update_status(), without_mesh(out))
    assert kube.policies == {}


def test_api_error_listing_the_policies_off_the_mesh_deletes_nothing(
    ctx: Ctx, kube: FakeKubernetes
):
    out = meshed(ctx, kube, worker_relation("w1"))
    kube.pods = []
    kube.fail_on["local_policies"] = KubernetesError("Kubernetes API error 500: boom", status=500)
    out = break_mesh(ctx, out)
    assert len(kube.policies) == 3
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert "cluster_pods" not in kube.calls


def test_on_the_mesh_neither_pods_nor_namespace_are_read(ctx: Ctx, kube: FakeKubernetes):
    out = meshed(ctx, kube, worker_relation("w1"))
    kube.calls.clear()
    run(ctx, ctx.on.update_status(), out)
    assert kube.calls == ["reconcile_policies", "reconcile_labels"]


def test_off_the_mesh_without_owned_policies_only_lists_them(ctx: Ctx, kube: FakeKubernetes):
    kube.pods = [pod(f"{APP}-0", MEMBER, AMBIENT)]  # enrolled, but we own nothing to keep
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1")))
    # The first hook of the unit also looks once for what coordinated-workers left.
    assert kube.calls == [
        "adopt_legacy_labels",
        "reconcile_labels",
        "local_policies",
        "legacy_policy_names",
    ]
    kube.calls.clear()
    out = run(ctx, ctx.on.update_status(), out)
    assert kube.calls == ["reconcile_labels", "local_policies"]
    assert kube.policies == {}
    assert out.unit_status == testing.ActiveStatus("1 worker app (1 unit), mesh: none")


# --- Removal --------------------------------------------------------------------------------


def test_remove_of_the_last_unit_deletes_owned_policies(ctx: Ctx, kube: FakeKubernetes):
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    assert kube.policies
    st = testing.State(leader=True, model=MODEL, planned_units=0, containers=out.containers)
    ctx.run(ctx.on.remove(), st)
    assert kube.policies == {}
    assert kube.calls[-2:] == ["delete_policies", "delete_label_memory"]


def test_remove_when_scaling_down_deletes_nothing(ctx: Ctx, kube: FakeKubernetes):
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    calls = len(kube.calls)
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=2))
    assert kube.policies
    assert len(kube.calls) == calls


# --- nginx reloads --------------------------------------------------------------------------


def test_reload_only_when_the_config_changed(ctx: Ctx, kube: FakeKubernetes, tmp_path: Path):
    st = testing.State(
        leader=True,
        model=MODEL,
        relations=[worker_relation("w1")],
        containers=running_containers(tmp_path / "etc-nginx", "# an old configuration\n"),
    )
    out = run(ctx, ctx.on.update_status(), st)
    assert [e.command for e in ctx.exec_history["nginx"]] == [["nginx", "-s", "reload"]]
    config = (tmp_path / "etc-nginx" / "nginx.conf").read_text()
    assert "/proxy/worker/w1-0/metrics" in config
    ctx.exec_history.clear()
    run(ctx, ctx.on.update_status(), out)
    assert ctx.exec_history.get("nginx", []) == []


def test_failed_reload_is_reported_not_raised(ctx: Ctx, kube: FakeKubernetes, tmp_path: Path):
    containers = running_containers(tmp_path / "etc-nginx", "# old\n")
    nginx = containers[0]
    failing = testing.Container(
        "nginx",
        can_connect=True,
        layers=nginx.layers,
        service_statuses=nginx.service_statuses,
        mounts=nginx.mounts,
        execs={testing.Exec(["nginx", "-s", "reload"], return_code=1, stderr="emerg")},
    )
    st = testing.State(
        leader=True,
        model=MODEL,
        relations=[worker_relation("w1")],
        containers=[failing, containers[1]],
    )
    out = run(ctx, ctx.on.update_status(), st)
    failed = testing.BlockedStatus(
        "telemetry proxy: nginx reload failed, the previous configuration serves: emerg"
    )
    assert out.unit_status == failed
    # Nothing changed since, but nginx still serves the older text: tried again, still said.
    reload = ["nginx", "-s", "reload"]
    ctx.exec_history.clear()
    out = run(ctx, ctx.on.update_status(), out)
    assert [e.command for e in ctx.exec_history["nginx"]] == [reload]
    assert out.unit_status == failed
    # The cause is fixed (say, a key matching its certificate): the retry succeeds, once.
    fixed = dataclasses.replace(
        out.get_container("nginx"), execs={testing.Exec(reload, return_code=0)}
    )
    others = [c for c in out.containers if c.name != "nginx"]
    out = dataclasses.replace(out, containers=[fixed, *others])
    ctx.exec_history.clear()
    out = run(ctx, ctx.on.update_status(), out)
    assert [e.command for e in ctx.exec_history["nginx"]] == [reload]
    assert isinstance(out.unit_status, testing.ActiveStatus)
    ctx.exec_history.clear()
    run(ctx, ctx.on.update_status(), out)
    assert ctx.exec_history.get("nginx", []) == []


def test_containers_not_ready_wait(ctx: Ctx, kube: FakeKubernetes):
    out = run(ctx, ctx.on.install(), state(worker_relation("w1"), can_connect=False))
    assert out.unit_status == testing.WaitingStatus("waiting for the nginx container")
    assert published(out)["worker_labels"] == {PART_OF_LABEL: APP}


# --- The show-mesh action -------------------------------------------------------------------


def test_show_mesh_prints_wanted_and_actual(ctx: Ctx, kube: FakeKubernetes):
    out = run(ctx, ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    ctx.run(ctx.on.action("show-mesh"), out)
    results = ctx.action_results
    assert results is not None
    assert json.loads(results["labels-wanted"]) == {PART_OF_LABEL: APP, **MESH_LABELS}
    assert json.loads(results["labels-in-kubernetes"]) == kube.labels
    assert len(json.loads(results["cluster-policies-wanted"])) == 3
    assert len(json.loads(results["cluster-policies-in-kubernetes"])) == 3
    assert json.loads(results["mesh"]) == {"related": True, "ready": True, "type": "istio"}
    assert any("labels wanted" in line for line in ctx.action_logs)


def test_show_mesh_while_draining_says_why_policies_remain(ctx: Ctx, kube: FakeKubernetes):
    out = without_mesh(break_mesh(ctx, meshed(ctx, kube, worker_relation("w1"))))
    ctx.run(ctx.on.action("show-mesh"), out)
    results = ctx.action_results
    assert results is not None
    assert json.loads(results["cluster-policies-wanted"]) == []
    assert len(json.loads(results["cluster-policies-in-kubernetes"])) == 3
    assert any("still enrolled" in line for line in ctx.action_logs)


def test_show_mesh_without_trust_reports_the_error(ctx: Ctx, kube: FakeKubernetes):
    kube.fail_with = ForbiddenError("403: run juju trust", status=403)
    ctx.run(ctx.on.action("show-mesh"), state(worker_relation("w1")))
    results = ctx.action_results
    assert results is not None
    assert "juju trust" in results["kubernetes-error"]
    assert json.loads(results["labels-wanted"]) == {PART_OF_LABEL: APP}


def test_action_does_not_reconcile_or_change_status(ctx: Ctx, kube: FakeKubernetes):
    st = state(worker_relation("w1"))
    out = ctx.run(ctx.on.action("show-mesh"), st)
    assert kube.writes == []
    assert out.unit_status == st.unit_status
    assert app_data(out) == [{}]


def test_every_rendered_configuration_is_recorded_for_nginx_t(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kube: FakeKubernetes
):
    rendered: list[str] = []
    context = make_context(monkeypatch, tmp_path, kubernetes=kube, rendered=rendered)
    out = context.run(context.on.config_changed(), state(worker_relation("w1")))
    assert rendered == [nginx_config(context, out)]
    context.run(context.on.action("show-mesh"), out)
    assert len(rendered) == 2  # the action renders too (and pushes nothing)
    check_all_nginx(rendered)


# --- The cluster's DNS domain -----------------------------------------------------------------


def _charm_with_cluster_domain(domain: str) -> type[ops.CharmBase]:
    from coordinated_mesh.coordinator.coordinator import Coordinator
    from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig

    class Charm(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            self.coordinator = Coordinator(
                self,
                worker_telemetry_proxy_config=WorkerTelemetryProxyConfig(
                    http_port=8080, https_port=8080
                ),
                cluster_domain=domain,
            )

    return Charm


def test_cluster_domain_names_every_published_address(kube: FakeKubernetes, tmp_path: Path):
    meta = yaml.safe_load((ROOT / "coordinator" / "charmcraft.yaml").read_text())
    ctx = testing.Context(_charm_with_cluster_domain("k8s.example"), meta=meta, app_name=APP)
    st = dataclasses.replace(
        state(worker_relation("w1"), loki_relation(), metrics_relation()),
        containers=running_containers(tmp_path / "etc-nginx"),
    )
    out = ctx.run(ctx.on.config_changed(), st)
    data = published(out)
    urls = list(data["loki_endpoints"].values())
    assert urls
    assert all(url.startswith(f"http://{APP}.{MODEL.name}.svc.k8s.example:8080/") for url in urls)
    (metrics,) = [r for r in out.relations if r.endpoint == "metrics-endpoint"]
    address = metrics.local_unit_data["prometheus_scrape_unit_address"]
    assert address == f"{APP}-0.{APP}-endpoints.{MODEL.name}.svc.k8s.example"


def test_an_invalid_cluster_domain_is_refused_when_the_charm_is_built():
    meta = yaml.safe_load((ROOT / "coordinator" / "charmcraft.yaml").read_text())
    ctx = testing.Context(_charm_with_cluster_domain("bad domain;"), meta=meta, app_name=APP)
    with pytest.raises(testing.errors.UncaughtCharmError, match="invalid cluster domain"):
        ctx.run(ctx.on.update_status(), testing.State(model=MODEL))
