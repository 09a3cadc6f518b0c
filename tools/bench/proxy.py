#!/usr/bin/env python3
"""Proxy throughput and latency: direct vs through the rendered nginx proxy, with ``wrk``.

Prints one Markdown table (figures, not pass/fail): requests/s, p50 and p99 latency, direct and
through the proxy (the library's nginx configuration, rendered from a plan with one remote-write
backend named ``backend.test``, resolved by nginx through a DNS server on loopback, route
``/proxy/remote-write/prometheus-0/write``), and the ratio proxied/direct, for both renderings:
``$upstream`` (Debian's nginx 1.22, no pool) and ``pooled`` (``NginxSettings.upstream_resolve``,
the nginx >= 1.27.3 of ``tools/nginx-forky.sh``: ``server ... resolve`` and ``keepalive``), for:

``static``
    a second nginx answering every request itself (``return 204``): the worst case, where the
    proxy doubles the work; a small GET and a 64 KiB POST.
``prometheus``
    a real Prometheus remote-write receiver (``--web.enable-remote-write-receiver``): a small
    remote-write POST (one series) and a 64 KiB one (many series), both valid snappy-framed
    ``WriteRequest`` protobufs with a fixed timestamp (re-sent samples are duplicates, accepted).

Everything listens on loopback; each run is ``--duration`` seconds with ``--connections``
connections on one ``wrk`` thread; nginx runs one worker process per instance (2 shared cores).

Usage (from the repository root)::

    .tox/unit/bin/python tools/bench/proxy.py              # about 2 minutes
    .tox/unit/bin/python tools/bench/proxy.py --quick      # 1 s runs (smoke)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_repo_paths, markdown_table

add_repo_paths()

from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig  # noqa: E402
from coordinated_mesh.proxy.nginx import render_nginx_config  # noqa: E402
from coordinated_mesh.proxy.plan import (  # noqa: E402
    CoordinatorIdentity,
    TelemetryProxyInputs,
    build_telemetry_proxy,
)

from tests.support.nginx import (  # noqa: E402
    RunningNginx,
    free_port,
    nginx_settings,
    start_dns,
    wait_for_port,
)

ROUTE = "/proxy/remote-write/prometheus-0/write"
WRITE_PATH = "/api/v1/write"
TIMESTAMP_MS = 1_700_000_000_000
"""Every sample's timestamp: fixed, so re-sent samples are duplicates, not out of order."""


# --- Remote-write bodies: protobuf and snappy by hand (remote-write spec, snappy format) ------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _timeseries(name: str, index: int) -> bytes:
    """One ``WriteRequest.timeseries`` entry (field 1): labels (field 1), one sample (field 2)."""
    labels = [("__name__", name), ("bench", "proxy"), ("series", f"s{index:06d}")]
    encoded = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in labels)
    # Sample: value (field 1, a little-endian double), timestamp (field 2, a varint).
    sample = b"\x09" + struct.pack("<d", 1.0) + b"\x10" + _varint(TIMESTAMP_MS)
    return _field(1, encoded + _field(2, sample))


def snappy_literal_block(data: bytes) -> bytes:
    """``data`` as a valid snappy block of literals only (no compression, any decoder reads it)."""
    out = bytearray(_varint(len(data)))
    for start in range(0, len(data), 65536):
        chunk = data[start : start + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + n.to_bytes(2, "little")
        out += chunk
    return bytes(out)


def write_request(min_bytes: int) -> bytes:
    """A snappy-framed ``WriteRequest`` of at least ``min_bytes`` (at least one series)."""
    series: list[bytes] = []
    while not series or sum(map(len, series)) < min_bytes:
        series.append(_timeseries("bench_proxy_value", len(series)))
    return snappy_literal_block(b"".join(series))


# --- Servers ---------------------------------------------------------------------------------


def _static_backend_config(prefix: Path, port: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log stderr warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  client_body_temp_path {prefix}/body;\n  access_log off;\n"
        "  client_max_body_size 64m;\n  client_body_buffer_size 1m;\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 204; }}\n  }}\n}}\n"
    )


@contextmanager
def running_nginx(nginx: str, prefix: Path, config: str, port: int) -> Generator[RunningNginx]:
    prefix.mkdir(parents=True)
    server = RunningNginx(nginx, prefix, config)
    try:
        wait_for_port(port)
        yield server
    finally:
        server.stop()


@contextmanager
def proxy_to(
    nginx: str, prefix: Path, backend_port: int, *, resolver: str, pooled: bool
) -> Generator[int]:
    """The library's proxy in front of ``backend.test:<backend_port>``; yields its port."""
    port = free_port()
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=CoordinatorIdentity(
                "coordinator", "bench", "00000000-0000-4000-8000-0000000000b0"
            ),
            config=WorkerTelemetryProxyConfig(http_port=port, https_port=port),
            backend_remote_write_urls={
                "prometheus/0": f"http://backend.test:{backend_port}{WRITE_PATH}"
            },
            resolvers=[resolver],
            status_port=free_port(),
        )
    )
    assert not plan.problems, plan.problems
    settings = replace(nginx_settings(prefix), upstream_resolve=pooled)
    with running_nginx(nginx, prefix, render_nginx_config(plan, settings), port):
        yield port


@contextmanager
def prometheus_receiver(binary: str, prefix: Path) -> Generator[int]:
    port = free_port()
    prefix.mkdir(parents=True)
    (prefix / "prometheus.yml").write_text("global: {scrape_interval: 1m}\n")
    with (prefix / "log").open("w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={prefix / 'prometheus.yml'}",
             f"--storage.tsdb.path={prefix / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--web.enable-remote-write-receiver"],
            stdout=log, stderr=log,
        )  # fmt: skip
        try:
            wait_for_port(port, timeout=30)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


# --- wrk -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {percentile}% latency in wrk's output:\n{text}")
    return float(match[1]) * _UNIT_MS[match[2]]


def run_wrk(
    wrk: str, url: str, *, body: Path | None, duration: int, connections: int, prefix: Path
) -> Figures:
    script = prefix / f"wrk-{time.monotonic_ns()}.lua"
    lines = []
    if body is not None:
        lines = [
            'wrk.method = "POST"',
            f'local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()',
            'wrk.headers["Content-Type"] = "application/x-protobuf"',
            'wrk.headers["Content-Encoding"] = "snappy"',
            'wrk.headers["X-Prometheus-Remote-Write-Version"] = "0.1.0"',
        ]
    # Count non-2xx answers: wrk reports them as "Non-2xx or 3xx responses".
    script.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration + 60, check=False,
    )  # fmt: skip
    out = result.stdout
    if result.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed on {url}:\n{out}{result.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx[1]) if non_2xx else 0
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    return Figures(rps, _latency(out, "50"), _latency(out, "99"), errors)


DEFAULT_POOLED_NGINX = Path.home() / ".cache/nginx-forky/root/run-nginx"
RENDERINGS = ("$upstream", "pooled")
"""The two renderings compared: ``proxy_pass $upstream`` (nginx 1.22) and pooled upstreams."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 s runs, 4 connections (smoke)")
    parser.add_argument(
        "--pooled-nginx",
        default=str(DEFAULT_POOLED_NGINX),
        help="nginx >= 1.27.3 for the pooled rendering (default: tools/nginx-forky.sh's)",
    )
    args = parser.parse_args(argv)
    duration, connections = (1, 4) if args.quick else (args.duration, args.connections)
    tools = {
        name: shutil.which(name) or f"/usr/sbin/{name}" for name in ("wrk", "nginx", "prometheus")
    }
    tools["pooled nginx"] = args.pooled_nginx
    missing = [name for name, path in tools.items() if not Path(path).exists()]
    if missing:
        print(
            f"missing: {', '.join(missing)} (Debian packages of those names; the pooled nginx: "
            "tools/nginx-forky.sh)",
            file=sys.stderr,
        )
        return 2
    proxy_nginx = {"$upstream": tools["nginx"], "pooled": tools["pooled nginx"]}
    rows: list[list[object]] = []
    dns = start_dns()
    resolver = f"127.0.0.1:{dns.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp, ExitStack() as stack:
        stack.callback(dns.server_close)
        stack.callback(dns.shutdown)
        root = Path(tmp)
        small, large = root / "small.bin", root / "large.bin"
        small.write_bytes(write_request(1))
        large.write_bytes(write_request(64 * 1024))
        static_port = free_port()
        stack.enter_context(
            running_nginx(
                tools["nginx"],
                root / "static",
                _static_backend_config(root / "static", static_port),
                static_port,
            )
        )
        receiver = stack.enter_context(
            prometheus_receiver(tools["prometheus"], root / "prometheus")
        )
        proxies: dict[tuple[int, str], int] = {}
        for name, backend_port in (("static", static_port), ("prometheus", receiver)):
            for rendering in RENDERINGS:
                prefix = root / f"proxy-{name}-{'pooled' if rendering == 'pooled' else 'vars'}"
                proxies[backend_port, rendering] = stack.enter_context(
                    proxy_to(
                        proxy_nginx[rendering],
                        prefix,
                        backend_port,
                        resolver=resolver,
                        pooled=rendering == "pooled",
                    )
                )
        cases = [
            ("static", "GET (small)", static_port, None),
            ("static", f"POST {large.stat().st_size // 1024} KiB", static_port, large),
            ("prometheus", f"remote write {small.stat().st_size} B", receiver, small),
            ("prometheus", f"remote write {large.stat().st_size // 1024} KiB", receiver, large),
        ]
        for backend, request, direct_port, body in cases:
            direct = run_wrk(tools["wrk"], f"http://127.0.0.1:{direct_port}{WRITE_PATH}", body=body,
                             duration=duration, connections=connections, prefix=root)  # fmt: skip
            for rendering in RENDERINGS:
                proxy_port = proxies[direct_port, rendering]
                proxied = run_wrk(tools["wrk"], f"http://127.0.0.1:{proxy_port}{ROUTE}", body=body,
                                  duration=duration, connections=connections, prefix=root)  # fmt: skip
                rows.append(
                    [
                        backend,
                        request,
                        rendering,
                        f"{direct.rps:.0f}",
                        f"{direct.p50_ms:.2f}",
                        f"{direct.p99_ms:.2f}",
                        f"{proxied.rps:.0f}",
                        f"{proxied.p50_ms:.2f}",
                        f"{proxied.p99_ms:.2f}",
                        f"{proxied.rps / direct.rps:.2f}",
                        direct.errors + proxied.errors,
                    ]
                )
    print("## Proxy throughput\n")
    versions = {r: _nginx_version(proxy_nginx[r]) for r in RENDERINGS}
    print(f"proxy: nginx {versions['$upstream']} ($upstream), nginx {versions['pooled']} (pooled); "
          f"{connections} connections, {duration} s per run, "
          f"{os.cpu_count()} CPUs shared by wrk, nginx and the backend")  # fmt: skip
    print()
    headers = [
        "backend", "request", "proxy", "direct req/s", "direct p50 ms", "direct p99 ms",
        "proxied req/s", "proxied p50 ms", "proxied p99 ms", "proxied/direct", "errors",
    ]  # fmt: skip
    print(markdown_table(headers, rows))
    return 0


def _nginx_version(nginx: str) -> str:
    result = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return result.stderr.strip().split("/")[-1]


if __name__ == "__main__":
    sys.exit(main())
