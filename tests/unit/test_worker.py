"""The worker charm under ``ops.testing``: what it publishes, the labels and URLs it applies.

Kubernetes is replaced by :class:`FakeLabels` (through the charm's ``labels_backend_factory``):
it holds the labels "on the objects" across hooks, like the real StatefulSet and Service, and
records every write.
The real Kubernetes path is tested in ``tests/envtest/test_worker_charm.py``. Every
``prometheus.yml`` the charm pushes is checked with the real ``promtool``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import stat
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import ops
import pytest
import yaml
from coordinated_mesh import Worker
from coordinated_mesh.k8s.client import ForbiddenError, KubernetesError
from coordinated_mesh.worker.log_forwarding import loki_target_name
from coordinated_mesh.worker.trust import CA_PATH
from ops import testing

from tests.support.binaries import require_binary
from tests.support.charm_loader import load_charm_module
from tests.support.pebble_logs import PebbleLogForwarding, observe_pebble_logs
from tests.support.worker import FakeLabels, worker_context

CHARM = load_charm_module("worker")
APP = "mesh-worker-k8s"
MODEL = testing.Model(name="mymodel", uuid="00000000-0000-4000-8000-000000000000")
PROXY = "http://coord.mymodel.svc.cluster.local:8080"
LOKI0 = f"{PROXY}/proxy/loki/loki-0/push"
LOKI1 = f"{PROXY}/proxy/loki/loki-1/push"
T0, T1 = loki_target_name(LOKI0), loki_target_name(LOKI1)
"""The log targets of LOKI0 and LOKI1 (named after their URL)."""
RW0 = f"{PROXY}/proxy/remote-write/prometheus-0/write"
RW1 = f"{PROXY}/proxy/remote-write/mimir-0/write"
PART_OF = {"app.kubernetes.io/part-of": "coord"}
MESH = {**PART_OF, "istio.io/dataplane-mode": "ambient"}
BASE_CONFIG = "global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\n"
TOPOLOGY_LABELS = {
    "juju_application": APP,
    "juju_charm": APP,
    "juju_model": "mymodel",
    "juju_model_uuid": MODEL.uuid,
    "juju_unit": f"{APP}/0",
}
"""What every series the unit remote-writes carries (``global.external_labels``)."""


# --- Fakes and helpers ---------------------------------------------------------------------------


@pytest.fixture
def kube() -> FakeLabels:
    return FakeLabels()


@pytest.fixture
def signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...]]]:
    """Every signal the charm sends to a Pebble service (recorded, then delivered as usual)."""
    sent: list[tuple[str, tuple[str, ...]]] = []
    original = ops.Container.send_signal

    def send_signal(self: ops.Container, sig: int | str, *names: str) -> None:
        sent.append((str(sig), names))
        original(self, sig, *names)

    monkeypatch.setattr(ops.Container, "send_signal", send_signal)
    return sent


@pytest.fixture
def ctx(kube: FakeLabels) -> testing.Context[Any]:
    return worker_context(kube)


def coordinator_data(
    *,
    labels: Mapping[str, str] | None = PART_OF,
    config: str | None = BASE_CONFIG,
    loki: Mapping[str, str] | None = None,
    remote_write: list[str] | None = None,
    workload_tracing: Mapping[str, str] | None = None,
    ca_cert: str | None = None,
) -> dict[str, str]:
    data: dict[str, Any] = {
        "ca_cert": ca_cert,
        "worker_labels": labels,
        "worker_config": config,
        "loki_endpoints": loki if loki is not None else {},
        "remote_write_endpoints": [{"url": u} for u in remote_write or []],
        "charm_tracing_receivers": {},
        "workload_tracing_receivers": workload_tracing or {},
    }
    return {key: json.dumps(value) for key, value in data.items() if value is not None}


def cluster(
    data: Mapping[str, str] | None = None, *, relation_id: int | None = None
) -> testing.Relation:
    kwargs: dict[str, Any] = {} if relation_id is None else {"id": relation_id}
    return testing.Relation(
        "cluster", remote_app_name="coord", remote_app_data=dict(data or {}), **kwargs
    )


class StateFactory(Protocol):
    def __call__(
        self,
        *relations: testing.Relation,
        leader: bool = True,
        can_connect: bool = True,
        role: str = "all",
    ) -> testing.State: ...


def _kept(tmp_path: Path, name: str) -> Path:
    """A directory of the test's that stands for one of the container's (kept across hooks)."""
    path = tmp_path / name
    path.mkdir()
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The container's ``/etc/prometheus``."""
    return _kept(tmp_path, "etc-prometheus")


@pytest.fixture
def certs_dir(tmp_path: Path) -> Path:
    """The container's ``/etc/ssl/certs``."""
    return _kept(tmp_path, "etc-ssl-certs")


@pytest.fixture
def roots_dir(tmp_path: Path) -> Path:
    """The container's ``/var/lib/coordinated-mesh``."""
    return _kept(tmp_path, "var-lib-coordinated-mesh")


@pytest.fixture
def state(config_dir: Path, certs_dir: Path, roots_dir: Path) -> StateFactory:
    """Build a state whose ``prometheus`` container keeps ``/etc/prometheus``,
    ``/etc/ssl/certs`` and ``/var/lib/coordinated-mesh`` (mounts: the container's filesystem)."""

    def make(
        *relations: testing.Relation,
        leader: bool = True,
        can_connect: bool = True,
        role: str = "all",
    ) -> testing.State:
        mounts = {
            "config": testing.Mount(location="/etc/prometheus", source=config_dir),
            "certs": testing.Mount(location="/etc/ssl/certs", source=certs_dir),
            "state": testing.Mount(location="/var/lib/coordinated-mesh", source=roots_dir),
        }
        container = testing.Container("prometheus", can_connect=can_connect, mounts=mounts)
        return testing.State(
            leader=leader,
            model=MODEL,
            config={"role": role},
            relations=list(relations),
            containers=[container],
        )

    return make


def with_relation_data(
    out: testing.State, relation: testing.Relation, data: Mapping[str, str]
) -> testing.State:
    """``out`` with the coordinator's data on ``relation`` replaced (the next hook's input)."""
    current = out.get_relation(relation.id)
    return dataclasses.replace(
        out,
        relations=[
            dataclasses.replace(current, remote_app_data=dict(data)) if r.id == relation.id else r
            for r in out.relations
        ],
    )


def coordinator_changes(
    ctx: testing.Context[Any],
    out: testing.State,
    relation: testing.Relation,
    data: Mapping[str, str],
) -> testing.State:
    """Run ``cluster-relation-changed`` after the coordinator wrote ``data``."""
    changed = with_relation_data(out, relation, data)
    return ctx.run(ctx.on.relation_changed(changed.get_relation(relation.id)), changed)


def without_relations(out: testing.State) -> testing.State:
    return dataclasses.replace(out, relations=[])


def prometheus_yml(config_dir: Path) -> dict[str, Any]:
    """The pushed ``prometheus.yml``, checked by the real ``promtool``; parsed."""
    text = (config_dir / "prometheus.yml").read_text()
    check_with_promtool(text, config_dir.parent)
    return yaml.safe_load(text)


def check_with_promtool(text: str, where: Path) -> None:
    promtool = require_binary("promtool")
    config = where / "promtool-check.yml"
    config.write_text(text)
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def log_targets(out: testing.State) -> dict[str, tuple[str, list[str]]]:
    plan = out.get_container("prometheus").plan
    return {name: (t.location, list(t.services)) for name, t in plan.log_targets.items()}


def status(out: testing.State) -> tuple[str, str]:
    return out.unit_status.name, out.unit_status.message


def run(ctx: testing.Context[Any], st: testing.State, event: Any = None) -> testing.State:
    return ctx.run(event if event is not None else ctx.on.update_status(), st)


# --- Joining the cluster: what the worker publishes ---------------------------------------------


def test_every_unit_publishes_topology_address_and_metrics(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    relation = cluster(coordinator_data())
    out = run(ctx, state(relation, leader=False))
    unit_data = out.get_relation(relation.id).local_unit_data
    assert json.loads(unit_data["juju_topology"]) == {
        "application": APP,
        "charm_name": APP,
        "unit": f"{APP}/0",
    }
    assert json.loads(unit_data["address"]) == (
        f"{APP}-0.{APP}-endpoints.mymodel.svc.cluster.local"
    )
    assert json.loads(unit_data["metrics_endpoint"]) == {"port": 9090, "path": "/metrics"}
    assert out.get_relation(relation.id).local_app_data == {}  # not the leader
    assert kube.reads == 0 and kube.writes == []  # non-leaders never touch Kubernetes


def test_the_steady_state_reads_only_the_coordinators_databag(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory, bags_read: list[str]
):
    """What the worker wrote is remembered across hooks: only the coordinator's data is read."""
    relation = cluster(coordinator_data())
    out = run(ctx, state(relation))
    bags_read.clear()
    again = run(ctx, out)
    assert bags_read == ["coord"]
    assert again.get_relation(relation.id).local_app_data == (
        out.get_relation(relation.id).local_app_data
    )


def test_leader_publishes_the_role_from_config(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    relation = cluster(coordinator_data())
    out = run(ctx, state(relation, role="querier"))
    assert out.get_relation(relation.id).local_app_data == {
        "role": '"querier"',
        "charm_name": '"mesh-worker-k8s"',
        "metrics_endpoint": '{"path": "/metrics", "port": 9090}',
    }
    assert status(out) == ("active", "coordinator: coord, role: querier")


def test_invalid_role_is_blocked_and_not_published(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    relation = cluster(coordinator_data())
    out = run(ctx, state(relation, role="Not A Role"))
    app_data = out.get_relation(relation.id).local_app_data
    assert "role" not in app_data
    assert json.loads(app_data["charm_name"]) == "mesh-worker-k8s"  # the rest is still published
    assert out.unit_status.name == "blocked"
    assert "invalid role config: 'Not A Role'" in out.unit_status.message


def test_databags_are_written_only_when_they_change(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    monkeypatch: pytest.MonkeyPatch,
    state: StateFactory,
):
    relation = cluster(coordinator_data())
    out = run(ctx, state(relation))
    written: list[str] = []
    original = ops.RelationDataContent.__setitem__

    def setitem(self: ops.RelationDataContent, key: str, value: str) -> None:
        written.append(key)
        original(self, key, value)

    monkeypatch.setattr(ops.RelationDataContent, "__setitem__", setitem)
    run(ctx, out)
    assert written == []
    run(ctx, dataclasses.replace(out, config={"role": "ingester"}))
    assert written == ["role"]


# --- Statuses ------------------------------------------------------------------------------------


def test_no_coordinator_is_blocked_with_the_command(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    out = run(ctx, state())
    assert status(out) == (
        "blocked",
        f"relate to a coordinator: juju integrate {APP}:cluster <coordinator>:cluster",
    )
    assert out.app_status == out.unit_status
    # Nothing was ever applied: no write; one read, after the unit's one look for the label
    # memory coordinated-workers may have left.
    assert kube.writes == [] and kube.reads == 2
    run(ctx, out)
    assert kube.writes == [] and kube.reads == 3  # later hooks: the one read only


def test_waiting_for_the_coordinators_data(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    out = run(ctx, state(cluster()))
    assert status(out) == (
        "waiting",
        "waiting for coord on relation cluster: no data published yet",
    )


def test_invalid_coordinator_data_is_waiting_with_the_reason(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    data = {**coordinator_data(), "worker_labels": json.dumps({"bad key!": "x"})}
    out = run(ctx, state(cluster(data)))
    assert out.unit_status.name == "waiting"
    assert out.unit_status.message.startswith(
        "waiting for coord on relation cluster: invalid data:"
    )
    assert "bad key!" in out.unit_status.message


def test_untrusted_leader_is_blocked_naming_juju_trust(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory, config_dir: Path
):
    kube.error = ForbiddenError("403", status=403)
    out = run(ctx, state(cluster(coordinator_data(loki={"loki/0": LOKI0}))))
    assert status(out) == (
        "blocked",
        f"not allowed to label its pods: run juju trust {APP} --scope=cluster",
    )
    # The rest keeps working: the workload is configured and logs are forwarded.
    assert log_targets(out) == {T0: (LOKI0, ["all"])}
    assert prometheus_yml(config_dir)["scrape_configs"][0]["job_name"] == "prometheus"


def test_kubernetes_api_error_is_waiting(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    kube.error = KubernetesError("Kubernetes API error 500: etcd is sad", status=500)
    out = run(ctx, state(cluster(coordinator_data())))
    assert status(out) == (
        "waiting",
        "Kubernetes API error, retrying on the next hook: Kubernetes API error 500: etcd is sad",
    )


def test_a_refreshed_worker_takes_over_the_labels_coordinated_workers_applied(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    kube.labels = {}
    kube.legacy_labels = dict(MESH)  # applied by the old worker, remembered in <app>-pod-labels
    part_of = {"app.kubernetes.io/part-of": "coord"}
    out = run(ctx, state(cluster(coordinator_data(labels=part_of))))
    assert kube.legacy_labels is None
    assert kube.labels == part_of  # the mesh labels it no longer gets are removed, not orphaned
    reads = kube.reads
    run(ctx, out)
    assert kube.reads == reads + 1  # later hooks do not look again


def test_a_refused_take_over_blocks_and_is_retried(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    kube.legacy_labels = dict(MESH)
    kube.error = ForbiddenError("403", status=403)
    out = run(ctx, state(cluster(coordinator_data(labels=MESH))))
    assert status(out)[0] == "blocked"
    assert kube.reads == 1  # one 403 is enough
    kube.error = None
    run(ctx, out)
    assert kube.legacy_labels is None and kube.labels == MESH


def test_untrusted_non_leader_does_not_notice(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    kube.error = ForbiddenError("403", status=403)
    out = run(ctx, state(cluster(coordinator_data()), leader=False))
    assert status(out) == ("active", "coordinator: coord, role: all")


def test_container_not_ready_is_waiting_and_the_rest_is_done(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    relation = cluster(coordinator_data(labels=MESH))
    out = run(ctx, state(relation, can_connect=False))
    assert status(out) == ("waiting", "waiting for the prometheus container")
    assert kube.labels == MESH
    assert "address" in out.get_relation(relation.id).local_unit_data


def test_invalid_url_is_dropped_and_named(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    loki = {"loki/0": "http://evil host/push", "loki/1": LOKI1}
    out = run(ctx, state(cluster(coordinator_data(loki=loki))))
    assert out.unit_status.name == "waiting"
    assert out.unit_status.message.startswith(
        "ignoring invalid data on relation cluster: loki_endpoints['loki/0']"
    )
    assert log_targets(out) == {T1: (LOKI1, ["all"])}


def test_pebble_failure_is_waiting_not_an_error(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    monkeypatch: pytest.MonkeyPatch,
    state: StateFactory,
):
    def replan(self: ops.Container) -> None:
        raise ops.pebble.APIError({}, 500, "Internal Server Error", "prometheus exited quickly")

    monkeypatch.setattr(ops.Container, "replan", replan)
    out = run(ctx, state(cluster(coordinator_data())))
    assert out.unit_status.name == "waiting"
    assert out.unit_status.message.startswith(
        "prometheus not configured, retrying on the next hook"
    )
    assert kube.labels == PART_OF  # the labels did not depend on the workload


# --- Labels (leader) ------------------------------------------------------------------------------


def test_leader_applies_the_coordinators_labels_once(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    out = run(ctx, state(cluster(coordinator_data())))
    assert kube.labels == PART_OF
    run(ctx, out)
    run(ctx, out, ctx.on.config_changed())
    assert kube.writes == [PART_OF]


def test_mesh_labels_are_followed_when_added_and_removed(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    relation = cluster(coordinator_data(labels=PART_OF))
    out = run(ctx, state(relation))
    out = coordinator_changes(ctx, out, relation, coordinator_data(labels=MESH))
    assert kube.labels == MESH
    coordinator_changes(ctx, out, relation, coordinator_data(labels=PART_OF))
    assert kube.labels == PART_OF
    assert kube.writes == [PART_OF, MESH, PART_OF]


def test_missing_or_invalid_data_keeps_the_last_labels(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    relation = cluster(coordinator_data(labels=MESH))
    out = run(ctx, state(relation))
    for data in (
        {},  # the coordinator's leader changed and has not written yet
        {"worker_labels": "{not json"},
        {"worker_labels": json.dumps({"app.kubernetes.io/part-of": "x\n"})},
        coordinator_data(labels=None),  # the coordinator has not decided the labels
    ):
        coordinator_changes(ctx, out, relation, data)
        assert kube.labels == MESH
    assert kube.writes == [MESH]


def test_labels_reset_by_juju_are_reapplied_even_while_data_is_invalid(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    relation = cluster(coordinator_data(labels=MESH))
    out = run(ctx, state(relation))
    invalid = with_relation_data(out, relation, {"worker_labels": "{not json"})
    kube.labels = {}  # the StatefulSet was rewritten (Juju upgrade)...
    kube.managed_labels = lambda: dict(MESH)  # ...but the memory of what we applied is intact
    run(ctx, invalid, ctx.on.upgrade_charm())
    assert kube.labels == MESH


def test_broken_relation_removes_the_managed_labels(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    relation = cluster(coordinator_data(labels=MESH))
    out = run(ctx, state(relation))
    out = run(ctx, out, ctx.on.relation_broken(out.get_relation(relation.id)))
    assert kube.labels == {}
    assert out.unit_status.name == "blocked"
    run(ctx, without_relations(out))  # later hooks: nothing left to remove, no write
    assert kube.writes == [MESH, {}]


def test_non_leader_never_touches_labels(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    relation = cluster(coordinator_data(labels=MESH))
    out = run(ctx, state(relation, leader=False))
    run(ctx, out, ctx.on.relation_broken(out.get_relation(relation.id)))
    assert kube.reads == 0


# --- Telemetry URLs: log forwarding and prometheus.yml ---------------------------------------------


def test_urls_configure_log_forwarding_and_prometheus(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory, config_dir: Path
):
    out = run(ctx, state(cluster(coordinator_data(loki={"loki/0": LOKI0}, remote_write=[RW0]))))
    assert log_targets(out) == {T0: (LOKI0, ["all"])}
    target = out.get_container("prometheus").plan.log_targets[T0]
    assert target.type == "loki"
    assert target.labels == {
        "charm": APP,
        "juju_application": APP,
        "juju_model": "mymodel",
        "juju_model_uuid": MODEL.uuid,
        "juju_unit": f"{APP}/0",
        "product": "Juju",
    }
    config = prometheus_yml(config_dir)
    assert config["global"] == {
        "scrape_interval": "1m",
        "evaluation_interval": "1m",
        "external_labels": TOPOLOGY_LABELS,
    }
    assert config["remote_write"] == [{"url": RW0}]
    assert config["scrape_configs"] == [
        {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]}
    ]
    service = out.get_container("prometheus").plan.services["prometheus"]
    assert service.command.startswith(
        "/bin/prometheus --config.file=/etc/prometheus/prometheus.yml"
    )
    assert (
        out.get_container("prometheus").service_statuses["prometheus"]
        == ops.pebble.ServiceStatus.ACTIVE
    )


def test_changed_urls_are_followed_and_prometheus_reloaded(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    signals: list[tuple[str, tuple[str, ...]]],
    state: StateFactory,
    config_dir: Path,
):
    relation = cluster(coordinator_data(loki={"loki/0": LOKI0}, remote_write=[RW0]))
    out = run(ctx, state(relation))
    assert signals == []  # first start: the service was started with its configuration
    changed = coordinator_data(loki={"loki/1": LOKI1}, remote_write=[RW0, RW1])
    out = coordinator_changes(ctx, out, relation, changed)
    assert log_targets(out) == {T0: (LOKI0, ["-all"]), T1: (LOKI1, ["all"])}
    assert prometheus_yml(config_dir)["remote_write"] == [{"url": RW1}, {"url": RW0}]
    assert signals == [("SIGHUP", ("prometheus",))]


def test_nothing_changes_nothing_is_rewritten_or_reloaded(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    signals: list[tuple[str, tuple[str, ...]]],
    state: StateFactory,
):
    out = run(ctx, state(cluster(coordinator_data(loki={"loki/0": LOKI0}, remote_write=[RW0]))))
    layers = out.get_container("prometheus").layers
    again = run(ctx, out)
    assert again.get_container("prometheus").layers == layers
    assert signals == []


@pytest.fixture
def pebble_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[PebbleLogForwarding]:
    """Where the workload's lines really go, as real Pebble forwards them."""
    with observe_pebble_logs(monkeypatch) as model:
        yield model


def really_sent_to(out: testing.State, pebble_logs: PebbleLogForwarding) -> dict[str, str]:
    plan = out.get_container("prometheus").plan
    return pebble_logs.destinations(plan.log_targets, "prometheus")


LOKI0_TLS = "https://coord.mymodel.svc.cluster.local:8443/proxy/loki/loki-0/push"


def test_a_changed_loki_url_moves_the_logs_under_a_new_target(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    state: StateFactory,
    pebble_logs: PebbleLogForwarding,
):
    """Same Loki unit, new URL (TLS arrived): real Pebble would keep pushing to a renamed-in-place
    target's first location, so the target gets a new name and the old one is stopped."""
    relation = cluster(coordinator_data(loki={"loki/0": LOKI0}))
    out = run(ctx, state(relation))
    assert really_sent_to(out, pebble_logs) == {T0: LOKI0}
    layers = pebble_logs.layers_added
    out = coordinator_changes(ctx, out, relation, coordinator_data(loki={"loki/0": LOKI0_TLS}))
    t0_tls = loki_target_name(LOKI0_TLS)
    assert really_sent_to(out, pebble_logs) == {t0_tls: LOKI0_TLS}
    assert log_targets(out) == {T0: (LOKI0, ["-all"]), t0_tls: (LOKI0_TLS, ["all"])}
    assert pebble_logs.layers_added == layers + 1  # one layer: the log targets that changed


def test_unchanged_inputs_add_no_layer(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    state: StateFactory,
    pebble_logs: PebbleLogForwarding,
):
    """Every layer added makes Pebble re-send its buffered lines: none when nothing changed."""
    relation = cluster(coordinator_data(loki={"loki/0": LOKI0, "loki/1": LOKI1}))
    out = run(ctx, state(relation))
    layers = pebble_logs.layers_added
    assert layers == 2  # the log targets and the prometheus service
    out = run(ctx, out)
    out = run(ctx, out, ctx.on.relation_changed(out.get_relation(relation.id)))
    out = run(ctx, out, ctx.on.config_changed())
    assert pebble_logs.layers_added == layers
    assert really_sent_to(out, pebble_logs) == {T0: LOKI0, T1: LOKI1}


def test_targets_named_after_loki_units_are_replaced_on_upgrade(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    state: StateFactory,
    pebble_logs: PebbleLogForwarding,
):
    """An earlier version named targets ``loki/0``: stopped, and forwarding goes on under the new
    name (after a restart of the container, its forwarder is the plan's)."""
    st = state(cluster(coordinator_data(loki={"loki/0": LOKI0})))
    legacy = ops.pebble.Layer(
        {
            "log-targets": {
                "loki/0": {
                    "override": "replace",
                    "type": "loki",
                    "location": LOKI0,
                    "services": ["all"],
                }
            }
        }
    )
    container = dataclasses.replace(st.get_container("prometheus"), layers={"old": legacy})
    st = dataclasses.replace(st, containers=[container])
    pebble_logs.restarted(container.plan.log_targets)
    out = run(ctx, st)
    assert log_targets(out) == {"loki/0": (LOKI0, ["-all"]), T0: (LOKI0, ["all"])}
    assert really_sent_to(out, pebble_logs) == {T0: LOKI0}


def test_removed_urls_stop_forwarding_and_remote_write(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    signals: list[tuple[str, tuple[str, ...]]],
    state: StateFactory,
    config_dir: Path,
):
    relation = cluster(
        coordinator_data(loki={"loki/0": LOKI0, "loki/1": LOKI1}, remote_write=[RW0])
    )
    out = run(ctx, state(relation))
    out = coordinator_changes(ctx, out, relation, coordinator_data())
    assert log_targets(out) == {T0: (LOKI0, ["-all"]), T1: (LOKI1, ["-all"])}
    assert "remote_write" not in prometheus_yml(config_dir)
    assert signals == [("SIGHUP", ("prometheus",))]


def test_coordinator_removed_stops_forwarding(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory, config_dir: Path
):
    relation = cluster(coordinator_data(loki={"loki/0": LOKI0}, remote_write=[RW0]))
    out = run(ctx, state(relation))
    out = run(ctx, out, ctx.on.relation_broken(out.get_relation(relation.id)))
    assert log_targets(out) == {T0: (LOKI0, ["-all"])}
    config = prometheus_yml(config_dir)
    assert "remote_write" not in config
    assert config["global"] == {"external_labels": TOPOLOGY_LABELS}  # the base is gone


def test_invalid_data_keeps_the_workload_as_it_was(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    signals: list[tuple[str, tuple[str, ...]]],
    state: StateFactory,
    config_dir: Path,
):
    relation = cluster(coordinator_data(loki={"loki/0": LOKI0}, remote_write=[RW0]))
    out = run(ctx, state(relation))
    before = prometheus_yml(config_dir)
    out = coordinator_changes(ctx, out, relation, {"loki_endpoints": "[1, 2"})
    assert log_targets(out) == {T0: (LOKI0, ["all"])}
    assert prometheus_yml(config_dir) == before
    assert signals == []


def test_workload_tracing_over_grpc(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory, config_dir: Path
):
    tracing = {
        "otlp_grpc": "coord.mymodel.svc.cluster.local:4317",
        "otlp_http": f"{PROXY}/proxy/workload-tracing/otlp_http",
    }
    out = run(ctx, state(cluster(coordinator_data(workload_tracing=tracing))))
    assert prometheus_yml(config_dir)["tracing"] == {
        "client_type": "grpc",
        "endpoint": "coord.mymodel.svc.cluster.local:4317",
        "insecure": True,
        "sampling_fraction": 1.0,
    }
    assert status(out) == ("active", "coordinator: coord, role: all")


def test_proxied_otlp_http_is_reported_not_misconfigured(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory, config_dir: Path
):
    tracing = {"otlp_http": f"{PROXY}/proxy/workload-tracing/otlp_http"}
    out = run(ctx, state(cluster(coordinator_data(workload_tracing=tracing))))
    assert "tracing" not in prometheus_yml(config_dir)
    assert out.unit_status == ops.ActiveStatus(
        "coordinator: coord, role: all; "
        "no workload traces: Prometheus 2 needs otlp_grpc (OTLP/HTTP has a path)"
    )


def test_service_restarted_when_it_is_not_running(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory
):
    out = run(ctx, state(cluster(coordinator_data())))
    container = out.get_container("prometheus")
    stopped = dataclasses.replace(
        container, service_statuses={"prometheus": ops.pebble.ServiceStatus.ERROR}
    )
    out = run(ctx, dataclasses.replace(out, containers=[stopped]), ctx.on.pebble_ready(stopped))
    assert (
        out.get_container("prometheus").service_statuses["prometheus"]
        == ops.pebble.ServiceStatus.ACTIVE
    )


# --- The library on its own ----------------------------------------------------------------------


def test_missing_kubernetes_credentials_are_an_api_error_status(
    state: StateFactory, no_kubeconfig: None
):
    real = worker_context(None)  # the real backend: lightkube finds no configuration
    out = run(real, state(cluster(coordinator_data())))
    assert isinstance(out.unit_status, ops.WaitingStatus)
    assert out.unit_status.message.startswith(
        "Kubernetes API error, retrying on the next hook: no Kubernetes client: ConfigError"
    )


MINIMAL_META: dict[str, Any] = {
    "name": "minimal-worker",
    "containers": {"workload": {}},
    "requires": {"my-cluster": {"interface": "mesh_cluster", "limit": 1}},
}


def minimal_charm(fake: FakeLabels, **worker_args: Any) -> type[ops.CharmBase]:
    class MinimalWorker(ops.CharmBase):
        def __init__(self, framework: ops.Framework):
            super().__init__(framework)
            args: dict[str, Any] = {
                "container_name": "workload",
                "metrics_port": 8080,
                "cluster_endpoint": "my-cluster",
                "labels_backend_factory": lambda **_: fake,
                **worker_args,
            }
            self.worker = Worker(self, **args)

    return MinimalWorker


def test_library_without_a_workload_callback():
    fake = FakeLabels()
    ctx = testing.Context(
        minimal_charm(fake, metrics_path="/custom/metrics", cluster_domain="k8s.example"),
        meta=MINIMAL_META,
    )
    relation = testing.Relation(
        "my-cluster",
        remote_app_name="coord",
        remote_app_data=coordinator_data(labels=MESH, loki={"loki/0": LOKI0}),
    )
    out = ctx.run(
        ctx.on.start(),
        testing.State(
            leader=True,
            model=MODEL,
            relations=[relation],
            containers=[testing.Container("workload", can_connect=True)],
        ),
    )
    assert fake.labels == MESH
    plan = out.get_container("workload").plan
    assert {n: t.location for n, t in plan.log_targets.items()} == {T0: LOKI0}
    unit_data = out.get_relation(relation.id).local_unit_data
    assert json.loads(unit_data["address"]) == (
        "minimal-worker-0.minimal-worker-endpoints.mymodel.svc.k8s.example"
    )
    assert json.loads(unit_data["metrics_endpoint"]) == {"port": 8080, "path": "/custom/metrics"}
    assert out.unit_status == ops.ActiveStatus("coordinator: coord, role: all")
    assert out.get_relation(relation.id).local_app_data == {
        "role": '"all"',
        "charm_name": '"minimal-worker"',
        "metrics_endpoint": '{"path": "/custom/metrics", "port": 8080}',
    }


@pytest.mark.parametrize(
    "args",
    [{"metrics_port": 0}, {"metrics_path": "no-slash"}, {"cluster_domain": "bad domain"}],
)
def test_invalid_worker_arguments_fail_early(args: dict[str, Any]):
    ctx = testing.Context(minimal_charm(FakeLabels(), **args), meta=MINIMAL_META)
    with pytest.raises(testing.errors.UncaughtCharmError, match="ValueError"):
        ctx.run(ctx.on.start(), testing.State())


# --- TLS: the proxy's CA ------------------------------------------------------------------------

TLS_PROXY = "https://coord.mymodel.svc.cluster.local:8443"
LOKI0_TLS_URL = f"{TLS_PROXY}/proxy/loki/loki-0/push"
RW0_TLS = f"{TLS_PROXY}/proxy/remote-write/prometheus-0/write"
GRPC = "coord.mymodel.svc.cluster.local:4317"


def fake_ca(seed: str) -> str:
    """A CA in the canonical PEM form ``parse_pem_certificates`` gives: the worker checks the
    form only (the workload parses the DER; ``tests/real`` uses real ones made by openssl)."""
    body = base64.b64encode(hashlib.sha512(seed.encode()).digest() * 4).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----"]) + "\n"


CA_A, CA_B = fake_ca("a"), fake_ca("b")
T0_TLS = loki_target_name(LOKI0_TLS_URL)


def tls_data(ca: str | None = CA_A, **kwargs: Any) -> dict[str, str]:
    """The coordinator's data while its proxy serves TLS signed by ``ca``."""
    return coordinator_data(
        loki={"loki/0": LOKI0_TLS_URL},
        remote_write=[RW0_TLS],
        workload_tracing={"otlp_grpc": GRPC},
        ca_cert=ca,
        **kwargs,
    )


@pytest.fixture
def file_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """Every push and removal in a container, in order: (``push``/``remove``, path, kwargs)."""
    done: list[tuple[str, str, dict[str, Any]]] = []
    push, remove_path = ops.Container.push, ops.Container.remove_path

    def recording_push(self: ops.Container, path: Any, source: Any, **kwargs: Any) -> None:
        done.append(("push", str(path), kwargs))
        push(self, path, source, **kwargs)

    def recording_remove(self: ops.Container, path: Any, **kwargs: Any) -> None:
        done.append(("remove", str(path), kwargs))
        remove_path(self, path, **kwargs)

    monkeypatch.setattr(ops.Container, "push", recording_push)
    monkeypatch.setattr(ops.Container, "remove_path", recording_remove)
    return done


def ca_file(certs_dir: Path) -> Path:
    return certs_dir / PurePosixPath(CA_PATH).name


def test_tls_writes_the_ca_and_every_client_verifies_against_it(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    state: StateFactory,
    config_dir: Path,
    certs_dir: Path,
    file_writes: list[tuple[str, str, dict[str, Any]]],
    pebble_logs: PebbleLogForwarding,
):
    out = run(ctx, state(cluster(tls_data())))
    assert ca_file(certs_dir).read_text() == CA_A
    assert stat.S_IMODE(ca_file(certs_dir).stat().st_mode) == 0o644
    ca_pushes = [kw for op, path, kw in file_writes if op == "push" and path == CA_PATH]
    assert ca_pushes == [{"make_dirs": True, "permissions": 0o644}]
    # The CA is in place before the first https target: Pebble's roots (loaded once) hold it.
    assert really_sent_to(out, pebble_logs) == {T0_TLS: LOKI0_TLS_URL}
    assert pebble_logs.verifies(LOKI0_TLS_URL, CA_A)
    config = prometheus_yml(config_dir)
    assert config["remote_write"] == [{"url": RW0_TLS, "tls_config": {"ca_file": CA_PATH}}]
    assert config["tracing"] == {
        "client_type": "grpc",
        "endpoint": GRPC,
        "insecure": False,
        "sampling_fraction": 1.0,
        "tls_config": {"ca_file": CA_PATH},
    }
    assert status(out) == ("active", "coordinator: coord, role: all")


def test_switching_to_tls_moves_the_logs_in_one_hook(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    signals: list[tuple[str, tuple[str, ...]]],
    state: StateFactory,
    config_dir: Path,
    pebble_logs: PebbleLogForwarding,
):
    """Plain HTTP, then TLS arrives: one layer starts the https target and stops the http one;
    Pebble's buffered lines go to the new target (every layer re-sends), none is dropped by a
    failed verification, and Prometheus reloads once."""
    relation = cluster(
        coordinator_data(loki={"loki/0": LOKI0}, remote_write=[RW0], workload_tracing={})
    )
    out = run(ctx, state(relation))
    layers = pebble_logs.layers_added
    out = coordinator_changes(ctx, out, relation, tls_data())
    assert pebble_logs.layers_added == layers + 1
    assert log_targets(out) == {T0: (LOKI0, ["-all"]), T0_TLS: (LOKI0_TLS_URL, ["all"])}
    assert really_sent_to(out, pebble_logs) == {T0_TLS: LOKI0_TLS_URL}
    assert pebble_logs.verifies(LOKI0_TLS_URL, CA_A)
    assert prometheus_yml(config_dir)["remote_write"][0]["tls_config"] == {"ca_file": CA_PATH}
    assert signals == [("SIGHUP", ("prometheus",))]
    assert status(out) == ("active", "coordinator: coord, role: all")


def test_the_ca_is_written_only_when_it_changes(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    state: StateFactory,
    certs_dir: Path,
    file_writes: list[tuple[str, str, dict[str, Any]]],
):
    relation = cluster(tls_data())
    out = run(ctx, state(relation))
    out = run(ctx, out)
    out = run(ctx, out, ctx.on.relation_changed(out.get_relation(relation.id)))
    assert [path for _, path, _ in file_writes if path == CA_PATH] == [CA_PATH]
    coordinator_changes(ctx, out, relation, tls_data(CA_B))
    assert [path for _, path, _ in file_writes if path == CA_PATH] == [CA_PATH, CA_PATH]
    assert ca_file(certs_dir).read_text() == CA_B


def test_tls_going_away_removes_the_ca_after_the_workload_stopped_naming_it(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    state: StateFactory,
    config_dir: Path,
    certs_dir: Path,
    file_writes: list[tuple[str, str, dict[str, Any]]],
    pebble_logs: PebbleLogForwarding,
):
    relation = cluster(tls_data())
    out = run(ctx, state(relation))
    file_writes.clear()
    plain = coordinator_data(
        loki={"loki/0": LOKI0}, remote_write=[RW0], workload_tracing={"otlp_grpc": GRPC}
    )
    out = coordinator_changes(ctx, out, relation, plain)
    assert not ca_file(certs_dir).exists()
    assert [(op, path) for op, path, _ in file_writes] == [
        ("push", "/etc/prometheus/prometheus.yml"),
        ("remove", CA_PATH),
    ]
    config = prometheus_yml(config_dir)
    assert config["remote_write"] == [{"url": RW0}]
    assert config["tracing"]["insecure"] is True and "tls_config" not in config["tracing"]
    assert really_sent_to(out, pebble_logs) == {T0: LOKI0}
    assert status(out) == ("active", "coordinator: coord, role: all")


def test_leaving_the_cluster_removes_the_ca(
    ctx: testing.Context[Any], kube: FakeLabels, state: StateFactory, certs_dir: Path
):
    relation = cluster(tls_data())
    out = run(ctx, state(relation))
    run(ctx, out, ctx.on.relation_broken(out.get_relation(relation.id)))
    assert not ca_file(certs_dir).exists()


def test_an_invalid_ca_is_not_trusted_and_is_named(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    state: StateFactory,
    config_dir: Path,
    certs_dir: Path,
):
    out = run(ctx, state(cluster(tls_data("-----BEGIN CERTIFICATE-----\n!!\n"))))
    assert not ca_file(certs_dir).exists()
    assert out.unit_status.name == "waiting"
    assert "ignoring invalid data on relation cluster: ca_cert" in out.unit_status.message
    # The https URL stays, verified against the system roots only: it fails, it is not trusted.
    assert prometheus_yml(config_dir)["remote_write"] == [{"url": RW0_TLS}]


def restart_container(
    out: testing.State, pebble_logs: PebbleLogForwarding, *dirs: Path
) -> testing.State:
    """The container restarts: its filesystem is the image's, its plan has no layer added."""
    for directory in dirs:
        for path in directory.iterdir():
            path.unlink()
    container = dataclasses.replace(out.get_container("prometheus"), layers={})
    pebble_logs.restarted(container.plan.log_targets)
    return dataclasses.replace(out, containers=[container])


RESTART_NOTE = (
    "no logs: restart prometheus for Pebble to trust the proxy's CA "
    f"(kubectl delete pod {APP}-0 -n mymodel)"
)


def test_a_new_ca_names_the_restart_pebble_needs_until_it_happened(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    signals: list[tuple[str, tuple[str, ...]]],
    state: StateFactory,
    config_dir: Path,
    certs_dir: Path,
    roots_dir: Path,
    pebble_logs: PebbleLogForwarding,
):
    """Pebble loaded its roots with CA A: CA B is in the file but not in Pebble's roots (Go reads
    them once); Prometheus reloads (its tracer reads the file on reload)."""
    relation = cluster(tls_data())
    out = run(ctx, state(relation))
    out = coordinator_changes(ctx, out, relation, tls_data(CA_B))
    assert ca_file(certs_dir).read_text() == CA_B
    assert not pebble_logs.verifies(LOKI0_TLS_URL, CA_B)  # the model agrees: logs are refused
    assert out.unit_status == ops.ActiveStatus(f"coordinator: coord, role: all; {RESTART_NOTE}")
    assert signals == [("SIGHUP", ("prometheus",))]
    assert "tls_config" in prometheus_yml(config_dir)["tracing"]
    out = run(ctx, out)
    assert out.unit_status.message.endswith(RESTART_NOTE)  # until the restart

    out = run(ctx, restart_container(out, pebble_logs, certs_dir, roots_dir))
    assert pebble_logs.verifies(LOKI0_TLS_URL, CA_B)
    assert status(out) == ("active", "coordinator: coord, role: all")


def test_back_to_the_ca_pebble_trusts_needs_no_restart(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    state: StateFactory,
    pebble_logs: PebbleLogForwarding,
):
    relation = cluster(tls_data())
    out = run(ctx, state(relation))
    out = coordinator_changes(ctx, out, relation, coordinator_data(loki={"loki/0": LOKI0}))
    out = coordinator_changes(ctx, out, relation, tls_data())
    assert pebble_logs.verifies(LOKI0_TLS_URL, CA_A)
    assert status(out) == ("active", "coordinator: coord, role: all")


def test_pebble_already_using_tls_when_the_ca_arrives_needs_a_restart(
    ctx: testing.Context[Any],
    kube: FakeLabels,
    state: StateFactory,
    certs_dir: Path,
    pebble_logs: PebbleLogForwarding,
):
    """A target of the charm's own already pushes over https: Pebble loaded its roots without
    the proxy's CA."""
    own = ops.pebble.Layer(
        {
            "log-targets": {
                "audit": {
                    "override": "replace",
                    "type": "loki",
                    "location": "https://audit.example.com/loki/api/v1/push",
                    "services": ["all"],
                }
            }
        }
    )
    st = state(cluster(tls_data()))
    container = dataclasses.replace(st.get_container("prometheus"), layers={"own": own})
    pebble_logs.restarted(container.plan.log_targets)  # roots: the image's (none here)
    out = run(ctx, dataclasses.replace(st, containers=[container]))
    assert ca_file(certs_dir).read_text() == CA_A
    assert not pebble_logs.verifies(LOKI0_TLS_URL, CA_A)
    assert out.unit_status.message.endswith(RESTART_NOTE)
