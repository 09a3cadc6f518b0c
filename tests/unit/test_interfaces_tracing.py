"""tracing v2 requirer: request protocols (leader only), read the provider's receivers.

Wire compatibility is checked against the maintained ``charmlibs.interfaces.tracing`` models.
"""

from __future__ import annotations

import json

import ops
import pytest
from charmlibs.interfaces.tracing import (
    ProtocolType,
    Receiver,
    TracingProviderAppData,
    TracingRequirerAppData,
    TransportProtocolType,
)
from coordinated_mesh.relations.tracing import (
    GRPC_TRACING_PROTOCOLS,
    HTTP_TRACING_PROTOCOLS,
    TRANSPORT_BY_PROTOCOL,
    grpc_receivers_use_tls,
    parse_provider_receivers,
    read_tracing_receivers,
    request_tracing_protocols,
)
from ops import testing

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:charmlibs")

META = {
    "name": "coordinator",
    "requires": {
        "charm-tracing": {"interface": "tracing", "limit": 1},
        "workload-tracing": {"interface": "tracing", "limit": 1},
    },
}


class Charm(ops.CharmBase):
    pass


def provider_databag(*receivers: tuple[str, str, str]) -> dict[str, str]:
    return {
        "receivers": json.dumps(
            [{"protocol": {"name": n, "type": t}, "url": u} for n, t, u in receivers]
        )
    }


def test_protocol_tables_agree_with_the_proxy():
    assert set(TRANSPORT_BY_PROTOCOL) == set(HTTP_TRACING_PROTOCOLS) | set(GRPC_TRACING_PROTOCOLS)
    for protocol in HTTP_TRACING_PROTOCOLS:
        assert TRANSPORT_BY_PROTOCOL[protocol] == "http"
    for protocol in GRPC_TRACING_PROTOCOLS:
        assert TRANSPORT_BY_PROTOCOL[protocol] == "grpc"


def test_reads_what_the_maintained_provider_writes():
    databag: dict[str, str] = {}
    http, grpc = TransportProtocolType.http, TransportProtocolType.grpc
    TracingProviderAppData(
        receivers=[
            Receiver(
                protocol=ProtocolType(name="otlp_http", type=http), url="http://tempo.cos:4318"
            ),
            Receiver(protocol=ProtocolType(name="otlp_grpc", type=grpc), url="tempo.cos:4317"),
            Receiver(protocol=ProtocolType(name="tempo_http", type=http), url="http://tempo:3200"),
        ]
    ).dump(databag)
    receivers, problems = parse_provider_receivers(databag, endpoint="workload-tracing")
    assert receivers == {"otlp_grpc": "tempo.cos:4317", "otlp_http": "http://tempo.cos:4318"}
    assert problems == []


def test_bad_receivers_are_dropped_alone():
    databag = provider_databag(
        ("otlp_http", "http", "http://tempo:4318/$x"),
        ("otlp_grpc", "http", "tempo:4317"),
        ("zipkin", "http", "http://tempo:9411"),
        ("jaeger_grpc", "grpc", "http://tempo:14250"),
    )
    receivers, problems = parse_provider_receivers(databag, endpoint="charm-tracing")
    assert receivers == {"zipkin": "http://tempo:9411"}
    assert [(p.endpoint, p.item) for p in problems] == [
        ("charm-tracing", "otlp_http"),
        ("charm-tracing", "otlp_grpc"),
        ("charm-tracing", "jaeger_grpc"),
    ]


@pytest.mark.parametrize(
    ("databag", "reason"),
    [
        ({"receivers": "{"}, "not valid JSON"),
        ({"receivers": json.dumps({"otlp_http": "x"})}, "expected a JSON list"),
        ({"receivers": json.dumps(["otlp_http"])}, "valid dictionary"),
    ],
)
def test_malformed_provider_databag(databag: dict[str, str], reason: str):
    receivers, problems = parse_provider_receivers(databag, endpoint="charm-tracing")
    assert receivers == {}
    assert len(problems) == 1 and reason in problems[0].reason


def test_read_through_ops():
    relation = testing.Relation(
        "workload-tracing",
        remote_app_name="tempo",
        remote_app_data=provider_databag(
            ("otlp_http", "http", "http://tempo.cos.svc.cluster.local:4318"),
            ("otlp_grpc", "grpc", "tempo.cos.svc.cluster.local:4317"),
        ),
    )
    ctx = testing.Context(Charm, meta=META)
    with ctx(ctx.on.update_status(), testing.State(relations={relation})) as mgr:
        receivers, problems = read_tracing_receivers(mgr.charm.model.relations["workload-tracing"])
        none, _ = read_tracing_receivers(mgr.charm.model.relations["charm-tracing"])
    assert receivers == {
        "otlp_grpc": "tempo.cos.svc.cluster.local:4317",
        "otlp_http": "http://tempo.cos.svc.cluster.local:4318",
    }
    assert problems == []
    assert none == {}


@pytest.mark.parametrize("leader", [True, False])
def test_request_protocols(leader: bool):
    relation = testing.Relation("charm-tracing", remote_app_name="tempo")
    ctx = testing.Context(Charm, meta=META)
    with ctx(ctx.on.update_status(), testing.State(relations={relation}, leader=leader)) as mgr:
        first = request_tracing_protocols(mgr.charm.model, "charm-tracing")
        again = request_tracing_protocols(
            mgr.charm.model, "charm-tracing", ["otlp_http", "otlp_grpc"]
        )
        out = mgr.run()
    app_data = out.get_relation(relation.id).local_app_data
    if not leader:
        assert (first, again) == (False, False)
        assert "receivers" not in app_data
        return
    assert (first, again) == (True, False)
    assert app_data["receivers"] == '["otlp_grpc", "otlp_http"]'
    # The maintained library's requirer model reads what we wrote.
    assert TracingRequirerAppData.load(dict(app_data)).receivers == ["otlp_grpc", "otlp_http"]


def test_request_unknown_protocol_is_a_charm_error():
    ctx = testing.Context(Charm, meta=META)
    with (
        ctx(ctx.on.update_status(), testing.State(leader=True)) as mgr,
        pytest.raises(ValueError, match="tempo_http"),
    ):
        request_tracing_protocols(mgr.charm.model, "charm-tracing", ["tempo_http"])


@pytest.mark.parametrize(
    "receivers, tls",
    [
        ({"otlp_http": "https://tempo:4318", "otlp_grpc": "tempo:4317"}, True),
        ({"otlp_http": "http://tempo:4318", "otlp_grpc": "tempo:4317"}, False),
        ({"zipkin": "https://tempo:9411", "otlp_grpc": "tempo:4317"}, True),
        ({"otlp_grpc": "tempo:4317"}, False),  # nothing says TLS: cleartext, as before
    ],
)
def test_grpc_receivers_use_tls_when_the_http_ones_are_https(receivers: dict[str, str], tls: bool):
    assert grpc_receivers_use_tls(receivers) is tls
