"""A coordinated-worker cluster on an Istio ambient mesh, end to end, on a real Juju + Kubernetes.

One model holds the cluster (``coordinator`` and two worker applications with different roles),
``istio-beacon-k8s``, ``prometheus-k8s``, ``loki-k8s``, ``grafana-k8s`` and ``outsider`` (a worker
that belongs to no cluster: the "application outside the cluster", off the mesh). istio-k8s runs in
a model of its own. Charmhub channels come from ``tools/charm_sources.py``. The tests run in order
and share the deployment:

1. deploy; relate the cluster and its telemetry; check the cluster label, telemetry without mesh;
2. relate the coordinator to the beacon (and put Prometheus and Grafana on the mesh): pods and
   Services get the mesh labels, the coordinator creates the cluster-internal AuthorizationPolicies,
   the beacon creates the external ones;
3. with istio-k8s ``hardened-mode``: traffic inside the cluster is allowed; the off-mesh outsider is
   cut at L4 (ztunnel); mesh-enrolled Prometheus and Grafana get through the coordinator Service's
   waypoint exactly on the methods and paths our policies allow and get its HTTP 403 on the others
   (L7); Prometheus scrapes workers only through the coordinator's proxy, logs reach Loki through
   it;
4. transitions: scale a worker up and down, remove a worker application, remove and re-add the
   mesh relation; policies, labels and telemetry follow.

Expectations are read from what the charms publish (the beacon's labels, the coordinator's
policies and scrape jobs, the workers' addresses) and compared with what Kubernetes holds and
what the network lets through.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import charm_sources
import jubilant
import pytest
from charm_sources import oci_resources
from coordinated_mesh.relations.cluster import CoordinatorAppData
from it_juju import (
    beacon_labels,
    direct_metrics_url,
    eventually,
    expect_answered,
    expect_denied,
    expect_rbac_denied,
    expect_reached,
    loki_streams,
    make_workload_log,
    proxied_metrics_urls,
    published_mesh_policies,
    remote_app_data,
    scrape_samples,
    units_of,
    wait_gone,
    wait_settled,
    worker_units_data,
)
from it_kube import (
    AMBIENT_LABEL,
    PART_OF,
    cluster_internal_policies,
    describe,
    enrol_in_ambient_mesh,
    expected_cluster_internal,
    find_policy_for,
    label_problems,
    list_policies,
    live_pod_labels,
    principal,
    selector_target,
    service_labels,
    service_target,
)
from it_settings import Settings, resolve_charms
from lightkube import Client

COORDINATOR = "coordinator"
WORKER_A = "worker-a"
WORKER_B = "worker-b"
WORKER_ROLES = {WORKER_A: "read", WORKER_B: "write"}
OUTSIDER = "outsider"
BEACON = "istio-beacon"
PROMETHEUS = "prometheus"
LOKI = "loki"
GRAFANA = "grafana"
ON_MESH_CLIENTS = (PROMETHEUS, GRAFANA)
"""Other charms' applications put on the mesh, so the waypoint judges their requests at L7."""
QUERY_PREFIX = "/query"
"""The coordinator charm's query route (``QUERY_API`` in coordinator/src/charm.py): Grafana's."""
WORKER_CONTAINER = "prometheus"
"""The worker's workload container (its workload is Prometheus)."""

OUR_APPS = (COORDINATOR, WORKER_A, WORKER_B, OUTSIDER)
"""Applications whose error status fails a wait at once (the others may retry hooks)."""

# Generous but bounded waits, in seconds (scaled by MESH_TEST_TIMEOUT_SCALE).
DEPLOY_WAIT = 40 * 60
SETTLE_WAIT = 20 * 60
K8S_WAIT = 5 * 60
TRAFFIC_WAIT = 4 * 60
TELEMETRY_WAIT = 8 * 60


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What earlier tests learnt and later ones compare with (times, labels, policy names)."""
    return {}


@pytest.fixture(scope="module")
def charms(settings: Settings) -> tuple[Path, Path]:
    """The coordinator and worker ``.charm`` files (packed if needed)."""
    try:
        return resolve_charms(settings)
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


def leader_unit(juju: jubilant.Juju, app: str) -> str:
    """The leader unit of ``app`` (any unit when none is marked yet)."""
    status = juju.status()
    units = status.apps[app].units
    return next((name for name, unit in units.items() if unit.leader), units_of(status, app)[0])


def cluster_apps(juju: jubilant.Juju) -> list[str]:
    """The coordinator and the worker applications still deployed."""
    present = juju.status().apps
    return [app for app in (COORDINATOR, WORKER_A, WORKER_B) if app in present]


def core_apps(juju: jubilant.Juju) -> list[str]:
    """Everything that must be active: the cluster, the beacon and the telemetry backends."""
    return [*cluster_apps(juju), BEACON, PROMETHEUS, LOKI, GRAFANA]


def settle(juju: jubilant.Juju, settings: Settings, seconds: float = SETTLE_WAIT) -> None:
    """Wait until the cluster, beacon and backends are active and idle."""
    wait_settled(
        juju, core_apps(juju), timeout=settings.timeout(seconds), error_apps=cluster_apps(juju)
    )


def check_pod_labels(
    juju: jubilant.Juju,
    kube: Client,
    namespace: str,
    settings: Settings,
    *,
    required: dict[str, str],
    absent: list[str],
) -> None:
    """Wait until every cluster pod and Service carries ``required`` labels and none of ``absent``."""
    apps = cluster_apps(juju)
    status = juju.status()
    scales = {app: len(status.apps[app].units) for app in apps}

    def attempt() -> tuple[bool, str]:
        problems: list[str] = []
        for app in apps:
            pods = live_pod_labels(kube, namespace, app)
            if len(pods) != scales[app]:
                problems.append(f"{app}: {len(pods)} live pods, want {scales[app]}")
            for pod, labels in sorted(pods.items()):
                problems += label_problems(f"pod {pod}", labels, required=required, absent=absent)
            problems += label_problems(
                f"service {app}",
                service_labels(kube, namespace, app),
                required=required,
                absent=absent,
            )
        return not problems, "\n".join(problems) or "all labelled"

    eventually(
        attempt,
        what=f"cluster pods and Services labelled {required}, without {absent}",
        timeout=settings.timeout(K8S_WAIT),
    )


def check_cluster_internal_policies(
    kube: Client, namespace: str, settings: Settings, *, workers: list[str]
) -> list[str]:
    """Wait until the cluster-internal policies are exactly the designed set; return their names.

    1 + 2 x len(workers) policies: coordinator -> cluster pods, and per worker application
    worker -> cluster pods and worker -> coordinator Service. Leftovers naming removed workers
    count as wrong.
    """
    wanted = expected_cluster_internal(
        namespace=namespace, coordinator=COORDINATOR, workers=workers
    )
    found: list[str] = []

    def attempt() -> tuple[bool, str]:
        policies = list_policies(kube, namespace)
        internal = cluster_internal_policies(
            policies,
            namespace=namespace,
            coordinator=COORDINATOR,
            cluster_apps=[COORDINATOR, WORKER_A, WORKER_B],
        )
        pairs = set[tuple[str, str]]().union(*(p.pairs() for p in internal))
        found[:] = sorted(p.name for p in internal)
        ok = pairs == wanted and len(internal) == len(wanted)
        note = (
            f"want {len(wanted)} policies allowing {sorted(wanted)};\n"
            f"cluster-internal now:\n{describe(internal)}\nall in {namespace}:\n{describe(policies)}"
        )
        return ok, note

    eventually(
        attempt,
        what=f"cluster-internal policies for workers {workers}",
        timeout=settings.timeout(K8S_WAIT),
    )
    return found


def check_no_policies_for_cluster(kube: Client, namespace: str, settings: Settings) -> None:
    """Wait until no AuthorizationPolicy targets the cluster (internal or external)."""
    cluster_targets = {
        selector_target({PART_OF: COORDINATOR}),
        selector_target({"app.kubernetes.io/name": COORDINATOR}),
        service_target(COORDINATOR),
    }

    def attempt() -> tuple[bool, str]:
        left = [p for p in list_policies(kube, namespace) if set(p.targets) & cluster_targets]
        return not left, f"still targeting the cluster:\n{describe(left)}"

    eventually(
        attempt, what="no policies targeting the cluster", timeout=settings.timeout(K8S_WAIT)
    )


def check_external_policies(
    juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings
) -> None:
    """Wait until every policy the coordinator publishes exists as an AuthorizationPolicy."""
    beacon = leader_unit(juju, BEACON)
    published = published_mesh_policies(juju, beacon, COORDINATOR)
    for client, relation in ((PROMETHEUS, "metrics-endpoint"), (GRAFANA, "grafana-source")):
        assert any(p.source_app_name == client for p in published), (
            f"the coordinator publishes no policy for {client} ({relation}): "
            f"{[p.to_wire() for p in published]}"
        )
    for policy in published:
        assert (policy.target_app_name, policy.target_namespace) == (COORDINATOR, namespace), (
            f"a published policy does not target the coordinator: {policy.to_wire()}"
        )

    def attempt() -> tuple[bool, str]:
        policies = list_policies(kube, namespace)
        missing = [p.to_wire() for p in published if find_policy_for(p, policies) is None]
        return not missing, (
            f"no AuthorizationPolicy for {json.dumps(missing)}\nall in {namespace}:\n"
            f"{describe(policies)}"
        )

    eventually(
        attempt,
        what=f"the beacon's AuthorizationPolicies for the {len(published)} published policies",
        timeout=settings.timeout(K8S_WAIT),
    )


def check_up(
    juju: jubilant.Juju, settings: Settings, *, app: str, units: list[str], since: float
) -> None:
    """Wait until Prometheus scraped exactly ``units`` successfully (``up == 1``) after ``since``."""
    prometheus = leader_unit(juju, PROMETHEUS)

    def attempt() -> tuple[bool, str]:
        samples = scrape_samples(juju, prometheus, app)
        ok = (
            sorted(s.unit for s in samples) == sorted(units)
            and all(s.up == "1" for s in samples)
            and all(s.timestamp >= since for s in samples)
        )
        seen = [(s.unit, s.up, f"{s.timestamp - since:+.0f}s") for s in samples]
        return ok, f"up{{juju_application={app!r}}}: (unit, value, scraped vs since) {seen}"

    eventually(
        attempt,
        what=f"Prometheus scraping {units} successfully after {since:.0f}",
        timeout=settings.timeout(TELEMETRY_WAIT),
        interval=15,
    )


def check_logs(juju: jubilant.Juju, settings: Settings, *, app: str, since: float) -> None:
    """Make ``app``'s workload log, and wait until Loki holds lines of it newer than ``since``."""
    loki = leader_unit(juju, LOKI)
    query = f'{{juju_application="{app}"}}'
    poked: list[str] = []

    def attempt() -> tuple[bool, str]:
        if not poked:
            unit = units_of(juju.status(), app)[0]
            poked.extend(make_workload_log(juju, unit, WORKER_CONTAINER, "prometheus") or ["-"])
        streams = loki_streams(juju, loki, query, since=since)
        lines = sum(len(s.get("values") or []) for s in streams)
        return lines > 0, f"{lines} lines for {query} since {since:.0f} (signalled {poked})"

    eventually(
        attempt,
        what=f"{app} logs in Loki after {since:.0f}",
        timeout=settings.timeout(TELEMETRY_WAIT),
        interval=15,
    )


def check_logs_go_through_proxy(juju: jubilant.Juju, namespace: str, worker_unit: str) -> None:
    """The Loki URLs the coordinator hands the workers point at its own Service's proxy."""
    data = CoordinatorAppData.load(remote_app_data(juju, worker_unit, "cluster", COORDINATOR))
    urls = data.loki_endpoints or {}
    assert urls, f"the coordinator gave {worker_unit} no Loki endpoint"
    service = f"://{COORDINATOR}.{namespace}.svc.cluster.local:"
    wrong = {unit: url for unit, url in urls.items() if service not in url or "/proxy/" not in url}
    assert not wrong, f"Loki URLs not through the coordinator's proxy: {wrong}"


# --- 1. deployment without mesh ------------------------------------------------------------------


@pytest.mark.juju_setup
@pytest.mark.abort_on_fail
def test_deploy(
    juju: jubilant.Juju,
    istio_juju: jubilant.Juju,
    settings: Settings,
    charms: tuple[Path, Path],
):
    coordinator_charm, worker_charm = charms
    # After the mesh is removed, the coordinator deletes its cluster-internal policies on the first
    # hook after no cluster pod is enrolled any more; update-status is that hook when nothing else
    # happens, so run it every minute here rather than Juju's default five.
    juju.model_config({"update-status-hook-interval": "1m"})
    if settings.istio_model is None:
        config: dict[str, jubilant.ConfigValue] = {}
        if settings.istio_platform is not None:
            config["platform"] = settings.istio_platform
        istio_juju.deploy(
            charm_sources.ISTIO,
            settings.istio_app,
            channel=settings.channel(charm_sources.ISTIO),
            config=config or None,
            trust=True,
        )
    juju.deploy(
        charm_sources.BEACON,
        BEACON,
        channel=settings.channel(charm_sources.BEACON),
        config={"model-on-mesh": False},
        trust=True,
    )
    juju.deploy(coordinator_charm, COORDINATOR, resources=oci_resources("coordinator"), trust=True)
    for worker, role in WORKER_ROLES.items():
        juju.deploy(
            worker_charm,
            worker,
            resources=oci_resources("worker"),
            config={"role": role},
            trust=True,
        )
    juju.deploy(worker_charm, OUTSIDER, resources=oci_resources("worker"), trust=True)
    for charm, app in (
        (charm_sources.PROMETHEUS, PROMETHEUS),
        (charm_sources.LOKI, LOKI),
        (charm_sources.GRAFANA, GRAFANA),
    ):
        juju.deploy(charm, app, channel=settings.channel(charm), trust=True)

    wait_settled(istio_juju, [settings.istio_app], timeout=settings.timeout(DEPLOY_WAIT))
    wait_settled(
        juju,
        [BEACON, PROMETHEUS, LOKI, GRAFANA],
        timeout=settings.timeout(DEPLOY_WAIT),
        error_apps=OUR_APPS,
    )
    juju.wait(
        lambda status: jubilant.all_agents_idle(status, *OUR_APPS),
        error=lambda status: jubilant.any_error(status, *OUR_APPS),
        timeout=settings.timeout(DEPLOY_WAIT),
        delay=5,
    )


@pytest.mark.juju_setup
@pytest.mark.abort_on_fail
def test_integrate_cluster_and_telemetry(
    juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings
):
    for worker in WORKER_ROLES:
        juju.integrate(f"{worker}:cluster", f"{COORDINATOR}:cluster")
    juju.integrate(f"{COORDINATOR}:metrics-endpoint", f"{PROMETHEUS}:metrics-endpoint")
    juju.integrate(f"{COORDINATOR}:logging", f"{LOKI}:logging")
    juju.integrate(f"{COORDINATOR}:grafana-source", f"{GRAFANA}:grafana-source")
    settle(juju, settings)

    # The cluster label is always applied; mesh labels and cluster policies only with a mesh.
    check_pod_labels(
        juju, kube, namespace, settings, required={PART_OF: COORDINATOR}, absent=[AMBIENT_LABEL]
    )
    check_no_policies_for_cluster(kube, namespace, settings)
    outsider = live_pod_labels(kube, namespace, OUTSIDER)
    assert outsider, f"no live pod for {OUTSIDER}"
    for pod, labels in outsider.items():
        assert PART_OF not in labels and AMBIENT_LABEL not in labels, f"{pod}: {labels}"


def test_telemetry_flows_before_mesh(juju: jubilant.Juju, namespace: str, settings: Settings):
    since = time.time()
    status = juju.status()
    for worker in WORKER_ROLES:
        check_up(juju, settings, app=worker, units=units_of(status, worker), since=since)
        check_logs(juju, settings, app=worker, since=since)
    check_logs_go_through_proxy(juju, namespace, units_of(status, WORKER_A)[0])


@pytest.mark.juju_setup
@pytest.mark.abort_on_fail
def test_integrate_service_mesh(
    juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings
):
    juju.integrate(f"{COORDINATOR}:service-mesh", f"{BEACON}:service-mesh")
    # Prometheus and Grafana must be on the mesh to have identities the beacon's policies can
    # name, and for the waypoint (not ztunnel) to judge their requests to our Service.
    enrolments: dict[str, str] = {}
    for client in ON_MESH_CLIENTS:
        if "service-mesh" in juju.status().apps[client].endpoint_bindings:
            juju.integrate(f"{client}:service-mesh", f"{BEACON}:service-mesh")
            enrolments[client] = "its service-mesh relation"
        else:
            enrol_in_ambient_mesh(kube, namespace, client)
            enrolments[client] = f"the {AMBIENT_LABEL} label on its StatefulSet"
    settle(juju, settings)

    for client, enrolment in enrolments.items():

        def enrolled(client: str = client) -> tuple[bool, str]:
            pods = live_pod_labels(kube, namespace, client)
            ok = bool(pods) and all(p.get(AMBIENT_LABEL) == "ambient" for p in pods.values())
            return ok, f"{client} pods: {pods}"

        eventually(
            enrolled,
            what=f"{client} on the mesh via {enrolment}",
            timeout=settings.timeout(K8S_WAIT),
        )


# --- 2. what the mesh relation creates -----------------------------------------------------------


def test_pods_carry_cluster_and_mesh_labels(
    juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings
):
    labels = beacon_labels(juju, leader_unit(juju, COORDINATOR), BEACON)
    assert labels.get(AMBIENT_LABEL) == "ambient", (
        f"the beacon publishes {labels}; with model-on-mesh=false it must ask for ambient pods"
    )
    check_pod_labels(
        juju, kube, namespace, settings, required={PART_OF: COORDINATOR, **labels}, absent=[]
    )
    for pod, pod_labels in live_pod_labels(kube, namespace, OUTSIDER).items():
        assert AMBIENT_LABEL not in pod_labels, f"{OUTSIDER} must stay off the mesh: {pod}"


def test_cluster_internal_policies(kube: Client, namespace: str, settings: Settings):
    check_cluster_internal_policies(kube, namespace, settings, workers=list(WORKER_ROLES))


def test_beacon_created_external_policies(
    juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings
):
    check_external_policies(juju, kube, namespace, settings)


# --- 3. traffic under hardened mode --------------------------------------------------------------


@pytest.mark.abort_on_fail
def test_enable_hardened_mode(
    istio_juju: jubilant.Juju, juju: jubilant.Juju, settings: Settings, state: dict[str, Any]
):
    options = json.loads(istio_juju.cli("config", "--format", "json", settings.istio_app))
    assert "hardened-mode" in options.get("settings", {}), (
        f"{settings.istio_app} (channel {settings.channel(charm_sources.ISTIO)}) has no "
        "hardened-mode option; "
        "set MESH_TEST_ISTIO_CHANNEL to a channel that has it"
    )
    istio_juju.config(settings.istio_app, {"hardened-mode": True})
    wait_settled(istio_juju, [settings.istio_app], timeout=settings.timeout(SETTLE_WAIT))
    settle(juju, settings)
    state["hardened_at"] = time.time()


def test_traffic_inside_cluster_allowed(juju: jubilant.Juju, settings: Settings):
    timeout = settings.timeout(TRAFFIC_WAIT)
    coordinator = leader_unit(juju, COORDINATOR)
    workers = worker_units_data(juju, coordinator)
    assert sorted(workers) == [f"{WORKER_A}/0", f"{WORKER_B}/0"], f"cluster units: {workers}"
    a, b = f"{WORKER_A}/0", f"{WORKER_B}/0"

    for data in workers.values():  # coordinator -> worker pods
        expect_reached(juju, coordinator, direct_metrics_url(data), timeout=timeout)
    # worker -> worker
    expect_reached(juju, a, direct_metrics_url(workers[b]), timeout=timeout)
    expect_reached(juju, b, direct_metrics_url(workers[a]), timeout=timeout)
    # worker -> coordinator Service (the proxy, through the waypoint)
    proxied = proxied_metrics_urls(juju, leader_unit(juju, PROMETHEUS), COORDINATOR)
    assert sorted(proxied) == [a, b], f"proxied scrape targets: {proxied}"
    expect_reached(juju, a, proxied[b], timeout=timeout)
    expect_reached(juju, b, proxied[a], timeout=timeout)


def test_traffic_from_outside_cluster_denied(juju: jubilant.Juju, settings: Settings):
    timeout = settings.timeout(TRAFFIC_WAIT)
    coordinator = leader_unit(juju, COORDINATOR)
    outsider = units_of(juju.status(), OUTSIDER)[0]
    prometheus = leader_unit(juju, PROMETHEUS)
    workers = worker_units_data(juju, coordinator)
    proxied = proxied_metrics_urls(juju, prometheus, COORDINATOR)
    a = f"{WORKER_A}/0"

    # Positive control: the URL is served, so a failure below is the mesh saying no.
    expect_reached(juju, coordinator, direct_metrics_url(workers[a]), timeout=timeout)
    # An application outside the cluster and off the mesh: ztunnel cuts it at L4 (no principal),
    # before any waypoint; this says nothing about the L7 policies (see the next test).
    for data in workers.values():
        expect_denied(juju, outsider, direct_metrics_url(data), timeout=timeout)
    expect_denied(juju, outsider, proxied[a], timeout=timeout)
    # Prometheus (on the mesh, allowed to the proxy) may not scrape a worker pod directly: no
    # policy on the worker pods names it (L4, ztunnel).
    expect_denied(juju, prometheus, direct_metrics_url(workers[a]), timeout=timeout)


def test_waypoint_enforces_l7_policies(juju: jubilant.Juju, namespace: str, settings: Settings):
    """Enrolled clients get what our policies allow on our Service, the waypoint's 403 otherwise.

    Policies (coordinator/src/charm.py and the library defaults): Prometheus may ``GET``
    ``/proxy/worker/{*}/metrics``, Grafana ``GET``/``POST`` ``/query/*``, on the HTTP port. Each
    denied request is first shown answered for a worker (the cluster-internal policy lets workers
    reach the Service on anything), so the 403 is the policy's doing, not the route's.
    """
    timeout = settings.timeout(TRAFFIC_WAIT)
    prometheus = leader_unit(juju, PROMETHEUS)
    grafana = leader_unit(juju, GRAFANA)
    a = f"{WORKER_A}/0"
    metrics = proxied_metrics_urls(juju, prometheus, COORDINATOR)[a]
    parts = urlsplit(metrics)
    assert parts.hostname == f"{COORDINATOR}.{namespace}.svc.cluster.local", (
        f"scrape jobs must target the coordinator's Service: {metrics}"
    )
    query = f"{parts.scheme}://{parts.netloc}{QUERY_PREFIX}/api/v1/query?query=up"
    loki_pushes = CoordinatorAppData.load(remote_app_data(juju, a, "cluster", COORDINATOR))
    push = sorted((loki_pushes.loki_endpoints or {}).values())
    assert push, f"the coordinator gave {a} no Loki push URL"

    # Allowed: each client on its own route and methods (a body-less POST may get a 4xx from
    # Prometheus, which is fine: the waypoint let it through).
    expect_reached(juju, prometheus, metrics, timeout=timeout)
    expect_reached(juju, grafana, query, timeout=timeout)
    expect_answered(juju, grafana, query, method="POST", timeout=timeout)
    # Denied at L7: a method, a path, or the other client's route.
    denied = [
        (prometheus, "DELETE", metrics),
        (prometheus, "GET", push[0]),
        (prometheus, "GET", query),
        (grafana, "GET", metrics),
        (grafana, "DELETE", query),
    ]
    for source, method, url in denied:
        expect_answered(juju, a, url, method=method, timeout=timeout)
        expect_rbac_denied(juju, source, url, method=method, timeout=timeout)


def test_prometheus_scrapes_workers_through_proxy(
    juju: jubilant.Juju, settings: Settings, state: dict[str, Any]
):
    prometheus = leader_unit(juju, PROMETHEUS)
    for url in proxied_metrics_urls(juju, prometheus, COORDINATOR).values():
        expect_reached(juju, prometheus, url, timeout=settings.timeout(TRAFFIC_WAIT))
    status = juju.status()
    since = state["hardened_at"]
    for worker in WORKER_ROLES:
        check_up(juju, settings, app=worker, units=units_of(status, worker), since=since)
    # The coordinator's own exporter, allowed by the beacon's unit policy.
    check_up(juju, settings, app=COORDINATOR, units=units_of(status, COORDINATOR), since=since)


def test_worker_logs_reach_loki_through_proxy(
    juju: jubilant.Juju, namespace: str, settings: Settings, state: dict[str, Any]
):
    for worker in WORKER_ROLES:
        check_logs_go_through_proxy(juju, namespace, units_of(juju.status(), worker)[0])
        check_logs(juju, settings, app=worker, since=state["hardened_at"])


# --- 4. transitions ------------------------------------------------------------------------------


@pytest.mark.abort_on_fail
def test_scale_worker_up(juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings):
    before = check_cluster_internal_policies(kube, namespace, settings, workers=list(WORKER_ROLES))
    labels = beacon_labels(juju, leader_unit(juju, COORDINATOR), BEACON)
    since = time.time()
    juju.add_unit(WORKER_A)
    juju.wait(lambda s: len(s.apps[WORKER_A].units) == 2, timeout=settings.timeout(SETTLE_WAIT))
    settle(juju, settings)
    new = f"{WORKER_A}/1"

    check_pod_labels(
        juju,
        kube,
        namespace,
        settings,
        required={PART_OF: COORDINATOR, **labels},
        absent=[],
    )
    names = check_cluster_internal_policies(kube, namespace, settings, workers=list(WORKER_ROLES))
    assert names == before, (
        f"adding a unit changed the cluster-internal policies: {before} -> {names}"
    )

    coordinator = leader_unit(juju, COORDINATOR)
    workers: dict[str, Any] = {}

    def new_unit_joined() -> tuple[bool, str]:
        workers.update(worker_units_data(juju, coordinator))
        return new in workers, f"cluster units: {sorted(workers)}"

    eventually(new_unit_joined, what=f"{new} in the cluster", timeout=settings.timeout(K8S_WAIT))
    timeout = settings.timeout(TRAFFIC_WAIT)
    expect_reached(juju, coordinator, direct_metrics_url(workers[new]), timeout=timeout)
    outsider = units_of(juju.status(), OUTSIDER)[0]
    expect_denied(juju, outsider, direct_metrics_url(workers[new]), timeout=timeout)
    check_up(juju, settings, app=WORKER_A, units=[f"{WORKER_A}/0", new], since=since)


@pytest.mark.abort_on_fail
def test_scale_worker_down(juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings):
    before = check_cluster_internal_policies(kube, namespace, settings, workers=list(WORKER_ROLES))
    juju.remove_unit(WORKER_A, num_units=1)
    juju.wait(lambda s: len(s.apps[WORKER_A].units) == 1, timeout=settings.timeout(SETTLE_WAIT))
    settle(juju, settings)

    names = check_cluster_internal_policies(kube, namespace, settings, workers=list(WORKER_ROLES))
    assert names == before, (
        f"removing a unit changed the cluster-internal policies: {before} -> {names}"
    )
    prometheus = leader_unit(juju, PROMETHEUS)

    def unit_gone() -> tuple[bool, str]:
        targets = proxied_metrics_urls(juju, prometheus, COORDINATOR)
        return sorted(targets) == [f"{WORKER_A}/0", f"{WORKER_B}/0"], f"scrape targets: {targets}"

    eventually(
        unit_gone, what="scrape jobs without the removed unit", timeout=settings.timeout(K8S_WAIT)
    )


@pytest.mark.abort_on_fail
def test_remove_worker_application(
    juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings
):
    juju.remove_application(WORKER_B, destroy_storage=True)
    wait_gone(juju, WORKER_B, timeout=settings.timeout(SETTLE_WAIT))
    settle(juju, settings)

    check_cluster_internal_policies(kube, namespace, settings, workers=[WORKER_A])
    leftovers = [
        p for p in list_policies(kube, namespace) if principal(namespace, WORKER_B) in p.principals
    ]
    assert not leftovers, f"policies still name {WORKER_B}:\n{describe(leftovers)}"
    prometheus = leader_unit(juju, PROMETHEUS)

    def jobs_follow() -> tuple[bool, str]:
        targets = proxied_metrics_urls(juju, prometheus, COORDINATOR)
        return sorted(targets) == [f"{WORKER_A}/0"], f"scrape targets: {targets}"

    eventually(
        jobs_follow, what=f"scrape jobs without {WORKER_B}", timeout=settings.timeout(K8S_WAIT)
    )


@pytest.mark.abort_on_fail
def test_remove_service_mesh_relation(
    juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings, state: dict[str, Any]
):
    mesh_labels = beacon_labels(juju, leader_unit(juju, COORDINATOR), BEACON)
    assert mesh_labels, "the beacon publishes no labels, nothing to see removed"
    juju.remove_relation(f"{COORDINATOR}:service-mesh", f"{BEACON}:service-mesh")
    juju.wait(
        lambda s: "service-mesh" not in s.apps[COORDINATOR].relations,
        timeout=settings.timeout(SETTLE_WAIT),
        delay=5,
    )
    settle(juju, settings)

    check_pod_labels(
        juju,
        kube,
        namespace,
        settings,
        required={PART_OF: COORDINATOR},
        absent=sorted(mesh_labels),
    )
    # The policies outlive the relation until the last pod left the mesh (no deny window).
    check_no_policies_for_cluster(kube, namespace, settings)
    state["mesh_removed_at"] = time.time()


def test_telemetry_flows_without_mesh(
    juju: jubilant.Juju, settings: Settings, state: dict[str, Any]
):
    since = state["mesh_removed_at"]
    status = juju.status()
    check_up(juju, settings, app=WORKER_A, units=units_of(status, WORKER_A), since=since)
    check_up(juju, settings, app=COORDINATOR, units=units_of(status, COORDINATOR), since=since)
    check_logs(juju, settings, app=WORKER_A, since=since)
    # Off the mesh, nothing enforces policies on the workers any more.
    workers = worker_units_data(juju, leader_unit(juju, COORDINATOR))
    outsider = units_of(status, OUTSIDER)[0]
    url = direct_metrics_url(workers[f"{WORKER_A}/0"])
    expect_reached(juju, outsider, url, timeout=settings.timeout(TRAFFIC_WAIT))


@pytest.mark.abort_on_fail
def test_readd_service_mesh_relation(
    juju: jubilant.Juju, kube: Client, namespace: str, settings: Settings, state: dict[str, Any]
):
    juju.integrate(f"{COORDINATOR}:service-mesh", f"{BEACON}:service-mesh")
    settle(juju, settings)

    labels = beacon_labels(juju, leader_unit(juju, COORDINATOR), BEACON)
    check_pod_labels(
        juju, kube, namespace, settings, required={PART_OF: COORDINATOR, **labels}, absent=[]
    )
    check_cluster_internal_policies(kube, namespace, settings, workers=[WORKER_A])
    check_external_policies(juju, kube, namespace, settings)
    state["mesh_readded_at"] = time.time()


def test_traffic_and_telemetry_after_readding_mesh(
    juju: jubilant.Juju, settings: Settings, state: dict[str, Any]
):
    timeout = settings.timeout(TRAFFIC_WAIT)
    coordinator = leader_unit(juju, COORDINATOR)
    prometheus = leader_unit(juju, PROMETHEUS)
    outsider = units_of(juju.status(), OUTSIDER)[0]
    a = f"{WORKER_A}/0"
    direct = direct_metrics_url(worker_units_data(juju, coordinator)[a])
    proxied = proxied_metrics_urls(juju, prometheus, COORDINATOR)[a]

    expect_reached(juju, coordinator, direct, timeout=timeout)
    expect_reached(juju, a, proxied, timeout=timeout)
    expect_reached(juju, prometheus, proxied, timeout=timeout)
    expect_denied(juju, outsider, direct, timeout=timeout)
    expect_denied(juju, prometheus, direct, timeout=timeout)
    # The beacon's L7 policies are back, not just some allow-all: the waypoint refuses a method.
    expect_rbac_denied(juju, prometheus, proxied, method="DELETE", timeout=timeout)

    since = state["mesh_readded_at"]
    check_up(juju, settings, app=WORKER_A, units=[a], since=since)
    check_logs(juju, settings, app=WORKER_A, since=since)
