"""The integration tests' own helpers, checked without Juju or Kubernetes.

A wrong helper would make the integration tests pass for the wrong reason (a DNS error counted as
"denied", a policy matched on the wrong target, a controller judged by the wrong key), so the
helpers are tested here, offline: the in-pod probe program runs for real (through ``bash``, as
``juju exec`` runs it) against a local HTTP server, and the readers of Juju and Kubernetes output
run on fixtures of the documented shapes (``it_fixtures``, each stating its source), parsed by the
same code as live (jubilant's own parsers included).
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

import it_fixtures as fx
import it_settings
import jubilant
import pack
import pytest
from coordinated_mesh.policies import Endpoint, MeshPolicy, Method, PolicyTargetType
from it_juju import (
    NotReadyError,
    ProbeResult,
    beacon_labels,
    controller_problem,
    eventually,
    expect_denied,
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
from it_settings import Settings, find_built_charm, oci_resources, resolve_charms
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

    def do_GET(self) -> None:
        if self.path.startswith("/echo"):
            code, body = 200, self.path.encode()
        else:
            code, body = self.routes.get(self.path, (404, b"not found"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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


def test_expect_reached_waits_for_the_wanted_status(server: str):
    juju = LocalJuju().as_juju()
    assert expect_reached(juju, "app/0", f"{server}/ok", timeout=5).status == 200
    with pytest.raises(AssertionError, match=r"(?s)HTTP 200\): still not true.*HTTP 403"):
        expect_reached(juju, "app/0", f"{server}/rbac", timeout=0)


def test_probe_result_describes_itself():
    text = str(ProbeResult(source="a/0", url="http://x", error="connection", detail="reset"))
    assert text == "a/0 -> http://x: connection error (reset)"


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

    jobs = [{"job_name": "nginx", "static_configs": [{"targets": ["*:9113"]}]}, job("w-b/0")]
    jobs.append(job("w-a/1"))
    info = _show_unit(
        "prometheus/0", "metrics-endpoint", {"scrape_jobs": json.dumps(jobs)}, {"coordinator/0": {}}
    )
    juju = LocalJuju({"prometheus/0": info}).as_juju()
    assert proxied_metrics_urls(juju, "prometheus/0", "coordinator") == {
        "w-a/1": f"http://coordinator.{NS}.svc.cluster.local:8080/proxy/worker/w-a-1/metrics",
        "w-b/0": f"http://coordinator.{NS}.svc.cluster.local:8080/proxy/worker/w-b-0/metrics",
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


# --- settings and charms --------------------------------------------------------------------------


def test_settings_defaults_and_overrides():
    default = Settings.from_env({})
    assert (default.istio_channel, default.beacon_channel, default.istio_app) == (
        "2/edge",
        "2/edge",
        "istio-k8s",
    )
    assert default.prometheus_channel is None and default.istio_platform is None
    assert default.timeout(10) == 10
    custom = Settings.from_env({"MESH_TEST_ISTIO_PLATFORM": "", "MESH_TEST_TIMEOUT_SCALE": "2.5"})
    assert (custom.istio_platform, custom.timeout(10)) == ("", 25)
    with pytest.raises(ValueError, match="MESH_TEST_TIMEOUT_SCALE"):
        Settings.from_env({"MESH_TEST_TIMEOUT_SCALE": "fast"})


def test_oci_resources_come_from_charmcraft_yaml():
    assert sorted(oci_resources("coordinator")) == [
        "nginx-image",
        "nginx-prometheus-exporter-image",
    ]
    assert oci_resources("worker")["prometheus-image"].startswith("ubuntu/prometheus:")


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
