"""The proxy over TLS with real nginx and certificates made by the real ``openssl``.

Served: every route answers over TLS to a client trusting the CA and to no other; TLS 1.0/1.1
are refused by the server, 1.2/1.3 accepted; both port layouts (``https_port == http_port``: TLS
only; they differ: plain HTTP kept beside); gRPC over TLS carries a trace. Verified: a TLS
backend with a certificate from an unknown CA, for another name, or with no trust configured
gets 502 and sees no request; a verified one is reached (HTTP and gRPC). A certificate renewal
with reloads under load drops no request. Each on nginx 1.22 and on the pooled >= 1.27.3
rendering (``proxy_nginx``), where TLS differs (``http2 on``, pooled ``*_ssl_name``).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import NginxSettings, render_nginx_config
from coordinated_mesh.proxy.plan import (
    CoordinatorIdentity,
    TelemetryProxyInputs,
    TelemetryProxyPlan,
    build_telemetry_proxy,
)
from coordinated_mesh.proxy.tls import check_backend_tls
from coordinated_mesh.relations.cluster import JujuTopology, MetricsEndpoint, WorkerUnitData
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.binaries import require_binary, unavailable
from tests.support.grpc_upstream import EXPORT, grpc_frame, start_grpc_upstream
from tests.support.nginx import (
    ProxyNginx,
    RunningNginx,
    Upstream,
    free_port,
    nginx_settings,
    nginx_test,
    start_upstream,
    wait_for_port,
)
from tests.support.tls import (
    Ca,
    Leaf,
    https_connection,
    https_request,
    install_server_certificate,
    install_upstream_trust,
    issue,
    make_ca,
    served_certificate_serial,
    server_context,
)

IDENTITY = CoordinatorIdentity("coordinator", "mymodel", "12345678-1234-4234-8234-123456789abc")
FQDN = IDENTITY.service_fqdn


@dataclass(frozen=True)
class Pki:
    ca: Ca
    rogue: Ca
    proxy: Leaf
    backend: Leaf
    backend_from_rogue: Leaf
    backend_other_name: Leaf
    directory: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, rogue = make_ca(directory / "ca"), make_ca(directory / "rogue", "Rogue CA")
    return Pki(
        ca=ca,
        rogue=rogue,
        proxy=issue(ca, directory / "proxy", [FQDN, "coordinator-0.test"]),
        backend=issue(ca, directory / "backend", ["backend.test"]),
        backend_from_rogue=issue(rogue, directory / "rogue-backend", ["backend.test"]),
        backend_other_name=issue(ca, directory / "other", ["elsewhere.test"]),
        directory=directory,
    )


def settings_for(proxy_nginx: ProxyNginx, prefix: Path) -> NginxSettings:
    return replace(nginx_settings(prefix, access_log=True), upstream_resolve=proxy_nginx.pooled)


def start(proxy_nginx: ProxyNginx, prefix: Path, plan: TelemetryProxyPlan) -> RunningNginx:
    text = render_nginx_config(plan, settings_for(proxy_nginx, prefix))
    checked = nginx_test(proxy_nginx.binary, text, prefix)
    assert checked.returncode == 0, checked.stderr
    nginx = RunningNginx(proxy_nginx.binary, prefix, text)
    for port in plan.listen_ports:
        wait_for_port(port)
    time.sleep(proxy_nginx.settle_seconds)
    return nginx


def plain_request(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _worker(port: int) -> WorkerUnitData:
    return WorkerUnitData(
        juju_topology=JujuTopology(application="worker", unit="worker/0", charm_name="w"),
        address="worker-0.test",
        metrics_endpoint=MetricsEndpoint(port=port, path="/metrics"),
    )


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


LAYOUTS = ["one-port", "two-ports"]


def _config(layout: str, *, grpc: bool = False) -> WorkerTelemetryProxyConfig:
    http_port = free_port()
    https_port = http_port if layout == "one-port" else free_port()
    return WorkerTelemetryProxyConfig(http_port, https_port, free_port() if grpc else None)


# --- the proxy serves TLS -------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_route_answers_over_tls_only_with_the_ca(
    proxy_nginx: ProxyNginx,
    layout: str,
    tmp_path: Path,
    pki: Pki,
    upstreams: dict[str, Upstream],
    fake_dns: str,
):
    config = _config(layout)
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=config,
            workers=[_worker(upstreams["worker"].port)],
            backend_loki_urls={"loki/0": f"http://loki-0.test:{upstreams['loki'].port}/push"},
            backend_remote_write_urls={
                "prometheus/0": f"http://prom-0.test:{upstreams['prom'].port}/api/v1/write"
            },
            backend_charm_tracing_receivers={
                "otlp_http": f"http://tempo.test:{upstreams['tempo'].port}"
            },
            resolvers=[fake_dns],
            status_port=free_port(),
            worker_query_api=WorkerQueryApi(),
            server_ca_cert=pki.ca.pem,
        )
    )
    assert plan.problems == ()
    assert plan.tls
    urls = plan.proxied_telemetry
    assert urls.ca_cert == pki.ca.pem
    base = f"https://{FQDN}:{config.https_port}"
    assert urls.loki_urls == {"loki/0": f"{base}/proxy/loki/loki-0/push"}
    assert plan.query_url == f"{base}/query"
    cases = [
        ("GET", "/proxy/worker/worker-0/metrics", "worker", "/metrics"),
        ("POST", path_of(urls.loki_urls["loki/0"]), "loki", "/push"),
        ("POST", path_of(urls.remote_write_urls[0]), "prom", "/api/v1/write"),
        (
            "POST",
            path_of(urls.charm_tracing_receivers["otlp_http"]) + "/v1/traces",
            "tempo",
            "/v1/traces",
        ),
        ("GET", "/query/api/v1/query?query=up", "worker", "/api/v1/query?query=up"),
    ]
    settings = settings_for(proxy_nginx, tmp_path)
    install_server_certificate(settings, pki.proxy)
    nginx = start(proxy_nginx, tmp_path, plan)
    try:
        for method, path, name, seen_path in cases:
            before = len(upstreams[name].seen)
            status, body = https_request(
                config.https_port, FQDN, pki.ca, path, method=method, body=b"x"
            )
            assert status == 200, (path, body, nginx.log())
            assert upstreams[name].seen[before].path == seen_path
            for untrusted in (None, pki.rogue):  # no CA, or another CA: the handshake fails
                with pytest.raises(ssl.SSLCertVerificationError):
                    https_request(config.https_port, FQDN, untrusted, path, method=method)
        # A name the certificate does not cover is refused by the client, too.
        with pytest.raises(ssl.SSLCertVerificationError):
            https_request(config.https_port, "coordinator.other.svc.cluster.local", pki.ca, "/")
        plain = plain_request(config.http_port, "/proxy/worker/worker-0/metrics")
        if layout == "one-port":
            assert plain[0] == 400  # nginx: "The plain HTTP request was sent to HTTPS port"
        else:
            assert plain[0] == 200  # kept for clients not yet switched
        assert plain_request(plan.status_port, "/status")[0] == 200  # the exporter's: plain
    finally:
        nginx.stop()


def _s_client(port: int, ca: Ca, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
         "-servername", FQDN, "-CAfile", str(ca.cert), "-verify_return_error", *flags],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
def test_only_tls_1_2_and_1_3_with_modern_ciphers(
    proxy_nginx: ProxyNginx, layout: str, tmp_path: Path, pki: Pki
):
    config = _config(layout, grpc=True)
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY, config=config, status_port=free_port(), server_ca_cert=pki.ca.pem
        )
    )
    settings = settings_for(proxy_nginx, tmp_path)
    install_server_certificate(settings, pki.proxy)
    nginx = start(proxy_nginx, tmp_path, plan)
    assert config.grpc_port is not None
    try:
        for port in (config.https_port, config.grpc_port):
            for version in ("-tls1_2", "-tls1_3"):
                done = _s_client(port, pki.ca, version)
                assert done.returncode == 0, (version, done.stdout, done.stderr)
                assert "Verify return code: 0 (ok)" in done.stdout
            # SECLEVEL=0 lets this client offer TLS 1.0/1.1: the refusal is the server's.
            for version in ("-tls1", "-tls1_1"):
                done = _s_client(port, pki.ca, version, "-cipher", "DEFAULT@SECLEVEL=0")
                assert done.returncode != 0, (version, done.stdout)
                assert "alert protocol version" in done.stderr, done.stderr
            # TLS 1.2 without forward secrecy (static RSA key exchange) or AEAD is refused.
            for cipher in ("AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA"):
                done = _s_client(port, pki.ca, "-tls1_2", "-cipher", cipher)
                assert done.returncode != 0, (cipher, done.stdout)
    finally:
        nginx.stop()


def test_grpc_over_tls_carries_a_trace(
    proxy_nginx: ProxyNginx, tmp_path: Path, pki: Pki, fake_dns: str
):
    curl = require_binary("curl")
    seen: list[tuple[dict[str, str], bytes]] = []
    listener = start_grpc_upstream(seen)  # a cleartext receiver: only the proxy's side is TLS
    config = _config("one-port", grpc=True)
    assert config.grpc_port is not None
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=config,
            backend_workload_tracing_receivers={
                "otlp_grpc": f"tempo.test:{listener.getsockname()[1]}"
            },
            resolvers=[fake_dns],
            status_port=free_port(),
            server_ca_cert=pki.ca.pem,
        )
    )
    assert plan.proxied_telemetry.workload_tracing_receivers == {
        "otlp_grpc": f"{FQDN}:{config.grpc_port}"
    }
    settings = settings_for(proxy_nginx, tmp_path)
    install_server_certificate(settings, pki.proxy)
    nginx = start(proxy_nginx, tmp_path, plan)
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    service = resource.resource.attributes.add()
    service.key, service.value.string_value = "service.name", "worker"
    span = resource.scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = "through-tls", b"\x07" * 16, b"\x08" * 8

    def send(*trust: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [curl, "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
             *trust, "--resolve", f"{FQDN}:{config.grpc_port}:127.0.0.1",
             "-H", "content-type: application/grpc",
             "--data-binary", "@-", f"https://{FQDN}:{config.grpc_port}{EXPORT}"],
            input=grpc_frame(request.SerializeToString()),
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip

    try:
        done = send("--cacert", str(pki.ca.cert))
        assert done.stdout.decode() == "200 2", (done.stderr, nginx.log())
        ((headers, body),) = seen
        assert headers[":path"] == EXPORT
        received = ExportTraceServiceRequest()
        received.ParseFromString(body[5:])
        assert received == request  # the trace, unchanged
        refused = send("--cacert", str(pki.rogue.cert))
        assert refused.returncode == 60, refused.stderr  # curl: peer certificate not verified
        assert len(seen) == 1
    finally:
        nginx.stop()
        listener.close()


# --- the proxy verifies its TLS backends ------------------------------------------------------

BACKEND_CASES = ["verified", "unknown-ca", "other-name", "no-trust"]


def _backend_leaf(pki: Pki, case: str) -> Leaf:
    return {
        "unknown-ca": pki.backend_from_rogue,
        "other-name": pki.backend_other_name,
    }.get(case, pki.backend)


@pytest.mark.parametrize("case", BACKEND_CASES)
def test_an_https_backend_is_reached_only_when_verified(
    proxy_nginx: ProxyNginx, case: str, tmp_path: Path, pki: Pki, fake_dns: str
):
    upstream = start_upstream("loki", tls=server_context(_backend_leaf(pki, case)))
    config = WorkerTelemetryProxyConfig(free_port(), free_port())
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=config,
            backend_loki_urls={"loki/0": f"https://backend.test:{upstream.port}/push"},
            resolvers=[fake_dns],
            status_port=free_port(),
            upstream_trust=case != "no-trust",
        )
    )
    settings = settings_for(proxy_nginx, tmp_path)
    if case != "no-trust":
        install_upstream_trust(settings, pki.ca)
    else:
        assert [p.reason for p in plan.problems] == ["TLS backend refused: no CA to verify it"]
    nginx = start(proxy_nginx, tmp_path, plan)
    try:
        status, _ = _post(config.http_port, "/proxy/loki/loki-0/push")
        if case == "verified":
            assert status == 200, nginx.log()
            assert [seen.path for seen in upstream.seen] == ["/push"]
        else:
            assert status == 502, nginx.log()
            assert upstream.seen == []  # nothing reached the backend unverified
            if case != "no-trust":
                assert "certificate" in nginx.log()  # nginx says why: verify error
    finally:
        nginx.stop()
        upstream.server.shutdown()
        upstream.server.server_close()


def _post(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("POST", path, body=b"logs")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("case", BACKEND_CASES)
def test_a_grpcs_backend_is_reached_only_when_verified(
    proxy_nginx: ProxyNginx, case: str, tmp_path: Path, pki: Pki, fake_dns: str
):
    curl = require_binary("curl")
    seen: list[tuple[dict[str, str], bytes]] = []
    listener = start_grpc_upstream(seen, server_context(_backend_leaf(pki, case), alpn=["h2"]))
    port = listener.getsockname()[1]
    config = WorkerTelemetryProxyConfig(free_port(), free_port(), grpc_port=free_port())
    assert config.grpc_port is not None
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=config,
            backend_workload_tracing_receivers={
                "otlp_grpc": f"backend.test:{port}",
                "otlp_http": f"https://backend.test:{port + 1}",  # says: TLS on every port
            },
            resolvers=[fake_dns],
            status_port=free_port(),
            upstream_trust=case != "no-trust",
        )
    )
    assert [route.tls for route in plan.grpc_routes] == [True]
    settings = settings_for(proxy_nginx, tmp_path)
    if case != "no-trust":
        install_upstream_trust(settings, pki.ca)
    nginx = start(proxy_nginx, tmp_path, plan)
    try:
        done = subprocess.run(
            [curl, "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
             "-H", "content-type: application/grpc", "--data-binary", "@-",
             f"http://127.0.0.1:{config.grpc_port}{EXPORT}"],
            # A refused request is sent without a body: nginx answers 502 before reading one and
            # then resets the stream, which curl may report instead of the answer.
            input=grpc_frame(b"abc") if case == "verified" else b"",
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        if case == "verified":
            assert done.stdout.decode() == "200", (done.stderr, nginx.log())
            assert [body for _, body in seen] == [grpc_frame(b"abc")]
        else:
            assert done.stdout.decode() == "502", (done.stderr, nginx.log())
            assert seen == []
    finally:
        nginx.stop()
        listener.close()


# --- renewal under load -------------------------------------------------------------------------

REQUESTS = 2000
PER_CONNECTION = 20


@dataclass
class Load:
    done: int = 0
    reused_closed: int = 0
    failures: list[str] = field(default_factory=list[str])
    finished: bool = False


def _load(port: int, ca: Ca, load: Load) -> None:
    """``REQUESTS`` GETs: half on fresh connections, half ``PER_CONNECTION`` per kept-alive one.

    A kept-alive connection that the server closed while idle (an old worker finishing after a
    reload closes its idle connections) fails before any byte of a response; like every HTTP
    client, the request (a GET, idempotent) is then sent again on a new connection (RFC 9110,
    9.2.2) and counted in ``reused_closed``. Anything else is a failure.
    """
    failures: list[str] = []
    path = "/proxy/worker/worker-0/metrics"
    connection: http.client.HTTPSConnection | None = None
    for i in range(REQUESTS):
        fresh = i % 2 == 0
        try:
            if fresh:
                status, _ = https_request(port, FQDN, ca, path)
            else:
                if connection is None or (i // 2) % PER_CONNECTION == 0:
                    if connection is not None:
                        connection.close()
                    connection = https_connection(port, FQDN, ca)
                    connection.connect()
                try:
                    connection.request("GET", path)
                    response = connection.getresponse()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    load.reused_closed += 1
                    connection.close()
                    connection = https_connection(port, FQDN, ca)
                    connection.request("GET", path)
                    response = connection.getresponse()
                status = response.status
                response.read()
            if status != 200:
                failures.append(f"request {i}: {status}")
        except (OSError, http.client.HTTPException) as e:
            failures.append(f"request {i} ({'fresh' if fresh else 'kept'}): {e!r}")
            connection = None
        load.done = i + 1
    if connection is not None:
        connection.close()
    load.failures = failures
    load.finished = True


def test_certificate_renewal_under_load_drops_no_request(
    nginx_bin: str, tmp_path: Path, pki: Pki, upstreams: dict[str, Upstream]
):
    config = WorkerTelemetryProxyConfig(free_port(), free_port())
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=config,
            workers=[_worker(upstreams["worker"].port).model_copy(update={"address": "127.0.0.1"})],
            status_port=free_port(),
            server_ca_cert=pki.ca.pem,
        )
    )
    settings = nginx_settings(tmp_path)
    install_server_certificate(settings, pki.proxy)
    text = render_nginx_config(plan, settings)
    nginx = RunningNginx(nginx_bin, tmp_path, text)
    load = Load()
    try:
        wait_for_port(config.https_port)
        worker = threading.Thread(target=_load, args=(config.https_port, pki.ca, load))
        worker.start()
        renewed = pki.proxy
        for n in range(3):
            while load.done < (n + 1) * REQUESTS // 5 and worker.is_alive():
                time.sleep(0.01)
            renewed = issue(pki.ca, tmp_path / f"renewed-{n}", [FQDN], stem=f"renewed-{n}")
            install_server_certificate(settings, renewed)
            nginx.reload(text)  # the same configuration; nginx reads the new files
        worker.join(timeout=300)
        assert load.finished
        assert load.failures == [], (load.failures[:5], nginx.log())
        assert load.done == REQUESTS
        # A kept-alive connection closed by a reload had carried no request: each request
        # reached the backend exactly once, and at most one idle connection closed per reload.
        assert len(upstreams["worker"].seen) == REQUESTS
        assert load.reused_closed <= 3
        deadline = time.monotonic() + 10
        while served_certificate_serial(config.https_port, FQDN) != renewed.serial:
            assert time.monotonic() < deadline, "the renewed certificate is not served"
            time.sleep(0.1)
        assert nginx.alive()
    finally:
        nginx.stop()


# --- check_backend_tls -------------------------------------------------------------------------


def test_check_backend_tls_names_what_fails(pki: Pki):
    trusted = pki.ca.pem
    servers = {
        case: start_upstream(case, tls=server_context(_backend_leaf(pki, case)))
        for case in ("verified", "unknown-ca", "other-name")
    }
    try:
        port = servers["verified"].port
        assert (
            check_backend_tls("127.0.0.1", port, server_name="backend.test", trusted_pem=trusted)
            is None
        )
        unknown = check_backend_tls(
            "127.0.0.1",
            servers["unknown-ca"].port,
            server_name="backend.test",
            trusted_pem=trusted,
        )
        assert unknown is not None
        assert "certificate not accepted for backend.test" in unknown
        # The backend sends its chain, ending in a CA nobody trusts.
        assert "self-signed certificate in certificate chain" in unknown
        other = check_backend_tls(
            "127.0.0.1",
            servers["other-name"].port,
            server_name="backend.test",
            trusted_pem=trusted,
        )
        assert other is not None
        assert "mismatch" in other.lower()
        assert "backend.test" in other
        untrusted = check_backend_tls(
            "127.0.0.1", port, server_name="backend.test", trusted_pem=None
        )
        assert untrusted is not None
        assert "certificate not accepted" in untrusted
    finally:
        for server in servers.values():
            server.server.shutdown()
            server.server.server_close()
    refused = check_backend_tls("127.0.0.1", free_port(), trusted_pem=trusted, timeout=2)
    assert refused is not None
    assert refused.endswith("connection refused")
    assert refused.startswith("127.0.0.1:")


def test_check_backend_tls_offers_h2_to_a_grpc_receiver(pki: Pki):
    seen: list[tuple[dict[str, str], bytes]] = []
    listener = start_grpc_upstream(seen, server_context(pki.backend, alpn=["h2"]))
    try:
        port = listener.getsockname()[1]
        reason = check_backend_tls(
            "127.0.0.1", port, server_name="backend.test", trusted_pem=pki.ca.pem, alpn=("h2",)
        )
        assert reason is None
    finally:
        listener.close()


def test_check_backend_tls_is_bounded_in_time(pki: Pki):
    """A backend that accepts the connection and never answers the handshake."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        began = time.monotonic()
        reason = check_backend_tls("127.0.0.1", port, trusted_pem=pki.ca.pem, timeout=0.5)
        assert time.monotonic() - began < 5
    assert reason == f"127.0.0.1:{port}: no answer within 0.5s"


# --- every layout passes nginx -t ---------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("trust", [True, False])
def test_every_tls_layout_passes_nginx_t(
    proxy_nginx: ProxyNginx, layout: str, trust: bool, tmp_path: Path, pki: Pki
):
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=_config(layout, grpc=True),
            backend_loki_urls={"loki/0": "https://loki-0.test:3100/push"},
            backend_workload_tracing_receivers={
                "otlp_http": "https://tempo.test:4318",
                "otlp_grpc": "tempo.test:4317",
            },
            resolvers=["127.0.0.1:53"],
            status_port=free_port(),
            server_ca_cert=pki.ca.pem,
            upstream_trust=trust,
        )
    )
    settings = settings_for(proxy_nginx, tmp_path)
    install_server_certificate(settings, pki.proxy)
    if trust:
        install_upstream_trust(settings, pki.ca)
    done = nginx_test(proxy_nginx.binary, render_nginx_config(plan, settings), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warn" not in done.stderr, done.stderr  # nothing deprecated on either nginx


def test_a_large_trust_file_with_many_worker_routes_loads_in_seconds(
    proxy_nginx: ProxyNginx, tmp_path: Path, pki: Pki
):
    """nginx 1.22 loads a trusted file once per location that has it: at http level, inherited
    by every worker location, 2,000 of them with the system bundle took over 30 s in nginx -t
    (found while writing this). Only the TLS backends' locations have it."""
    system = Path(ssl.get_default_verify_paths().openssl_cafile)
    if not system.is_file():
        unavailable(f"no system CA bundle at {system} (Debian package: ca-certificates)")
    workers = [
        WorkerUnitData(
            juju_topology=JujuTopology(application="w", unit=f"w/{i}", charm_name="w"),
            address=f"w-{i}.test",
            metrics_endpoint=MetricsEndpoint(port=9090),
        )
        for i in range(2000)
    ]
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=_config("two-ports", grpc=True),
            workers=workers,
            backend_loki_urls={"loki/0": "https://loki-0.test:3100/push"},
            resolvers=["127.0.0.1:53"],
            status_port=free_port(),
            server_ca_cert=pki.ca.pem,
            upstream_trust=True,
        )
    )
    settings = settings_for(proxy_nginx, tmp_path)
    install_server_certificate(settings, pki.proxy)
    Path(settings.upstream_ca_path).write_text(pki.ca.pem + system.read_text())
    began = time.monotonic()
    done = nginx_test(proxy_nginx.binary, render_nginx_config(plan, settings), tmp_path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 10
