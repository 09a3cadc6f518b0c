"""gRPC tracing through the proxy's separate h2c listener (nginx 1.22: ``listen PORT http2``).

Each test runs on both renderings (``proxy_nginx``): nginx 1.22 with ``$upstream``, and nginx
>= 1.27.3 with pooled upstream blocks, where SNI must still name the receiver (``*_ssl_name``).

The upstream is a minimal cleartext HTTP/2 gRPC responder built on ``h2``; the client is curl
with prior-knowledge HTTP/2, which is what a gRPC client speaks to an ``otlp_grpc`` receiver.
An OTLP/HTTP receiver serving only TLS checks the same for HTTP. The upstream is named
``tempo.test`` and resolved by nginx at request time (see conftest).
A second upstream serves only TLS (a certificate for ``tempo.test`` made by ``openssl``), as Tempo
does on every receiver port once its ``otlp_http`` is ``https``: the proxy must speak ``grpcs``.
"""

from __future__ import annotations

import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import NginxSettings, render_nginx_config
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    build_telemetry_proxy,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.binaries import require_binary
from tests.support.grpc_upstream import EXPORT, authority, start_grpc_upstream
from tests.support.nginx import (
    ProxyNginx,
    RunningNginx,
    free_port,
    nginx_settings,
    wait_for_port,
)
from tests.support.otlp import otlp_receiver


def settings(proxy_nginx: ProxyNginx, prefix: Path, trust: Path | None = None) -> NginxSettings:
    """The rendering for ``proxy_nginx``; ``trust``: the CA file TLS backends are verified with."""
    chosen = replace(nginx_settings(prefix), upstream_resolve=proxy_nginx.pooled)
    if trust is not None:
        Path(chosen.upstream_ca_path).parent.mkdir(parents=True, exist_ok=True)
        Path(chosen.upstream_ca_path).write_text(trust.read_text())
    return chosen


IDENTITY = CoordinatorIdentity("coordinator", "mymodel", "12345678-1234-4234-8234-123456789abc")


@pytest.fixture
def grpc_upstream() -> Iterator[tuple[int, list[tuple[dict[str, str], bytes]]]]:
    seen: list[tuple[dict[str, str], bytes]] = []
    listener = start_grpc_upstream(seen)
    yield listener.getsockname()[1], seen
    listener.close()


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and key for ``name``, made by the real ``openssl``."""
    openssl = require_binary("openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _send_export(curl: str, grpc_port: int, message: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            curl, "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
            "-w", "%{http_code} %{http_version}",
            "-H", "content-type: application/grpc",
            "--data-binary", "@-",
            f"http://127.0.0.1:{grpc_port}{EXPORT}",
        ],
        input=message, capture_output=True, timeout=30, check=False,
    )  # fmt: skip


def test_otlp_grpc_reaches_the_receiver(
    proxy_nginx: ProxyNginx,
    tmp_path: Path,
    fake_dns: str,
    grpc_upstream: tuple[int, list[tuple[dict[str, str], bytes]]],
):
    curl = require_binary("curl")
    upstream_port, seen = grpc_upstream
    http_port, grpc_port = free_port(), free_port()
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=WorkerTelemetryProxyConfig(http_port, http_port, grpc_port=grpc_port),
            backend_workload_tracing_receivers={"otlp_grpc": f"tempo.test:{upstream_port}"},
            resolvers=[fake_dns],
            status_port=free_port(),
        )
    )
    assert plan.proxied_telemetry.workload_tracing_receivers == {
        "otlp_grpc": f"{IDENTITY.service_fqdn}:{grpc_port}"
    }
    nginx = RunningNginx(
        proxy_nginx.binary, tmp_path, render_nginx_config(plan, settings(proxy_nginx, tmp_path))
    )
    try:
        wait_for_port(grpc_port)
        time.sleep(proxy_nginx.settle_seconds)
        message = b"\x00\x00\x00\x00\x03abc"  # one length-prefixed gRPC message
        result = subprocess.run(
            [
                curl, "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
                "-w", "%{http_code} %{http_version}",
                "-H", "content-type: application/grpc",
                "--data-binary", "@-",
                f"http://127.0.0.1:{grpc_port}{EXPORT}",
            ],
            input=message, capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.stdout.decode() == "200 2", (result.stderr, nginx.log())
        ((headers, body),) = seen
        assert headers[":path"] == EXPORT
        assert authority(headers) == f"tempo.test:{upstream_port}"  # not the block's name
        assert headers["content-type"] == "application/grpc"
        assert body == message
        # Other gRPC services are not routed (no body: nginx answers before reading one).
        other = subprocess.run(
            [curl, "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
             f"http://127.0.0.1:{grpc_port}/some.Other/Method"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert other.stdout.decode() == "404", other.stderr
        assert len(seen) == 1
    finally:
        nginx.stop()


def test_otlp_grpc_to_a_tls_receiver_is_sent_over_tls(
    proxy_nginx: ProxyNginx, tmp_path: Path, fake_dns: str
):
    """Tempo with TLS: ``otlp_http`` is ``https``, ``otlp_grpc`` still ``host:port``."""
    curl = require_binary("curl")
    cert, key = _certificate(tmp_path, "tempo.test")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.set_alpn_protocols(["h2"])
    server_names: list[str | None] = []
    tls.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    seen: list[tuple[dict[str, str], bytes]] = []
    listener = start_grpc_upstream(seen, tls)
    upstream_port = listener.getsockname()[1]
    http_port, grpc_port = free_port(), free_port()
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=WorkerTelemetryProxyConfig(http_port, http_port, grpc_port=grpc_port),
            backend_workload_tracing_receivers={
                "otlp_grpc": f"tempo.test:{upstream_port}",
                "otlp_http": f"https://tempo.test:{upstream_port + 1}",
            },
            resolvers=[fake_dns],
            status_port=free_port(),
            upstream_trust=True,
        )
    )
    assert [route.tls for route in plan.grpc_routes] == [True]
    nginx = RunningNginx(
        proxy_nginx.binary,
        tmp_path,
        render_nginx_config(plan, settings(proxy_nginx, tmp_path, cert)),
    )
    try:
        wait_for_port(grpc_port)
        time.sleep(proxy_nginx.settle_seconds)
        message = b"\x00\x00\x00\x00\x03abc"
        result = _send_export(curl, grpc_port, message)
        assert result.stdout.decode() == "200 2", (result.stderr, nginx.log())
        ((headers, body),) = seen  # served by the TLS-only responder: it arrived over TLS
        assert headers[":path"] == EXPORT
        assert authority(headers) == f"tempo.test:{upstream_port}"
        assert body == message
        assert server_names == ["tempo.test"]  # SNI names the receiver
    finally:
        nginx.stop()
        listener.close()


def test_otlp_http_to_a_tls_receiver_is_sent_over_tls(
    proxy_nginx: ProxyNginx, tmp_path: Path, fake_dns: str
):
    cert, key = _certificate(tmp_path, "tempo.test")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    tls.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    http_port = free_port()
    with otlp_receiver(tls) as receiver:
        plan = build_telemetry_proxy(
            TelemetryProxyInputs(
                identity=IDENTITY,
                config=WorkerTelemetryProxyConfig(http_port, http_port),
                backend_workload_tracing_receivers={
                    "otlp_http": f"https://tempo.test:{receiver.port}"
                },
                resolvers=[fake_dns],
                status_port=free_port(),
                upstream_trust=True,
            )
        )
        nginx = RunningNginx(
            proxy_nginx.binary,
            tmp_path,
            render_nginx_config(plan, settings(proxy_nginx, tmp_path, cert)),
        )
        try:
            wait_for_port(http_port)
            time.sleep(proxy_nginx.settle_seconds)
            request = ExportTraceServiceRequest()
            span = request.resource_spans.add().scope_spans.add().spans.add()
            span.name, span.trace_id, span.span_id = "export", b"\x01" * 16, b"\x02" * 8
            answer = urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{http_port}/proxy/workload-tracing/otlp_http/v1/traces",
                    data=request.SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"},
                ),
                timeout=10,
            )
            assert answer.status == 200, nginx.log()
            assert [s.name for s in receiver.spans] == ["export"]  # decoded, over TLS only
            assert server_names == ["tempo.test"]
        finally:
            nginx.stop()
