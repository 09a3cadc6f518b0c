"""``tracing`` (v2), requirer side: ``charm-tracing`` and ``workload-tracing``.

We write ``receivers`` (the protocol names we want); the provider writes ``receivers`` as a list of
``{"protocol": {"name", "type"}, "url"}`` (HTTP: a URL without a path; gRPC: ``host:port``). The
protocol vocabulary is ``charmlibs.interfaces.tracing``'s; its requirer object is not used because
it rewrites the whole databag on every call and rejects a provider databag for one bad receiver,
where we drop only that receiver. Wire format: ``../shared/spec/telemetry-interfaces.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import ops
import pydantic
from charmlibs.interfaces.tracing import receiver_protocol_to_transport_protocol

from coordinated_mesh.charm.memory import DatabagMemory
from coordinated_mesh.parse import Problem, parse_grpc_address, parse_http_url
from coordinated_mesh.relations._common import describe_validation_error, dumps, write_changed
from coordinated_mesh.relations.databag import load_json_value

__all__ = [
    "DEFAULT_PROTOCOLS",
    "GRPC_TRACING_PROTOCOLS",
    "HTTP_TRACING_PROTOCOLS",
    "TRANSPORT_BY_PROTOCOL",
    "ProviderReceiver",
    "grpc_receivers_use_tls",
    "parse_provider_receivers",
    "read_tracing_receivers",
    "request_tracing_protocols",
]

HTTP_TRACING_PROTOCOLS = ("jaeger_thrift_http", "otlp_http", "zipkin")
"""Tracing protocols carried over HTTP: the coordinator proxies them under
``/proxy/<kind>-tracing/<protocol>/`` and hands out URLs."""
GRPC_TRACING_PROTOCOLS: Mapping[str, str] = {
    "jaeger_grpc": "/jaeger.api_v2.CollectorService/",
    "otlp_grpc": "/opentelemetry.proto.collector.trace.v1.TraceService/",
}
"""gRPC tracing protocols, handed out as ``host:port``, and the gRPC service path prefix the
proxy's gRPC listener routes each by."""

DEFAULT_PROTOCOLS = ("otlp_grpc", "otlp_http")
"""What the coordinator requests on both tracing endpoints."""

TRANSPORT_BY_PROTOCOL: Mapping[str, str] = {
    str(protocol): transport.value
    for protocol, transport in receiver_protocol_to_transport_protocol.items()
}
"""Known tracing protocols and their transport (``http`` or ``grpc``)."""


def grpc_receivers_use_tls(receivers: Mapping[str, str]) -> bool:
    """Whether a tracing provider's gRPC receivers serve TLS (pure).

    Tempo publishes gRPC receivers (``otlp_grpc``, ``jaeger_grpc``) as ``host:port``, with no
    scheme to say whether they serve TLS, and its HTTP receivers as URLs. With TLS configured,
    Tempo serves TLS on every receiver port, gRPC included; so the scheme of the HTTP receivers
    in the same databag decides: gRPC uses TLS when any HTTP receiver (``otlp_http`` first) is
    ``https``. A client (the proxy) must then speak gRPC over TLS (``grpcs://``, with SNI);
    cleartext to such a port fails, and a workload that only speaks gRPC loses its traces.

    Args:
        receivers: protocol -> URL or address, as read from one provider's databag.
    """
    for protocol in sorted(HTTP_TRACING_PROTOCOLS, key=lambda p: p != "otlp_http"):
        url = receivers.get(protocol)
        if url:
            return url.startswith("https://")
    return False


class _ReceiverProtocol(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")

    name: str = pydantic.Field(max_length=64)
    type: Literal["http", "grpc"]


class ProviderReceiver(pydantic.BaseModel):
    """One receiver in the provider's ``receivers`` list."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")

    protocol: _ReceiverProtocol
    url: str = pydantic.Field(max_length=2048)


def parse_provider_receivers(
    databag: Mapping[str, str], *, endpoint: str
) -> tuple[dict[str, str], list[Problem]]:
    """The valid receivers in a provider application databag: protocol -> URL (pure).

    Unknown protocol names are ignored (a provider lists every receiver it runs). A known protocol
    with the wrong transport type or an unsafe URL is dropped and reported. If a protocol appears
    more than once, the first valid entry wins.
    """
    problems: list[Problem] = []
    try:
        raw = load_json_value(databag, "receivers")
    except ValueError as e:
        return {}, [Problem(endpoint, "receivers", str(e))]
    if raw is None:
        return {}, []
    if not isinstance(raw, list):
        return {}, [Problem(endpoint, "receivers", "expected a JSON list")]
    receivers: dict[str, str] = {}
    for index, item in enumerate(raw[:64]):
        try:
            receiver = ProviderReceiver.model_validate(item)
        except pydantic.ValidationError as e:
            problems.append(Problem(endpoint, f"receivers[{index}]", describe_validation_error(e)))
            continue
        name = receiver.protocol.name
        transport = TRANSPORT_BY_PROTOCOL.get(name)
        if transport is None or name in receivers:
            continue
        try:
            if receiver.protocol.type != transport:
                raise ValueError(f"type {receiver.protocol.type!r}, expected {transport!r}")
            url = (
                parse_http_url(receiver.url)
                if transport == "http"
                else parse_grpc_address(receiver.url)
            )
        except ValueError as e:
            problems.append(Problem(endpoint, name, str(e)))
            continue
        receivers[name] = str(url)
    return dict(sorted(receivers.items())), problems


def read_tracing_receivers(
    relations: Sequence[ops.Relation],
) -> tuple[dict[str, str], list[Problem]]:
    """The tracing provider's receivers (protocol -> URL) and the problems found.

    Args:
        relations: the relations of one tracing endpoint (``limit: 1``: zero or one). With more,
            the lowest relation id wins per protocol.
    """
    receivers: dict[str, str] = {}
    problems: list[Problem] = []
    for relation in sorted(relations, key=lambda r: r.id):
        try:
            databag = dict(relation.data[relation.app])
        except ops.ModelError as e:
            problems.append(Problem(relation.name, relation.app.name, f"cannot read: {e}"))
            continue
        found, found_problems = parse_provider_receivers(databag, endpoint=relation.name)
        problems += found_problems
        for protocol, url in found.items():
            receivers.setdefault(protocol, url)
    return dict(sorted(receivers.items())), problems


def request_tracing_protocols(
    model: ops.Model,
    endpoint: str,
    protocols: Sequence[str] = DEFAULT_PROTOCOLS,
    memory: DatabagMemory | None = None,
) -> bool:
    """Ask the tracing provider(s) on ``endpoint`` for these receivers; leader only.

    Writes ``receivers`` (sorted, deduplicated) only where it changes. Returns whether anything was
    written (always ``False`` on non-leaders).

    Raises:
        ValueError: an unknown protocol name (a charm bug, not remote data).
    """
    unknown = sorted(set(protocols) - set(TRANSPORT_BY_PROTOCOL))
    if unknown or not protocols:
        raise ValueError(f"unknown or no tracing protocols: {unknown}")
    if not model.unit.is_leader():
        return False
    value: dict[str, str | None] = {"receivers": dumps(sorted(set(protocols)))}
    changed = False
    for relation in sorted(model.relations[endpoint], key=lambda r: r.id):
        changed |= write_changed(relation.data[model.app], value, memory)
    return changed
