"""Charm traces (``ops[tracing]``): spans of a real hook arrive, decoded, at an OTLP receiver.

Each hook runs the real charm under ``ops.testing`` with ops' real trace exporter (the buffer in
the charm directory, the HTTP export at the end of the dispatch) rather than the in-memory one
``ops.testing`` puts in its place. The worker's spans go through real nginx, rendered by the
library from the coordinator's plan (``/proxy/charm-tracing/otlp_http/``); the coordinator's go
straight to its ``charm-tracing`` backend. Both stop when their receiver goes.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import opentelemetry.trace
import ops_tracing._export
import ops_tracing._mock
import pytest
from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import render_nginx_config
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    build_telemetry_proxy,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from ops import testing

from tests.support.coordinator import APP as COORDINATOR_APP
from tests.support.coordinator import MODEL, FakeKubernetes, coordinator_charm_type, state
from tests.support.nginx import RunningNginx, free_port, nginx_settings, wait_for_port
from tests.support.otlp import OtlpReceiver, otlp_receiver
from tests.support.worker import FakeLabels, worker_charm_type

IDENTITY = CoordinatorIdentity(COORDINATOR_APP, MODEL.name, MODEL.uuid)
WORKER_APP = "mesh-worker-k8s"


def _unbind_module_tracers() -> None:
    """Make every module-level ``ProxyTracer`` (``ops``' ``tracer = get_tracer(...)``) bind to
    the tracer provider of the next run: each caches the first provider it saw, which a real
    dispatch (one process, one provider) never notices but a second run in this process does."""
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            if isinstance(value, opentelemetry.trace.ProxyTracer):
                value._real_tracer = None


@pytest.fixture
def real_trace_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ops set up its real exporter in every run instead of ``ops.testing``'s mock.

    ``ops.testing`` enters ``ops_tracing._mock.patch_tracing()`` around each run; this one lets
    OpenTelemetry accept the run's own tracer provider (set once per process otherwise), as in a
    real dispatch, and puts everything back afterwards.
    """

    @contextlib.contextmanager
    def real_tracing() -> Generator[InMemorySpanExporter]:
        saved = opentelemetry.trace._TRACER_PROVIDER
        once = opentelemetry.trace._TRACER_PROVIDER_SET_ONCE
        saved_done = once._done
        once._done = False
        _unbind_module_tracers()
        try:
            yield InMemorySpanExporter()  # what ops.testing reads its trace_data from: empty
        finally:
            opentelemetry.trace._TRACER_PROVIDER = saved
            once._done = saved_done
            _unbind_module_tracers()

    monkeypatch.setattr(ops_tracing._mock, "patch_tracing", real_tracing)
    # ops gives each export 1 s, then keeps the spans buffered for a later dispatch; a cold first
    # POST through nginx on a busy 2-core runner can take longer. The test wants this hook's.
    monkeypatch.setattr(ops_tracing._export, "EXPORT_TIMEOUT", 10)


def _eventually_spans(receiver: OtlpReceiver, count: int, what: str) -> None:
    deadline = time.monotonic() + 20
    while len(receiver.spans) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no spans of {what}: {receiver.requests}")
        time.sleep(0.1)


def _cluster(proxied_otlp_http: str | None) -> testing.Relation:
    receivers = {"otlp_http": proxied_otlp_http} if proxied_otlp_http else {}
    data: dict[str, Any] = {
        "worker_labels": {"app.kubernetes.io/part-of": COORDINATOR_APP},
        "loki_endpoints": {},
        "remote_write_endpoints": [],
        "charm_tracing_receivers": receivers,
        "workload_tracing_receivers": {},
    }
    return testing.Relation(
        "cluster",
        remote_app_name=COORDINATOR_APP,
        remote_app_data={k: json.dumps(v) for k, v in data.items()},
    )


def _worker_state(*relations: testing.Relation) -> testing.State:
    return testing.State(
        leader=True,
        model=MODEL,
        relations=list(relations),
        containers=[testing.Container("prometheus", can_connect=False)],
    )


def test_worker_spans_reach_the_receiver_through_the_proxy(
    real_trace_export: None, nginx_bin: str, tmp_path: Path, fake_dns: str
):
    proxy_port = free_port()
    with otlp_receiver() as receiver:
        # A name (the test DNS resolves it to loopback): a loopback backend is refused.
        receiver_url = f"http://tempo.test:{receiver.port}"
        plan = build_telemetry_proxy(
            TelemetryProxyInputs(
                identity=IDENTITY,
                config=WorkerTelemetryProxyConfig(http_port=proxy_port, https_port=proxy_port),
                backend_charm_tracing_receivers={"otlp_http": receiver_url},
                resolvers=[fake_dns],
            )
        )
        assert plan.problems == ()
        proxied = plan.proxied_telemetry.charm_tracing_receivers["otlp_http"]
        assert proxied.endswith("/proxy/charm-tracing/otlp_http")
        proxied = proxied.replace(f"{IDENTITY.service_fqdn}:", "127.0.0.1:")
        nginx_dir = tmp_path / "nginx"
        nginx_dir.mkdir()
        nginx = RunningNginx(
            nginx_bin,
            nginx_dir,
            render_nginx_config(plan, nginx_settings(nginx_dir, access_log=True)),
        )
        try:
            wait_for_port(proxy_port)
            charm_root = tmp_path / "worker-charm"
            charm_root.mkdir()
            ctx = testing.Context(worker_charm_type(FakeLabels()), charm_root=charm_root)
            relation = _cluster(proxied)
            out = ctx.run(ctx.on.update_status(), _worker_state(relation))
            _eventually_spans(receiver, 1, "the worker's hook")
            assert receiver.services() == {WORKER_APP}
            (span,) = [s for s in receiver.spans if s.name == "ops.main"]
            assert span.attributes["juju_unit"] == f"{WORKER_APP}/0"
            assert span.attributes["charm"] == WORKER_APP
            access = (nginx_dir / "access.log").read_text()
            assert 'POST /proxy/charm-tracing/otlp_http/v1/traces HTTP/1.1" 200' in access
            assert {path for path, _ in receiver.requests} == {"/v1/traces"}

            # The coordinator goes: the worker stops sending (the next hook's spans stay here).
            out = ctx.run(ctx.on.relation_broken(out.get_relation(relation.id)), out)
            sent = len(receiver.spans)
            ctx.run(ctx.on.update_status(), _worker_state())
            time.sleep(1)
            assert len(receiver.spans) == sent, receiver.spans[sent:]
        finally:
            nginx.stop()


def test_coordinator_spans_reach_its_charm_tracing_backend(real_trace_export: None, tmp_path: Path):
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 10.152.183.10\n")
    charm_root = tmp_path / "coordinator-charm"
    charm_root.mkdir()
    charm_type = coordinator_charm_type(kubernetes=FakeKubernetes(), resolv_conf=str(resolv_conf))
    ctx = testing.Context(charm_type, app_name=COORDINATOR_APP, charm_root=charm_root)
    with otlp_receiver() as receiver:
        receivers = [
            {
                "protocol": {"name": "otlp_http", "type": "http"},
                "url": f"http://127.0.0.1:{receiver.port}",
            }
        ]
        tempo = testing.Relation(
            "charm-tracing",
            remote_app_name="tempo",
            remote_app_data={"receivers": json.dumps(receivers)},
        )
        out = ctx.run(ctx.on.update_status(), state(tempo))
        _eventually_spans(receiver, 1, "the coordinator's hook")
        assert receiver.services() == {COORDINATOR_APP}
        assert "ops.main" in {span.name for span in receiver.spans}

        # Tempo goes: no more spans are sent.
        ctx.run(ctx.on.relation_broken(out.get_relation(tempo.id)), out)
        sent = len(receiver.spans)
        ctx.run(ctx.on.update_status(), state())
        time.sleep(1)
        assert len(receiver.spans) == sent, receiver.spans[sent:]
