"""Where the charms send their own traces (pure), and when they set it (``ops.testing``).

The spans themselves, exported by ops' real exporter, are checked in
``tests/real/test_charm_tracing.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ops
import pytest
from coordinated_mesh.charm.tracing import charm_traces_url, send_charm_traces_to
from ops import testing

from tests.support.coordinator import FakeKubernetes, make_context, state, tracing_relation
from tests.support.worker import FakeLabels, worker_context

PROXIED = "http://coord.mymodel.svc.cluster.local:8080/proxy/charm-tracing/otlp_http"


@pytest.mark.parametrize(
    "receivers, url",
    [
        ({"otlp_http": PROXIED}, PROXIED + "/v1/traces"),
        ({"otlp_http": PROXIED + "/"}, PROXIED + "/v1/traces"),
        ({"otlp_http": "https://tempo.cos.svc:4318"}, "https://tempo.cos.svc:4318/v1/traces"),
        ({"otlp_grpc": "tempo.cos.svc:4317"}, None),  # ops exports OTLP/HTTP only
        ({"otlp_http": "ftp://tempo/"}, None),
        ({}, None),
    ],
)
def test_charm_traces_url(receivers: dict[str, str], url: str | None):
    assert charm_traces_url(receivers) == url


@pytest.fixture
def destinations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, str | None]]:
    calls: list[tuple[str | None, str | None]] = []
    assert ops.tracing is not None
    monkeypatch.setattr(ops.tracing, "set_destination", lambda url, ca: calls.append((url, ca)))
    return calls


def test_a_ca_is_passed_for_https_only(destinations: list[tuple[str | None, str | None]]):
    send_charm_traces_to("https://tempo:4318/v1/traces", ca="PEM")
    send_charm_traces_to("http://tempo:4318/v1/traces", ca="PEM")
    send_charm_traces_to(None, ca="PEM")
    assert destinations == [
        ("https://tempo:4318/v1/traces", "PEM"),
        ("http://tempo:4318/v1/traces", None),
        (None, None),
    ]


def _cluster(**data: Any) -> testing.Relation:
    return testing.Relation(
        "cluster",
        remote_app_name="coord",
        remote_app_data={k: json.dumps(v) for k, v in data.items()},
    )


def _state(*relations: testing.Relation) -> testing.State:
    return testing.State(
        relations=list(relations), containers=[testing.Container("prometheus", can_connect=False)]
    )


def test_worker_follows_the_proxied_receiver_and_stops_without_a_coordinator(
    destinations: list[tuple[str | None, str | None]],
):
    ctx = worker_context(FakeLabels())
    ctx.run(
        ctx.on.update_status(), _state(_cluster(charm_tracing_receivers={"otlp_http": PROXIED}))
    )
    ctx.run(ctx.on.update_status(), _state(_cluster(charm_tracing_receivers={})))
    ctx.run(ctx.on.update_status(), _state())
    assert destinations == [(PROXIED + "/v1/traces", None), (None, None), (None, None)]


def test_worker_keeps_its_destination_while_the_data_is_unusable(
    destinations: list[tuple[str | None, str | None]],
):
    ctx = worker_context(FakeLabels())
    broken = testing.Relation(
        "cluster", remote_app_name="coord", remote_app_data={"worker_labels": "{not json"}
    )
    ctx.run(ctx.on.update_status(), _state(broken))
    assert destinations == []


def test_the_test_receiver_decodes_ops_json_and_protobuf_alike():
    """The decoding in tests/support/otlp.py, checked on what ops' exporter really encodes."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from ops_tracing import _otlp_json

    from tests.support.otlp import decode_export_request

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("hook") as span:
        trace_id = span.get_span_context().trace_id
    body = _otlp_json.encode_spans(exporter.get_finished_spans())
    from_json = decode_export_request(body, _otlp_json.CONTENT_TYPE)
    (decoded,) = from_json.resource_spans[0].scope_spans[0].spans
    assert decoded.name == "hook"
    assert decoded.trace_id.hex() == f"{trace_id:032x}"
    from_protobuf = decode_export_request(from_json.SerializeToString(), "application/x-protobuf")
    assert from_protobuf == from_json


def test_coordinator_sends_to_its_backend_and_stops_when_it_goes(
    destinations: list[tuple[str | None, str | None]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    ctx = make_context(monkeypatch, tmp_path, kubernetes=FakeKubernetes())
    ctx.run(ctx.on.update_status(), state(tracing_relation("charm-tracing")))
    ctx.run(ctx.on.update_status(), state(tracing_relation("workload-tracing")))
    assert destinations == [
        ("http://tempo.cos.svc.cluster.local:4318/v1/traces", None),
        (None, None),
    ]
