"""Helpers for tests that run the real nginx: settings, ``nginx -t``, a running nginx, ports,
recording HTTP upstreams and a tiny DNS server."""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from coordinated_mesh.proxy.nginx import NginxSettings, render_nginx_config
from coordinated_mesh.proxy.plan import TelemetryProxyPlan


def nginx_settings(prefix: Path, *, access_log: bool = False) -> NginxSettings:
    """Settings that run the rendered config unprivileged-style in a temporary prefix.

    The access log (``prefix/access.log``) is unbuffered, so a test reads a request's line as
    soon as the response arrives; tests/real/test_access_log.py tests the buffered default.
    """
    return NginxSettings(
        temp_dir=str(prefix),
        listen_address="127.0.0.1",
        user="root" if os.geteuid() == 0 else None,
        access_log=str(prefix / "access.log") if access_log else None,
        access_log_buffered=False,
        worker_processes=1,
        tls_dir=str(prefix / "tls"),
    )


def nginx_test(nginx: str, config: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    """Run ``nginx -t`` on a configuration text (written into ``prefix``)."""
    path = prefix / "nginx.conf"
    path.write_text(config)
    return subprocess.run(
        [nginx, "-t", "-q", "-e", "stderr", "-p", f"{prefix}/", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RunningNginx:
    """An nginx master in the foreground, with its stderr in a file."""

    def __init__(self, nginx: str, prefix: Path, config: str) -> None:
        self.nginx = nginx
        self.prefix = prefix
        self.config_path = prefix / "nginx.conf"
        self.config_path.write_text(config)
        self.log_path = prefix / "nginx.stderr"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*self._base_args(), "-g", "daemon off;"], stdout=self._log, stderr=self._log
        )

    def _base_args(self) -> list[str]:
        return [self.nginx, "-e", "stderr", "-p", f"{self.prefix}/", "-c", str(self.config_path)]

    def reload(self, config: str) -> None:
        self.config_path.write_text(config)
        subprocess.run([*self._base_args(), "-s", "reload"], check=True, timeout=30)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def serving(nginx: str, prefix: Path, plan: TelemetryProxyPlan) -> Generator[RunningNginx]:
    """Real nginx serving ``plan`` as the library renders it (access log on), until the block ends."""
    running = RunningNginx(
        nginx, prefix, render_nginx_config(plan, nginx_settings(prefix, access_log=True))
    )
    try:
        wait_for_port(plan.config.http_port)
        yield running
    finally:
        running.stop()


@dataclass(frozen=True)
class ProxyNginx:
    """An nginx and the rendering it needs: ``pooled`` is ``NginxSettings.upstream_resolve``."""

    binary: str
    pooled: bool

    @property
    def settle_seconds(self) -> float:
        """How long to wait after start before a request: a pooled name is resolved
        asynchronously just after nginx starts (milliseconds); a request before gets 502."""
        return 0.5 if self.pooled else 0.0


# --- upstreams ------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request an upstream received."""

    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes


class _CountingServer(ThreadingHTTPServer):
    """Counts the TCP connections it accepts (one handler serves every request of one).

    ``TCP_NODELAY`` as real servers set it (Go's net/http does by default): the handler writes
    headers and body separately, and on a reused connection Nagle's algorithm would hold the
    body for the proxy's delayed ACK (40 ms a request).
    """

    accepted = 0

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        self.accepted += 1
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().process_request(request, client_address)  # type: ignore[arg-type]


@dataclass
class Upstream:
    """A small HTTP server on loopback that records requests and names itself in replies."""

    name: str
    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list[Seen])

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def connections(self) -> int:
        """How many TCP connections this upstream has accepted."""
        return self.server.accepted if isinstance(self.server, _CountingServer) else 0


def _handler(name: str, seen: list[Seen]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen.append(
                Seen(self.command, self.path, self.request_version, dict(self.headers), body)
            )
            reply = f"{name} {self.command} {self.path} {len(body)}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST = _record  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def start_upstream(
    name: str, address: tuple[str, int] = ("127.0.0.1", 0), *, tls: ssl.SSLContext | None = None
) -> Upstream:
    """Start a recording HTTP upstream on a free loopback port (stop with ``server.shutdown()``).

    ``address`` may name another loopback address and a given port (a backend that "moved");
    with ``tls`` it serves HTTPS only (a failed handshake is dropped, nothing recorded).
    """
    seen: list[Seen] = []
    upstream = Upstream(name, _CountingServer(address, _handler(name, seen)), seen)
    if tls is not None:
        upstream.server.socket = tls.wrap_socket(upstream.server.socket, server_side=True)
    upstream.server.daemon_threads = True
    threading.Thread(target=upstream.server.serve_forever, args=(0.05,), daemon=True).start()
    return upstream


# --- a tiny DNS server: every name under .test is 127.0.0.1, everything else NXDOMAIN --------
# A test may change a name's answer while it runs (``DnsServer.names``): another address, or
# ``None`` for NXDOMAIN (a backend whose Service or pod is gone).


def _dns_answer(query: bytes, names: dict[str, str | None]) -> bytes:
    (ident, _flags, qdcount) = struct.unpack("!HHH", query[:6])
    offset, labels = 12, []
    while query[offset]:
        length = query[offset]
        labels.append(query[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    qtype = struct.unpack("!H", query[offset + 1 : offset + 3])[0]
    question = query[12 : offset + 5]
    name = ".".join(labels).lower()
    address = names.get(name, "127.0.0.1" if name.endswith(".test") else None)
    known = address is not None and qdcount == 1
    answers = b""
    if known and address is not None and qtype == 1:  # A
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(address)
    rcode = 0 if known else 3
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


class DnsServer(socketserver.ThreadingUDPServer):
    """The DNS server; ``names`` overrides answers (an address, or ``None``: NXDOMAIN)."""

    names: dict[str, str | None]


class _DnsHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        server = self.server
        names = server.names if isinstance(server, DnsServer) else {}
        with contextlib.suppress(IndexError, struct.error):
            sock.sendto(_dns_answer(data, dict(names)), self.client_address)


def start_dns() -> DnsServer:
    """Start the DNS server on a free loopback port (stop with ``shutdown()``)."""
    server = DnsServer(("127.0.0.1", 0), _DnsHandler)
    server.names = {}
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server
