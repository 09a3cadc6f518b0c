"""A minimal gRPC responder on loopback (HTTP/2 with ``h2``, optionally over TLS) that records
every request: its headers and body, answered with an empty message and ``grpc-status: 0``.

gRPC over HTTP/2 (grpc/grpc, ``doc/PROTOCOL-HTTP2.md``): a POST with ``content-type:
application/grpc``, each message length-prefixed (1 flag byte, 4 bytes big-endian length), the
status in trailers.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from typing import Any

import pytest

h2_config: Any = pytest.importorskip("h2.config", reason="the h2 package is not installed")
h2_connection: Any = pytest.importorskip("h2.connection")
h2_events: Any = pytest.importorskip("h2.events")

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
"""The OTLP/gRPC trace export method's path."""


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed length-prefixed gRPC message."""
    return b"\x00" + struct.pack("!I", len(message)) + message


def authority(headers: dict[str, str]) -> str | None:
    """The request's authority: ``:authority``, or ``host`` without it (RFC 9113, 8.3.1).

    nginx sends ``:authority`` from ``grpc_pass``'s host; with ``grpc_set_header Host`` (the
    pooled rendering: the host would be the block's name) it sends ``host`` instead.
    """
    if ":authority" in headers:
        assert "host" not in headers
        return headers[":authority"]
    return headers.get("host")


def serve_connection(sock: socket.socket, seen: list[tuple[dict[str, str], bytes]]) -> None:
    conn = h2_connection.H2Connection(config=h2_config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    headers: dict[int, dict[str, str]] = {}
    bodies: dict[int, bytes] = {}
    with sock:
        while data := sock.recv(65535):
            for event in conn.receive_data(data):
                if isinstance(event, h2_events.RequestReceived):
                    headers[event.stream_id] = {
                        (k.decode() if isinstance(k, bytes) else k): (
                            v.decode() if isinstance(v, bytes) else v
                        )
                        for k, v in event.headers
                    }
                elif isinstance(event, h2_events.DataReceived):
                    bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2_events.StreamEnded):
                    stream = event.stream_id
                    seen.append((headers[stream], bodies.get(stream, b"")))
                    conn.send_headers(
                        stream, [(":status", "200"), ("content-type", "application/grpc")]
                    )
                    conn.send_data(stream, b"\x00\x00\x00\x00\x00")  # an empty gRPC message
                    conn.send_headers(stream, [("grpc-status", "0")], end_stream=True)
            sock.sendall(conn.data_to_send())


def start_grpc_upstream(
    seen: list[tuple[dict[str, str], bytes]], tls: ssl.SSLContext | None = None
) -> socket.socket:
    """A gRPC responder on loopback; with ``tls``, it accepts TLS connections only."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(sock: socket.socket) -> None:
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                sock.close()  # not TLS (or a failed handshake): nothing is served
                return
        try:
            serve_connection(sock, seen)
        except OSError:
            sock.close()  # the client gave up (a proxy refusing this certificate after TLS 1.3)

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener
