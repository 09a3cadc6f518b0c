"""An OTLP/HTTP traces receiver on loopback that decodes what it is sent (opentelemetry-proto).

OTLP/HTTP (opentelemetry-proto, ``docs/specification.md``, "OTLP/HTTP"): ``POST /v1/traces`` with
an ``ExportTraceServiceRequest`` as binary protobuf (``application/x-protobuf``) or as JSON
(``application/json``; trace and span ids are hex strings there, not base64 as protobuf's JSON
mapping has it). ops' exporter sends JSON. Both are decoded into the protobuf message.
"""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _hex_ids_to_base64(value: Any) -> Any:
    """OTLP/JSON's hex ``traceId``/``spanId``/``parentSpanId`` as protobuf JSON's base64."""
    if isinstance(value, dict):
        return {
            k: (
                base64.b64encode(bytes.fromhex(v)).decode()
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
                else _hex_ids_to_base64(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids_to_base64(v) for v in value]
    return value


def decode_export_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Decode one OTLP/HTTP request body (raises on anything that is not a valid request)."""
    request = ExportTraceServiceRequest()
    if content_type.split(";", maxsplit=1)[0].strip() == "application/json":
        json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), request)
    else:
        request.ParseFromString(body)
    return request


@dataclass(frozen=True)
class ReceivedSpan:
    service_name: str
    name: str
    trace_id: str
    attributes: dict[str, str]


@dataclass
class OtlpReceiver:
    port: int
    requests: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])
    """(path, content type) of every request."""
    spans: list[ReceivedSpan] = field(default_factory=list[ReceivedSpan])

    def services(self) -> set[str]:
        return {span.service_name for span in self.spans}


def _handler(receiver: OtlpReceiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            content_type = self.headers.get("Content-Type", "")
            receiver.requests.append((self.path, content_type))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            request = decode_export_request(body, content_type)
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        receiver.spans.append(
                            ReceivedSpan(
                                service_name=attributes.get("service.name", ""),
                                name=span.name,
                                trace_id=span.trace_id.hex(),
                                attributes=attributes,
                            )
                        )
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def otlp_receiver(tls: ssl.SSLContext | None = None) -> Generator[OtlpReceiver]:
    """A receiver on ``127.0.0.1:<port>`` (TLS only, with ``tls``), stopped on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(OtlpReceiver(0)))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver = OtlpReceiver(server.server_address[1])
    server.RequestHandlerClass = _handler(receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
