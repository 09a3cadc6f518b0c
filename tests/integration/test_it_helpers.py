"""The integration tests' own helpers and ``tools/deploy.py``, checked without Juju or Kubernetes.

A wrong helper would make the integration tests pass for the wrong reason (a DNS error counted as
"denied", a policy matched on the wrong target, a controller judged by the wrong key), and a wrong
planner would deploy the wrong thing, so both are tested here, offline: the in-pod probe program
runs for real (through ``bash``, as ``juju exec`` runs it) against a local HTTP server, and the
readers of Juju and Kubernetes output run on fixtures of the documented shapes (``it_fixtures``,
each stating its source), parsed by the same code as live (jubilant's own parsers included).
"""

from __future__ import annotations

import http.server
import json
import shlex
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import charm_sources
import deploy
import it_fixtures as fx
import it_settings
import jubilant
import pack
import pytest
from charm_sources import CHANNELS, COORDINATOR, WORKER, oci_resources
from coordinated_mesh.mesh.policies import Endpoint, MeshPolicy, Method, PolicyTargetType
from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    build_telemetry_proxy,
)
from coordinated_mesh.relations.cluster import JujuTopology, MetricsEndpoint, WorkerUnitData
from it_juju import (
    NotReadyError,
    ProbeResult,
    beacon_labels,
    controller_problem,
    eventually,
    expect_answered,
    expect_denied,
    expect_rbac_denied,
    expect_reached,
    make_workload_log,
    probe,
    proxied_metrics_urls,
    published_mesh_policies,
    remote_app_data,
    scrape_samples,
    worker_units_data,
)
from it_kube import (
    Operation,
    PolicyView,
    cluster_internal_policies,
    expected_cluster_internal,
    find_policy_for,
    label_problems,
    principal,
    selector_target,
    service_target,
)
from it_settings import Settings, find_built_charm, resolve_charms
from juju_models import ModelList

pytestmark = pytest.mark.offline

NS = "mesh-test"


class CannedJuju(jubilant.Juju):
    """A real :class:`jubilant.Juju` whose CLI answers from recorded output, recording each call.

    Parsing stays jubilant's own (``status``, ``show_unit``) and so does argument building
    (``deploy``, ``integrate``...). ``answers`` maps ``(command, model)`` to stdout; a command
    missing there answers ``""``. ``cli_binary`` names no real program, so jubilant never thinks
    Juju is a snap (which would make it copy charm files).
    """

    def __init__(
        self,
        model: str | None = None,
        answers: Mapping[tuple[str, str | None], str] | None = None,
        calls: list[tuple[str | None, tuple[str, ...]]] | None = None,
    ):
        super().__init__(model=model, cli_binary="juju-not-installed-here")
        self.answers = dict(answers or {})
        self.calls: list[tuple[str | None, tuple[str, ...]]] = [] if calls is None else calls

    def cli(self, *args: str, include_model: bool = True, stdin: str | None = None) -> str:
        model = self.model if include_model else None
        self.calls.append((model, args))
        return self.answers.get((args[0], model), "")


class LocalJuju:
    """Stands in for :class:`jubilant.Juju`: ``exec`` runs in local bash, ``show_unit`` answers
    from ``juju show-unit --format json`` documents through jubilant's parser."""

    def __init__(
        self,
        units: Mapping[str, str] | None = None,
        stdout: str | Callable[[str], str] | None = None,
    ):
        self.show_unit_json = dict(units or {})
        self.canned_stdout = stdout
        self.commands: list[str] = []

    def exec(self, command: str, *, unit: str, wait: float | None = None) -> jubilant.Task:
        self.commands.append(command)
        if self.canned_stdout is not None:
            canned = self.canned_stdout
            stdout = canned if isinstance(canned, str) else canned(command)
            return jubilant.Task(id="1", status="completed", stdout=stdout)
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=wait, check=False
        )
        task = jubilant.Task(
            id="1",
            status="completed" if done.returncode == 0 else "failed",
            return_code=done.returncode,
            stdout=done.stdout,
            stderr=done.stderr,
        )
        task.raise_on_failure()
        return task

    def show_unit(self, unit: str) -> jubilant.UnitInfo:
        return CannedJuju("m", {("show-unit", "m"): self.show_unit_json[unit]}).show_unit(unit)

    def as_juju(self) -> jubilant.Juju:
        return cast("jubilant.Juju", self)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {
        "/ok": (200, b"# HELP up\nup 1\n"),
        "/rbac": (403, b"RBAC: access denied"),
        "/forbidden": (403, b"<html>403 Forbidden</html>"),
    }

    def _answer(self) -> None:
        if self.path.startswith("/echo/"):
            code, body = 200, f"{self.command} {self.path}".encode()
        elif self.path.startswith("/echo"):
            code, body = 200, self.path.encode()
        else:
            code, body = self.routes.get(self.path, (404, b"not found"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the in-pod probe ----------------------------------------------------------------------------


def test_probe_reports_a_served_request(server: str):
    got = probe(LocalJuju().as_juju(), "app/0", f"{server}/ok")
    assert (got.status, got.reached, got.denied, got.broken) == (200, True, False, False)
    assert got.body == "# HELP up\nup 1\n"


def test_probe_passes_the_url_through_the_shell_untouched(server: str):
    path = "/echo?q=up{juju_application=\"w\"}&x='a'&home=$HOME&t=`id`"
    got = probe(LocalJuju().as_juju(), "app/0", server + path)
    assert (got.status, got.body) == (200, path)


def test_probe_reports_a_malformed_url_as_broken_not_denied():
    got = probe(LocalJuju().as_juju(), "app/0", "http://127.0.0.1:1/a b")
    assert (got.error, got.broken, got.denied) == ("invalid", True, False)


def test_probe_tells_mesh_rbac_from_application_403(server: str):
    juju = LocalJuju().as_juju()
    rbac = probe(juju, "app/0", f"{server}/rbac")
    app = probe(juju, "app/0", f"{server}/forbidden")
    assert (rbac.status, rbac.rbac_denied, rbac.denied, rbac.reached) == (403, True, True, False)
    assert (app.status, app.rbac_denied, app.denied, app.reached) == (403, False, False, True)


def test_probe_reports_a_refused_connection_as_denied():
    got = probe(LocalJuju().as_juju(), "app/0", f"http://127.0.0.1:{_free_port()}/")
    assert (got.error, got.denied, got.reached) == ("connection", True, False)


def test_probe_reports_a_silent_server_as_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accepts: the request is never answered
        port = listener.getsockname()[1]
        got = probe(LocalJuju().as_juju(), "app/0", f"http://127.0.0.1:{port}/", timeout=1)
    assert (got.error, got.denied) == ("timeout", True)


def test_probe_reports_an_unknown_name_as_dns_not_as_denied():
    got = probe(LocalJuju().as_juju(), "app/0", "http://no-such-host.invalid/metrics")
    assert (got.error, got.broken, got.denied, got.reached) == ("dns", True, False, False)


def test_expectations_refuse_a_broken_request():
    juju = LocalJuju().as_juju()
    with pytest.raises(AssertionError, match="the request itself is broken"):
        expect_denied(juju, "app/0", "http://no-such-host.invalid/", timeout=5)
    with pytest.raises(AssertionError, match="the request itself is broken"):
        expect_reached(juju, "app/0", "http://127.0.0.1:1/a b", timeout=5)


def test_probe_sends_the_method_asked_for(server: str):
    juju = LocalJuju().as_juju()
    for method in ("DELETE", "POST", "GET"):
        got = probe(juju, "app/0", f"{server}/echo/x", method=method)
        assert (got.method, got.status, got.body) == (method, 200, f"{method} /echo/x")


def test_expect_rbac_denied_takes_only_the_waypoint_403(server: str):
    juju = LocalJuju().as_juju()
    got = expect_rbac_denied(
        juju, "app/0", f"{server}/rbac", method="DELETE", timeout=5, interval=0
    )
    assert (got.method, got.status, got.rbac_denied) == ("DELETE", 403, True)
    # An application's own 403, or a cut connection (ztunnel, L4), is not the waypoint saying no.
    for url in (f"{server}/forbidden", f"http://127.0.0.1:{_free_port()}/"):
        with pytest.raises(AssertionError, match=r"403 'RBAC: access denied'.*still not true"):
            expect_rbac_denied(juju, "app/0", url, timeout=0)
    refused = f"http://127.0.0.1:{_free_port()}/"
    assert expect_denied(juju, "app/0", refused, timeout=5, interval=0).denied


def test_expect_answered_takes_any_status_but_the_waypoint_403(server: str):
    juju = LocalJuju().as_juju()
    assert expect_answered(juju, "app/0", f"{server}/forbidden", timeout=5).status == 403
    assert expect_answered(juju, "app/0", f"{server}/nothing", method="DELETE", timeout=5).reached
    with pytest.raises(AssertionError, match=r"let through for GET .*/rbac: still not true"):
        expect_answered(juju, "app/0", f"{server}/rbac", timeout=0)


def test_expect_reached_waits_for_the_wanted_status(server: str):
    juju = LocalJuju().as_juju()
    assert expect_reached(juju, "app/0", f"{server}/ok", timeout=5).status == 200
    with pytest.raises(
        AssertionError, match=r"(?s)GET .*/rbac \(HTTP 200\): still not true.*HTTP 403"
    ):
        expect_reached(juju, "app/0", f"{server}/rbac", timeout=0)


def test_probe_result_describes_itself():
    text = str(ProbeResult(source="a/0", url="http://x", error="connection", detail="reset"))
    assert text == "a/0 -> GET http://x: connection error (reset)"


def test_eventually_retries_not_ready_then_reports_the_last_observation():
    calls: list[int] = []

    def attempt() -> tuple[bool, str]:
        calls.append(1)
        if len(calls) == 1:
            raise NotReadyError("backend restarting")
        return len(calls) >= 3, f"call {len(calls)}"

    assert eventually(attempt, what="x", timeout=10, interval=0) == "call 3"
    with pytest.raises(AssertionError, match=r"never: still not true .*\nLast seen: no"):
        eventually(lambda: (False, "no"), what="never", timeout=0, interval=0)


def test_make_workload_log_signals_only_the_workload_services():
    plan = "services:\n  prom: {command: /bin/prometheus --x}\n  other: {command: /bin/sleep 1}\n"
    juju = LocalJuju(stdout=plan)
    assert make_workload_log(juju.as_juju(), "w/0", "prometheus", "prometheus") == ["prom"]
    assert juju.commands[-1].endswith("/charm/bin/pebble signal HUP prom")
    assert "/charm/containers/prometheus/pebble.socket" in juju.commands[0]


def test_scrape_samples_take_the_scrape_time_not_the_query_time():
    def prometheus(command: str) -> str:
        def series(unit: str, value: str) -> dict[str, Any]:
            metric = {"__name__": "up", "juju_unit": unit, "job": unit}
            return {"metric": metric, "value": [1000.0, value]}

        result = [series("w/1", "0"), series("w/0", "1")]
        if "timestamp%28" in command:  # timestamp(...) drops __name__, value = scrape time
            result = [
                {"metric": {"juju_unit": "w/0", "job": "w/0"}, "value": [1000.0, "990.5"]},
                {"metric": {"juju_unit": "w/1", "job": "w/1"}, "value": [1000.0, "700"]},
            ]
        body = json.dumps({"status": "success", "data": {"result": result}})
        return json.dumps({"status": 200, "body": body})

    samples = scrape_samples(LocalJuju(stdout=prometheus).as_juju(), "prometheus/0", "w")
    assert [(s.unit, s.up, s.timestamp) for s in samples] == [
        ("w/0", "1", 990.5),
        ("w/1", "0", 700.0),
    ]


def test_prometheus_errors_are_not_ready_rather_than_failures():
    answer = json.dumps({"error": "connection", "detail": "reset"})
    juju = LocalJuju(stdout=answer).as_juju()
    with pytest.raises(NotReadyError, match="Prometheus query"):
        scrape_samples(juju, "prometheus/0", "w")


# --- relation data (juju show-unit --format json) ------------------------------------------------


def _show_unit(
    unit: str, endpoint: str, app_data: Mapping[str, str], units: Mapping[str, Mapping[str, str]]
) -> str:
    return fx.show_unit_json(
        unit, fx.relation_info(endpoint, app_data=app_data, related_units=units)
    )


def test_show_unit_fixture_has_the_shape_jubilant_parses():
    doc = fx.show_unit_json(
        "coordinator/0",
        fx.relation_info(
            "cluster",
            app_data={"worker_role": "read"},
            related_units={"w/0": {"address": "x"}},
            local_data={"mine": "1"},
        ),
    )
    info = LocalJuju({"coordinator/0": doc}).show_unit("coordinator/0")
    [relation] = info.relation_info
    assert (info.leader, relation.endpoint, relation.app_data) == (
        True,
        "cluster",
        {"worker_role": "read"},
    )
    assert relation.related_units["w/0"].data == {"address": "x"}
    assert relation.local_unit is not None and relation.local_unit.data == {"mine": "1"}


def test_remote_app_data_picks_the_relation_of_that_application():
    info = fx.show_unit_json(
        "prometheus/0",
        fx.relation_info(
            "metrics-endpoint",
            app_data={"scrape_jobs": "[]", "who": "other"},
            related_units={"other/0": {}},
            relation_id=3,
        ),
        fx.relation_info(
            "metrics-endpoint",
            app_data={"scrape_jobs": "[]", "who": "coordinator"},
            related_units={"coordinator/0": {}, "coordinator/1": {}},
            relation_id=4,
            local_data={"who": "prometheus itself"},
        ),
    )
    juju = LocalJuju({"prometheus/0": info}).as_juju()
    data = remote_app_data(juju, "prometheus/0", "metrics-endpoint", "coordinator")
    assert data["who"] == "coordinator"
    with pytest.raises(AssertionError, match="no 'logging' relation with coordinator"):
        remote_app_data(juju, "prometheus/0", "logging", "coordinator")


def test_proxied_metrics_urls_reads_the_worker_jobs_only():
    def job(unit: str) -> dict[str, Any]:
        """A job per unit, as coordinators before per-application jobs published."""
        flat = unit.replace("/", "-")
        return {
            "job_name": flat,
            "metrics_path": f"/proxy/worker/{flat}/metrics",
            "static_configs": [{"targets": [f"coordinator.{NS}.svc.cluster.local:8080"]}],
            "relabel_configs": [
                {"target_label": "juju_application", "replacement": unit.split("/", maxsplit=1)[0]},
                {"target_label": "juju_unit", "replacement": unit},
            ],
        }

    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=CoordinatorIdentity("coordinator", NS, "00000000-0000-4000-8000-000000000001"),
            config=WorkerTelemetryProxyConfig(http_port=8080, https_port=8080),
            workers=[
                WorkerUnitData(
                    juju_topology=JujuTopology(application="w-c", unit=f"w-c/{n}", charm_name="w"),
                    address=f"w-c-{n}.w-c-endpoints.{NS}.svc.cluster.local",
                    metrics_endpoint=MetricsEndpoint(port=9090),
                )
                for n in (0, 12)
            ],
        )
    )
    jobs = [{"job_name": "nginx", "static_configs": [{"targets": ["*:9113"]}]}, job("w-b/0")]
    jobs.append(job("w-a/1"))
    jobs.extend(plan.scrape_jobs)  # the exporter's and one per application
    info = _show_unit(
        "prometheus/0", "metrics-endpoint", {"scrape_jobs": json.dumps(jobs)}, {"coordinator/0": {}}
    )
    juju = LocalJuju({"prometheus/0": info}).as_juju()
    assert proxied_metrics_urls(juju, "prometheus/0", "coordinator") == {
        "w-a/1": f"http://coordinator.{NS}.svc.cluster.local:8080/proxy/worker/w-a-1/metrics",
        "w-b/0": f"http://coordinator.{NS}.svc.cluster.local:8080/proxy/worker/w-b-0/metrics",
        "w-c/0": f"http://coordinator.{NS}.svc.cluster.local:8080/proxy/worker/w-c-0/metrics",
        "w-c/12": f"http://coordinator.{NS}.svc.cluster.local:8080/proxy/worker/w-c-12/metrics",
    }
    with pytest.raises(AssertionError, match="no 'metrics-endpoint' relation with loki"):
        proxied_metrics_urls(juju, "prometheus/0", "loki")


def test_worker_units_data_skips_incomplete_units():
    complete = {
        "juju_topology": json.dumps(
            {"application": "w", "unit": "w/0", "charm_name": "mesh-worker-k8s"}
        ),
        "address": json.dumps(f"w-0.w-endpoints.{NS}.svc.cluster.local"),
        "metrics_endpoint": json.dumps({"port": 9090, "path": "/metrics"}),
        "ingress-address": "10.1.2.3",
    }
    info = _show_unit(
        "coordinator/0", "cluster", {}, {"w/0": complete, "w/1": {"ingress-address": "10.1.2.4"}}
    )
    found = worker_units_data(LocalJuju({"coordinator/0": info}).as_juju(), "coordinator/0")
    assert list(found) == ["w/0"]
    assert found["w/0"].metrics_endpoint is not None


def test_published_mesh_policies_parses_the_wire_format():
    wire = [
        {
            "source_namespace": NS,
            "source_app_name": "prometheus",
            "target_namespace": NS,
            "target_app_name": "coordinator",
            "target_selector_labels": None,
            "target_service": None,
            "target_type": "unit",
            "endpoints": [{"hosts": None, "ports": [9113], "methods": None, "paths": None}],
        }
    ]
    info = _show_unit(
        "istio-beacon/0", "service-mesh", {"policies": json.dumps(wire)}, {"coordinator/0": {}}
    )
    juju = LocalJuju({"istio-beacon/0": info}).as_juju()
    [policy] = published_mesh_policies(juju, "istio-beacon/0", "coordinator")
    assert policy.target_type is PolicyTargetType.unit
    assert policy.to_wire() == wire[0]


def test_beacon_labels_read_the_beacons_databag():
    labels = {
        "istio.io/dataplane-mode": "ambient",
        "istio.io/use-waypoint": f"{NS}-istio-beacon-waypoint",
        "istio.io/use-waypoint-namespace": NS,
    }
    # service_mesh provider databag: JSON strings, mesh_type with its quotes, extra keys ignored.
    beacon = {"labels": json.dumps(labels), "mesh_type": '"istio"', "future": "x"}
    info = _show_unit("coordinator/0", "service-mesh", beacon, {"istio-beacon/0": {}})
    empty = _show_unit("coordinator/1", "service-mesh", {}, {"istio-beacon/0": {}})
    juju = LocalJuju({"coordinator/0": info, "coordinator/1": empty}).as_juju()
    assert beacon_labels(juju, "coordinator/0", "istio-beacon") == labels
    assert beacon_labels(juju, "coordinator/1", "istio-beacon") == {}


# --- Kubernetes views (AuthorizationPolicy objects) ----------------------------------------------

METRICS_PATH = "/proxy/worker/{*}/metrics"


def _view(obj: Mapping[str, Any]) -> PolicyView:
    return PolicyView.from_resource(obj)


def _cluster_pods(coordinator: str = "coordinator") -> dict[str, str]:
    return {"app.kubernetes.io/part-of": coordinator}


def test_policy_view_reads_the_beacons_l7_policy():
    view = _view(
        fx.l7_policy(
            "p",
            namespace=NS,
            source_app="prometheus",
            service="coordinator",
            operations=[{"ports": ["8080"], "methods": ["GET"], "paths": [METRICS_PATH]}],
        )
    )
    assert view.principals == (principal(NS, "prometheus"),)
    assert view.targets == (service_target("coordinator"),)
    assert (view.ports, view.action) == (("8080",), "ALLOW")
    assert view.operations == (Operation(("8080",), ("GET",), (METRICS_PATH,)),)
    assert "prometheus -> service:coordinator ports 8080 (ports=8080 methods=GET paths=" in str(
        view
    )


def test_policy_view_reads_an_l4_policy_with_and_without_ports():
    with_ports = _view(
        fx.l4_policy(
            "u",
            namespace=NS,
            source_app="prometheus",
            match_labels={"app.kubernetes.io/name": "coordinator"},
            ports=["9113"],
        )
    )
    any_port = _view(
        fx.l4_policy("c", namespace=NS, source_app="worker-a", match_labels=_cluster_pods())
    )
    assert with_ports.targets == (selector_target({"app.kubernetes.io/name": "coordinator"}),)
    assert with_ports.operations == (Operation(ports=("9113",)),)
    assert (any_port.operations, any_port.ports) == ((), ())


def _cluster_policies(workers: list[str]) -> list[PolicyView]:
    views = [
        _view(
            fx.l4_policy("c", namespace=NS, source_app="coordinator", match_labels=_cluster_pods())
        )
    ]
    for w in workers:
        views.append(
            _view(
                fx.l4_policy(f"{w}-pods", namespace=NS, source_app=w, match_labels=_cluster_pods())
            )
        )
        views.append(
            _view(
                fx.l7_policy(
                    f"{w}-svc", namespace=NS, source_app=w, service="coordinator", operations=[]
                )
            )
        )
    return views


def test_cluster_internal_policies_pick_the_cluster_set_and_nothing_else():
    beacon = _view(
        fx.l7_policy(
            "beacon",
            namespace=NS,
            source_app="prometheus",
            service="coordinator",
            operations=[{"ports": ["8080"]}],
        )
    )
    other = _view(
        fx.l7_policy(
            "other", namespace=NS, source_app="worker-a", service="somebody-else", operations=[]
        )
    )
    views = [*_cluster_policies(["worker-a", "worker-b"]), beacon, other]
    internal = cluster_internal_policies(
        views,
        namespace=NS,
        coordinator="coordinator",
        cluster_apps=["coordinator", "worker-a", "worker-b"],
    )
    wanted = expected_cluster_internal(
        namespace=NS, coordinator="coordinator", workers=["worker-a", "worker-b"]
    )
    assert len(internal) == len(wanted) == 5
    assert set[tuple[str, str]]().union(*(p.pairs() for p in internal)) == wanted
    assert (selector_target(_cluster_pods()), principal(NS, "coordinator")) in wanted


def test_leftovers_of_a_removed_worker_are_not_the_expected_set():
    views = _cluster_policies(["worker-a", "worker-b"])
    internal = cluster_internal_policies(
        views,
        namespace=NS,
        coordinator="coordinator",
        cluster_apps=["coordinator", "worker-a", "worker-b"],
    )
    wanted = expected_cluster_internal(
        namespace=NS, coordinator="coordinator", workers=["worker-a"]
    )
    assert set[tuple[str, str]]().union(*(p.pairs() for p in internal)) != wanted


def _mesh_policy(target_type: PolicyTargetType, endpoint: Endpoint) -> MeshPolicy:
    return MeshPolicy(
        source_namespace=NS,
        source_app_name="prometheus",
        target_namespace=NS,
        target_app_name="coordinator",
        target_type=target_type,
        endpoints=[endpoint],
    )


def test_find_policy_for_wants_exactly_the_published_operations():
    app_policy = _mesh_policy(
        PolicyTargetType.app, Endpoint(ports=[8080], methods=[Method.get], paths=[METRICS_PATH])
    )
    unit_policy = _mesh_policy(PolicyTargetType.unit, Endpoint(ports=[9113]))

    def l7(name: str, *operations: Mapping[str, list[str]]) -> PolicyView:
        return _view(
            fx.l7_policy(
                name,
                namespace=NS,
                source_app="prometheus",
                service="coordinator",
                operations=operations,
            )
        )

    exact = l7("exact", {"ports": ["8080"], "methods": ["GET"], "paths": [METRICS_PATH]})
    allow_all = l7("allow-all")  # no `to`: any request of the principal; L7 not enforced at all
    ports_only = l7("ports-only", {"ports": ["8080"]})
    more_methods = l7(
        "more", {"ports": ["8080"], "methods": ["DELETE", "GET"], "paths": [METRICS_PATH]}
    )
    l4 = _view(
        fx.l4_policy(
            "l4",
            namespace=NS,
            source_app="prometheus",
            match_labels={"app.kubernetes.io/name": "coordinator"},
            ports=["9113"],
        )
    )
    assert find_policy_for(app_policy, [l4, allow_all, ports_only, more_methods, exact]) == exact
    assert find_policy_for(app_policy, [allow_all, ports_only, more_methods]) is None
    assert find_policy_for(unit_policy, [exact, l4]) == l4
    assert find_policy_for(unit_policy, [exact]) is None


def test_label_problems_names_missing_wrong_and_unwanted_labels():
    problems = label_problems(
        "pod p",
        {"a": "1", "b": "2", "gone": "x"},
        required={"a": "1", "b": "3", "c": "4"},
        absent=["gone"],
    )
    assert problems == [
        "pod p: b='2', want '3'",
        "pod p: c=None, want '4'",
        "pod p: has gone='x', want it gone",
    ]


# --- juju models, and the controller gate --------------------------------------------------------


def test_juju_models_is_read_by_model_type_not_provider_type():
    models = ModelList.from_json(json.loads(fx.models_after_bootstrap_microk8s()))
    own = models.controller_model
    assert own is not None
    assert (own.short_name, own.model_type, own.provider_type) == (
        "controller",
        "caas",
        "kubernetes",
    )
    assert (models.current, models.workload_models()) == ("controller", ())
    lxd = ModelList.from_json(json.loads(fx.models_on_lxd_controller())).controller_model
    assert lxd is not None and (lxd.model_type, lxd.provider_type) == ("iaas", "lxd")


def test_juju_models_without_optional_keys():
    entry = fx.model_summary("mesh", provider_type="")
    del entry["model-type"]
    [model] = ModelList.from_json({"models": [entry]}).models
    assert (model.name, model.short_name, model.model_type, model.provider_type) == (
        "admin/mesh",
        "mesh",
        "",
        "",
    )
    assert ModelList.from_json({"models": [entry]}).current is None
    assert ModelList.from_json({}).models == ()


def _fake_juju(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    juju = tmp_path / "juju"
    juju.write_text("#!/bin/sh\n" + script)
    juju.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


def _juju_printing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, document: str) -> None:
    """A ``juju`` that prints ``document`` (only shell builtins: ``PATH`` is ``tmp_path``)."""
    _fake_juju(tmp_path, monkeypatch, f"echo {shlex.quote(document)}\n")


def test_gate_without_juju(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "juju CLI is not installed" in (controller_problem(None, None) or "")


def test_gate_without_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_juju(tmp_path, monkeypatch, 'echo "ERROR No controllers registered." >&2; exit 1\n')
    assert "No controllers registered" in (controller_problem(None, None) or "")


def test_gate_passes_microk8s_whose_provider_type_is_kubernetes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The regression: `type` is "kubernetes" here, and reading it as the model type skipped
    # every live test on microk8s as "a machine cloud".
    _juju_printing(tmp_path, monkeypatch, fx.models_after_bootstrap_microk8s())
    assert controller_problem(None, None) is None


def test_gate_on_a_machine_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _juju_printing(tmp_path, monkeypatch, fx.models_on_lxd_controller())
    assert "machine cloud (localhost, model-type iaas)" in (controller_problem(None, None) or "")
    assert controller_problem(None, "my-k8s") is None


def test_gate_lets_an_unknown_model_type_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    entry = fx.model_summary("controller", provider_type="lxd")
    del entry["model-type"]
    _juju_printing(tmp_path, monkeypatch, fx.models_json(entry))
    assert controller_problem(None, None) is None


def test_gate_asks_the_named_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    document = shlex.quote(fx.models_after_bootstrap_microk8s())
    script = f'[ "$4" = "--controller" ] && [ "$5" = "k" ] || exit 3\necho {document}\n'
    _fake_juju(tmp_path, monkeypatch, script)
    assert controller_problem("k", None) is None
    assert "no reachable Juju controller" in (controller_problem("other", None) or "")


# --- settings, channels and charms ---------------------------------------------------------------


def test_channels_pin_a_track_for_every_charm_deployed():
    risks = ("stable", "candidate", "beta", "edge")
    for charm, channel in CHANNELS.items():
        track, _, risk = channel.partition("/")
        assert track and track != "latest" and risk in risks, f"{charm}: {channel}"
    assert set(it_settings.CHANNEL_VARIABLES) == set(CHANNELS)


def test_settings_defaults_and_overrides():
    default = Settings.from_env({})
    assert default.channels == dict(CHANNELS)
    assert default.channel(charm_sources.ISTIO) == CHANNELS["istio-k8s"]
    assert (default.istio_app, default.istio_platform, default.timeout(10)) == (
        "istio-k8s",
        None,
        10,
    )
    custom = Settings.from_env(
        {
            "MESH_TEST_ISTIO_PLATFORM": "",
            "MESH_TEST_TIMEOUT_SCALE": "2.5",
            "MESH_TEST_GRAFANA_CHANNEL": "3/stable",
            "MESH_TEST_LOKI_CHANNEL": " ",
        }
    )
    assert (custom.istio_platform, custom.timeout(10)) == ("", 25)
    assert custom.channel(charm_sources.GRAFANA) == "3/stable"
    assert custom.channel(charm_sources.LOKI) == CHANNELS["loki-k8s"]
    with pytest.raises(ValueError, match="MESH_TEST_TIMEOUT_SCALE"):
        Settings.from_env({"MESH_TEST_TIMEOUT_SCALE": "fast"})


def test_oci_resources_come_from_charmcraft_yaml():
    assert sorted(oci_resources("coordinator")) == [
        "nginx-image",
        "nginx-prometheus-exporter-image",
    ]
    assert oci_resources("worker")["prometheus-image"].startswith("ubuntu/prometheus:")
    assert COORDINATOR.resources() == oci_resources("coordinator")


def test_find_built_charm_prefers_this_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(it_settings, "_juju_arch", lambda: "amd64")
    other = tmp_path / "mesh-worker-k8s_ubuntu@24.04-arm64.charm"
    native = tmp_path / "mesh-worker-k8s_ubuntu@24.04-amd64.charm"
    native.write_text("x")
    other.write_text("x")  # newer, but not ours
    assert find_built_charm("mesh-worker-k8s", tmp_path) == native
    assert find_built_charm("mesh-coordinator-k8s", tmp_path) is None


def test_resolve_charms_takes_given_paths_and_rejects_missing(tmp_path: Path):
    coordinator, worker = tmp_path / "c.charm", tmp_path / "w.charm"
    coordinator.write_text("x")
    worker.write_text("x")
    env = {"COORDINATOR_CHARM": str(coordinator), "WORKER_CHARM": str(worker)}
    assert resolve_charms(Settings.from_env(env)) == (coordinator, worker)
    env["WORKER_CHARM"] = str(tmp_path / "missing.charm")
    with pytest.raises(FileNotFoundError, match=r"WORKER_CHARM=.*missing\.charm does not exist"):
        resolve_charms(Settings.from_env(env))


# --- which charmcraft packs ----------------------------------------------------------------------


def test_pack_prefers_the_charmcraft_snap(tmp_path: Path):
    snap = tmp_path / "snap-bin-charmcraft"
    snap.write_text("#!/bin/sh\n")
    snap.chmod(0o755)
    found = pack.find_charmcraft(snap, which=lambda _: "/venv/bin/charmcraft")
    assert (found.command, found.is_snap) == (str(snap), True)
    assert "charmcraft snap" in found.note


def test_pack_falls_back_to_the_path_with_a_warning(tmp_path: Path):
    not_executable = tmp_path / "charmcraft"
    not_executable.write_text("")
    for snap in (tmp_path / "missing", not_executable):
        found = pack.find_charmcraft(snap, which=lambda _: "/venv/bin/charmcraft")
        assert (found.command, found.is_snap) == ("/venv/bin/charmcraft", False)
        assert found.note.startswith("warning: /venv/bin/charmcraft is not the charmcraft snap")
        assert "latest/stable" in found.note and "snap install charmcraft --classic" in found.note
    with pytest.raises(pack.StagingError, match="charmcraft is not installed"):
        pack.find_charmcraft(tmp_path / "missing", which=lambda _: None)


# --- tools/deploy.py: observe, plan, apply, wait -------------------------------------------------

MESH_RESOURCES = {"coordinator": oci_resources("coordinator"), "worker": oci_resources("worker")}
ISTIO_CHANNEL = CHANNELS[charm_sources.ISTIO]
BEACON_CHANNEL = CHANNELS[charm_sources.BEACON]


def _answers(models: str, statuses: Mapping[str, Mapping[str, Any]]):
    answers: dict[tuple[str, str | None], str] = {("models", None): models}
    for model, doc in statuses.items():
        answers[("status", f"admin/{model}")] = json.dumps(doc)
    return answers


def _observe(models: str, statuses: Mapping[str, Mapping[str, Any]]) -> deploy.Observed:
    """``deploy.observe`` over recorded ``juju models`` and ``juju status`` output."""
    answers = _answers(models, statuses)
    return deploy.observe(lambda model: CannedJuju(model, answers), None)


def _fresh() -> deploy.Observed:
    return _observe(fx.models_after_bootstrap_microk8s(), {})


def _deployed(mesh: Mapping[str, Any] | None = None) -> deploy.Observed:
    models = fx.models_json(
        fx.model_summary("controller"),
        fx.model_summary("istio-system"),
        fx.model_summary("mesh"),
        current="controller",
    )
    return _observe(
        models, {"istio-system": fx.istio_model_status(), "mesh": mesh or fx.mesh_model_status()}
    )


def _status(doc: Mapping[str, Any]) -> jubilant.Status:
    """A ``juju status`` document through jubilant's own parser."""
    return CannedJuju("m", {("status", "m"): json.dumps(doc)}).status()


def test_observe_reads_every_workload_model_not_the_controllers():
    observed = _deployed()
    assert sorted(observed.statuses) == ["istio-system", "mesh"]
    assert observed.statuses["mesh"].apps["coordinator"].charm_name == "mesh-coordinator-k8s"
    assert observed.statuses["mesh"].model.type == "caas"  # in `juju status`, `type` is caas
    assert deploy.find_istio(observed) == ("istio-system", "istio-k8s")


def test_plan_for_a_fresh_controller():
    the_plan = deploy.plan(_fresh(), deploy.Choices())
    assert the_plan.steps == (
        deploy.AddModel("istio-system"),
        deploy.Deploy("istio-system", "istio-k8s", "istio-k8s", channel=ISTIO_CHANNEL),
        deploy.AddModel("mesh"),
        deploy.Pack(COORDINATOR),
        deploy.Pack(WORKER),
        deploy.Deploy("mesh", "coordinator", COORDINATOR, resources=MESH_RESOURCES["coordinator"]),
        deploy.Deploy("mesh", "worker", WORKER, resources=MESH_RESOURCES["worker"]),
        deploy.Deploy("mesh", "istio-beacon", "istio-beacon-k8s", channel=BEACON_CHANNEL),
        deploy.Integrate("mesh", "worker:cluster", "coordinator:cluster"),
        deploy.Integrate("mesh", "coordinator:service-mesh", "istio-beacon:service-mesh"),
    )
    deploys = [s for s in the_plan.steps if isinstance(s, deploy.Deploy)]
    assert all(d.trust for d in deploys), "everything is deployed with --trust"
    assert (ISTIO_CHANNEL, BEACON_CHANNEL) == ("2/edge", "2/edge")
    assert the_plan.wait == (
        deploy.WaitTarget("istio-system", (), ("istio-k8s",)),
        deploy.WaitTarget("mesh", ("coordinator", "worker"), ("istio-beacon",)),
    )
    assert "(new)" in the_plan.istio
    assert str(deploys[0]) == (
        f"juju deploy -m istio-system istio-k8s istio-k8s --channel {ISTIO_CHANNEL} --trust"
    )


def test_plan_for_a_second_run_changes_nothing():
    the_plan = deploy.plan(_deployed(), deploy.Choices())
    assert the_plan.steps == ()
    assert the_plan.wait == (
        deploy.WaitTarget("istio-system", (), ("istio-k8s",)),
        deploy.WaitTarget("mesh", ("coordinator", "worker"), ("istio-beacon",)),
    )
    assert (
        the_plan.istio == "istio-k8s application istio-k8s in model istio-system (already deployed)"
    )
    text = deploy.summary(the_plan, deploy.Choices(), retried=())
    assert "Did nothing: everything was already there." in text
    assert text.endswith(
        "Next:\n  juju status -m mesh --relations\n  juju run -m mesh coordinator/leader show-mesh"
    )


def test_plan_finishes_a_half_done_run_with_given_charms(tmp_path: Path):
    half = fx.status_json(
        "mesh",
        {
            "coordinator": fx.app_json(
                "mesh-coordinator-k8s", units={"coordinator/0": fx.unit_json("blocked")}
            )
        },
    )
    models = fx.models_json(
        fx.model_summary("controller"), fx.model_summary("cos"), fx.model_summary("mesh")
    )
    istio_elsewhere = fx.status_json(
        "cos",
        {"istio": fx.app_json("istio-k8s", channel="2/edge", units={"istio/0": fx.unit_json()})},
    )
    observed = _observe(models, {"mesh": half, "cos": istio_elsewhere})
    worker_charm = tmp_path / "mesh-worker-k8s_amd64.charm"
    the_plan = deploy.plan(observed, deploy.Choices(charm_files={"worker": worker_charm}))
    assert the_plan.steps == (
        deploy.Deploy(
            "mesh", "worker", WORKER, resources=MESH_RESOURCES["worker"], path=worker_charm
        ),
        deploy.Deploy("mesh", "istio-beacon", "istio-beacon-k8s", channel=BEACON_CHANNEL),
        deploy.Integrate("mesh", "worker:cluster", "coordinator:cluster"),
        deploy.Integrate("mesh", "coordinator:service-mesh", "istio-beacon:service-mesh"),
    )
    assert the_plan.wait[0] == deploy.WaitTarget("cos", (), ("istio",))


def test_plan_with_refresh_repacks_and_refreshes_only_our_charms():
    the_plan = deploy.plan(_deployed(), deploy.Choices(refresh=True))
    assert the_plan.steps == (
        deploy.Pack(COORDINATOR),
        deploy.Pack(WORKER),
        deploy.Refresh("mesh", "coordinator", COORDINATOR, MESH_RESOURCES["coordinator"]),
        deploy.Refresh("mesh", "worker", WORKER, MESH_RESOURCES["worker"]),
    )


def test_plan_on_a_machine_controller_needs_a_kubernetes_cloud():
    observed = _observe(fx.models_on_lxd_controller(), {})
    with pytest.raises(deploy.PlanError, match=r"machine cloud \(localhost\).*--cloud"):
        deploy.plan(observed, deploy.Choices())
    steps = deploy.plan(observed, deploy.Choices(cloud="k8s", deploy_istio=False)).steps
    assert steps[0] == deploy.AddModel("mesh", "k8s")
    assert str(steps[0]) == "juju add-model mesh k8s"


@pytest.mark.parametrize(
    ("choices", "match"),
    [
        (deploy.Choices(model="controller"), "nothing goes in the controller model"),
        (deploy.Choices(istio_model="controller"), "nothing goes in the controller model"),
        (deploy.Choices(model="admin/controller"), "is the controller's model"),
        (deploy.Choices(istio_model="mesh"), "must differ from --model"),
        (deploy.Choices(beacon="worker"), "runs mesh-worker-k8s, not istio-beacon-k8s"),
        (deploy.Choices(coordinator="istio-beacon"), "runs istio-beacon-k8s, not mesh-coord"),
    ],
)
def test_plan_refuses(choices: deploy.Choices, match: str):
    with pytest.raises(deploy.PlanError, match=match):
        deploy.plan(_deployed(), choices)


def test_plan_refuses_a_machine_model_and_a_taken_istio_name():
    models = fx.models_json(
        fx.model_summary("controller"),
        fx.model_summary("mesh", model_type="iaas", provider_type="lxd"),
    )
    with pytest.raises(deploy.PlanError, match=r"machine \(iaas\) model"):
        deploy.plan(_observe(models, {"mesh": fx.status_json("mesh", {})}), deploy.Choices())
    models = fx.models_json(fx.model_summary("controller"), fx.model_summary("istio-system"))
    squatter = fx.status_json(
        "istio-system",
        {
            "istio-k8s": fx.app_json(
                "loki-k8s", channel="2/edge", units={"istio-k8s/0": fx.unit_json()}
            )
        },
    )
    with pytest.raises(deploy.PlanError, match="is not istio-k8s"):
        deploy.plan(_observe(models, {"istio-system": squatter}), deploy.Choices())


def test_apply_takes_the_steps_through_jubilant(tmp_path: Path):
    choices = deploy.Choices(istio_config={"platform": ""})
    the_plan = deploy.plan(_fresh(), choices)
    calls: list[tuple[str | None, tuple[str, ...]]] = []
    packed: list[str] = []

    def pack_charm(charm: charm_sources.LocalCharm) -> Path:
        packed.append(charm.directory)
        return tmp_path / f"{charm.name}_amd64.charm"

    said: list[str] = []
    deploy.apply(
        the_plan.steps, lambda model: CannedJuju(model, calls=calls), pack_charm, said.append
    )
    assert packed == ["coordinator", "worker"]

    def resources(charm: str) -> list[str]:
        return [a for k, v in MESH_RESOURCES[charm].items() for a in ("--resource", f"{k}={v}")]

    coordinator_file = str(tmp_path / "mesh-coordinator-k8s_amd64.charm")
    worker_file = str(tmp_path / "mesh-worker-k8s_amd64.charm")
    assert calls == [
        (None, ("add-model", "--no-switch", "istio-system")),
        (
            "istio-system",
            (
                "deploy",
                "istio-k8s",
                "istio-k8s",
                "--channel",
                ISTIO_CHANNEL,
                "--config",
                "platform=",
                "--trust",
            ),
        ),
        (None, ("add-model", "--no-switch", "mesh")),
        ("mesh", ("deploy", coordinator_file, "coordinator", *resources("coordinator"), "--trust")),
        ("mesh", ("deploy", worker_file, "worker", *resources("worker"), "--trust")),
        (
            "mesh",
            ("deploy", "istio-beacon-k8s", "istio-beacon", "--channel", BEACON_CHANNEL, "--trust"),
        ),
        ("mesh", ("integrate", "worker:cluster", "coordinator:cluster")),
        ("mesh", ("integrate", "coordinator:service-mesh", "istio-beacon:service-mesh")),
    ]
    assert said[0] == "- juju add-model istio-system"
    assert f"  packed {tmp_path / 'mesh-worker-k8s_amd64.charm'}" in said


def test_charm_files_come_from_the_environment(tmp_path: Path):
    given = tmp_path / "c.charm"
    given.write_text("x")
    assert deploy._charm_files({"COORDINATOR_CHARM": str(given), "WORKER_CHARM": ""}) == {
        "coordinator": given
    }
    with pytest.raises(deploy.PlanError, match=r"WORKER_CHARM=.*nope\.charm: no such file"):
        deploy._charm_files({"WORKER_CHARM": str(tmp_path / "nope.charm")})


BEACON_HOOK_ERROR = 'hook failed: "service-mesh-relation-changed"'


def test_assess_tells_ours_from_others():
    verdict = deploy.assess(
        _status(fx.mesh_model_status(beacon="error", beacon_message=BEACON_HOOK_ERROR)),
        ours=("coordinator", "worker"),
        others=("istio-beacon",),
    )
    beacon_line = f"istio-beacon/0 error/idle: {BEACON_HOOK_ERROR}"
    assert (verdict.failures, verdict.retried, verdict.pending) == (
        (),
        (beacon_line,),
        (beacon_line,),
    )
    ours = deploy.assess(
        _status(fx.mesh_model_status(coordinator="error", worker="blocked")),
        ours=("coordinator", "worker", "missing"),
        others=(),
    )
    assert ours.failures == ("coordinator/0 error/idle",)
    assert ours.pending == (
        "coordinator/0 error/idle",
        "worker/0 blocked/idle",
        "missing: not in the model yet",
    )
    assert deploy.assess(_status(fx.mesh_model_status()), ("coordinator",), ("worker",)).ready


class _Time:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _wait(statuses: list[Any], *, timeout: float = 60) -> tuple[tuple[str, ...], list[str]]:
    """``wait_settled`` on the mesh model, fetching ``statuses`` in turn (the last one repeats)."""
    clock, said = _Time(), list[str]()
    queue = list(statuses)

    def fetch(model: str) -> jubilant.Status:
        assert model == "mesh"
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return _status(item)

    target = deploy.WaitTarget("mesh", ("coordinator", "worker"), ("istio-beacon",))
    seen = deploy.wait_settled(
        [target],
        fetch,
        timeout=timeout,
        delay=5,
        successes=2,
        clock=clock.clock,
        sleep=clock.sleep,
        say=said.append,
    )
    return seen, said


def test_wait_retries_the_beacons_transient_errors_and_reports_them():
    crd_missing = 'hook failed: "config-changed"'
    busy = jubilant.CLIError(1, ["juju", "status"], "", "ERROR connection is shut down\n")
    seen, said = _wait(
        [
            fx.mesh_model_status(beacon="error", beacon_message=crd_missing),
            busy,
            fx.mesh_model_status(beacon="error", beacon_message=BEACON_HOOK_ERROR),
            fx.mesh_model_status(beacon="maintenance"),
            fx.mesh_model_status(),
        ]
    )
    assert seen == (
        f"mesh: istio-beacon/0 error/idle: {crd_missing}",
        f"mesh: istio-beacon/0 error/idle: {BEACON_HOOK_ERROR}",
    )
    assert f"  not ours, Juju retries it: mesh: istio-beacon/0 error/idle: {crd_missing}" in said
    assert "  waiting for: mesh: juju status: ERROR connection is shut down" in said


def test_wait_fails_at_once_on_an_error_of_ours():
    with pytest.raises(deploy.DeployError, match=r"our charms are in error.*\n  mesh: worker/0"):
        _wait([fx.mesh_model_status(worker="error"), fx.mesh_model_status()])


def test_wait_fails_at_the_deadline_saying_what_it_waited_for():
    stuck = fx.mesh_model_status(beacon="error", beacon_message=BEACON_HOOK_ERROR)
    with pytest.raises(deploy.DeployError) as failed:
        _wait([stuck], timeout=30)
    message = str(failed.value)
    assert message.startswith("not settled after 30s; still waiting for:\n  mesh: istio-beacon/0")
    assert f"(retried by Juju):\n  mesh: istio-beacon/0 error/idle: {BEACON_HOOK_ERROR}" in message


def test_summary_says_what_was_done_and_what_next():
    the_plan = deploy.plan(_fresh(), deploy.Choices(model="demo"))
    text = deploy.summary(the_plan, deploy.Choices(model="demo"), ["mesh: x"], controller="dev")
    assert text.splitlines()[:3] == [
        "Done: coordinator, worker and istio-beacon are active in model dev:demo; Istio: "
        "istio-k8s application istio-k8s in model istio-system (new).",
        "Did:",
        "  1. juju add-model istio-system",
    ]
    assert "retried by Juju, now settled):\n  mesh: x\nNext:" in text
    assert "  juju run -m dev:demo coordinator/leader show-mesh" in text


def test_deploy_without_juju_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert deploy.main([], environ={}) == 1
    assert "the juju CLI is not installed" in capsys.readouterr().err


def test_deploy_dry_run_observes_and_plans_without_changing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    log = tmp_path / "calls"
    document = shlex.quote(fx.models_after_bootstrap_microk8s())
    script = f'echo "$*" >> {log}\n[ "$1" = models ] && echo {document}\nexit 0\n'
    _fake_juju(tmp_path, monkeypatch, script)
    assert deploy.main(["--dry-run", "--model", "demo"], environ={}) == 0
    out = capsys.readouterr().out
    assert "Istio: istio-k8s application istio-k8s in model istio-system (new)" in out
    assert "  3. juju add-model demo\n" in out
    assert log.read_text() == "models --format json\n"
