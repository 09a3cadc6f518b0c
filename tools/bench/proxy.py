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

Like with like: direct and proxied runs use the same ``wrk`` (one thread, ``--connections``
kept-alive connections, the same request), each target gets a warm-up run first, and each case is
measured ``--runs`` times with direct and proxied runs interleaved (order reversed every other
round); the table has medians, the range of the per-round ratios, and the CPU time per request
of each process (``/proc``), which shows where the proxied time goes. The proxy runs the charm's
defaults (two worker processes unless ``--proxy-workers``, the buffered access log into a pipe
that a thread drains, as Pebble reads a service's stdout) but for paths and the listen address;
the static backend runs one worker. Nothing is pinned: the kernel shares the CPUs between
``wrk``, both nginx and the backend (and whatever else runs; the load average is printed before
and after).

Usage (from the repository root)::

    .tox/unit/bin/python tools/bench/proxy.py              # about 3.5 minutes
    .tox/unit/bin/python tools/bench/proxy.py --quick      # one 1 s run each (smoke)
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Generator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_repo_paths, markdown_table, median

add_repo_paths()

from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig  # noqa: E402
from coordinated_mesh.proxy.nginx import NginxSettings, render_nginx_config  # noqa: E402
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
    prefix.mkdir(parents=True, exist_ok=True)
    server = RunningNginx(nginx, prefix, config)
    try:
        wait_for_port(port)
        yield server
    finally:
        server.stop()


@contextmanager
def proxy_to(
    nginx: str, prefix: Path, backend_port: int, *, resolver: str, pooled: bool, workers: int
) -> Generator[Proxy]:
    """The library's proxy in front of ``backend.test:<backend_port>``: its port and pid."""
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
    defaults = NginxSettings()
    settings = replace(
        nginx_settings(prefix),
        upstream_resolve=pooled,
        worker_processes=workers,
        access_log=drained_pipe(prefix / "stdout.fifo"),
        access_log_buffered=defaults.access_log_buffered,
    )
    with running_nginx(nginx, prefix, render_nginx_config(plan, settings), port) as server:
        yield Proxy(port, server.process.pid)


@dataclass(frozen=True)
class Proxy:
    port: int
    pid: int


def drained_pipe(path: Path) -> str:
    """A FIFO (stdout under Pebble is a pipe) that a thread reads until its writers close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)

    def drain() -> None:
        with path.open("rb", buffering=0) as pipe:  # waits for nginx to open it
            while pipe.read(65536):
                pass

    threading.Thread(target=drain, daemon=True).start()
    return str(path)


@contextmanager
def prometheus_receiver(binary: str, prefix: Path) -> Generator[tuple[int, int]]:
    """A Prometheus remote-write receiver: its port and pid."""
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
            yield port, process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


# --- wrk and CPU time ------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """One ``wrk`` run: throughput, latency, failed requests, CPU time per request by process."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: dict[str, float]


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_TICKS = os.sysconf("SC_CLK_TCK")


def _latency(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {percentile}% latency in wrk's output:\n{text}")
    return float(match[1]) * _UNIT_MS[match[2]]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its threads have used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15


def nginx_workers(master: int) -> list[int]:
    """The worker processes of an nginx master."""
    tasks = Path(f"/proc/{master}/task").iterdir()
    return [int(pid) for task in tasks for pid in (task / "children").read_text().split()]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    wrk: str,
    url: str,
    *,
    body: Path | None,
    duration: int,
    connections: int,
    prefix: Path,
    processes: dict[str, list[int]],
) -> Figures:
    """One ``wrk`` run against ``url``; ``processes`` are the servers whose CPU time counts."""
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
    script.write_text("\n".join(lines) + "\n")
    before = {name: sum(map(cpu_seconds, pids)) for name, pids in processes.items()}
    wrk_before = _children_cpu()
    result = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration + 60, check=False,
    )  # fmt: skip
    cpu = {"wrk": _children_cpu() - wrk_before}
    cpu |= {name: sum(map(cpu_seconds, pids)) - before[name] for name, pids in processes.items()}
    out = result.stdout
    requests = re.search(r"(\d+) requests in ", out)
    if result.returncode != 0 or "Requests/sec" not in out or requests is None:
        raise RuntimeError(f"wrk failed on {url}:\n{out}{result.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    # Count non-2xx answers: wrk reports them as "Non-2xx or 3xx responses".
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx[1]) if non_2xx else 0
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    count = max(int(requests[1]), 1)
    per_request = {name: 1e6 * seconds / count for name, seconds in cpu.items()}
    return Figures(rps, _latency(out, "50"), _latency(out, "99"), errors, per_request)


def measure(
    targets: dict[str, tuple[str, dict[str, list[int]]]],
    *,
    wrk: str,
    body: Path | None,
    runs: int,
    warm_up: bool,
    duration: int,
    connections: int,
    prefix: Path,
) -> dict[str, list[Figures]]:
    """``runs`` runs of every target (``url``, its processes), interleaved, after a warm-up."""
    names = list(targets)
    if warm_up:
        for url, _ in targets.values():
            run_wrk(wrk, url, body=body, duration=1, connections=connections, prefix=prefix,
                    processes={})  # fmt: skip
    results: dict[str, list[Figures]] = {name: [] for name in names}
    for run in range(runs):
        for name in names if run % 2 == 0 else names[::-1]:
            url, processes = targets[name]
            results[name].append(
                run_wrk(
                    wrk,
                    url,
                    body=body,
                    duration=duration,
                    connections=connections,
                    prefix=prefix,
                    processes=processes,
                )
            )
    return results


def _cpu(figures: list[Figures], names: tuple[str, ...]) -> str:
    return "+".join(f"{median(f.cpu_us[name] for f in figures):.1f}" for name in names)


def _row(
    backend: str, request: str, rendering: str, direct: list[Figures], proxied: list[Figures]
) -> list[object]:
    ratios = [p.rps / d.rps for d, p in zip(direct, proxied, strict=True)]
    return [
        backend,
        request,
        rendering,
        f"{median(f.rps for f in direct):.0f}",
        f"{median(f.rps for f in proxied):.0f}",
        f"{median(ratios):.2f}",
        f"{min(ratios):.2f}-{max(ratios):.2f}",
        f"{median(f.p50_ms for f in direct):.2f} / {median(f.p99_ms for f in direct):.2f}",
        f"{median(f.p50_ms for f in proxied):.2f} / {median(f.p99_ms for f in proxied):.2f}",
        _cpu(direct, ("wrk", "backend")),
        _cpu(proxied, ("wrk", "backend", "proxy")),
        f"{_cpu_total(direct) / _cpu_total(proxied):.2f}",
        sum(f.errors for f in direct + proxied),
    ]


def _cpu_total(figures: list[Figures]) -> float:
    """Median CPU time per request, all measured processes together."""
    return median(sum(f.cpu_us.values()) for f in figures)


DEFAULT_POOLED_NGINX = Path.home() / ".cache/nginx-forky/root/run-nginx"
RENDERINGS = ("$upstream", "pooled")
"""The two renderings compared: ``proxy_pass $upstream`` (nginx 1.22) and pooled upstreams."""
HEADERS = [
    "backend", "request", "proxy", "direct req/s", "proxied req/s", "proxied/direct",
    "ratio range", "direct p50 / p99 ms", "proxied p50 / p99 ms",
    "CPU us/req direct (wrk+backend)", "CPU us/req proxied (wrk+backend+proxy)",
    "CPU direct/proxied", "errors",
]  # fmt: skip
"""``CPU direct/proxied``: CPU time per request direct over proxied, all processes together: the
ratio proxied/direct would tend to where the CPUs are the only limit (all of them busy)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5, help="runs of each target per case")
    parser.add_argument(
        "--proxy-workers",
        type=int,
        default=NginxSettings().worker_processes,
        help="the proxy's worker processes (default: the charm's, %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one 1 s run, 4 connections, no warm-up (smoke)"
    )
    parser.add_argument(
        "--pooled-nginx",
        default=str(DEFAULT_POOLED_NGINX),
        help="nginx >= 1.27.3 for the pooled rendering (default: tools/nginx-forky.sh's)",
    )
    args = parser.parse_args(argv)
    duration, connections, runs = (1, 4, 1) if args.quick else (
        args.duration, args.connections, args.runs
    )  # fmt: skip
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
    load_before = os.getloadavg()
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
        static = stack.enter_context(
            running_nginx(
                tools["nginx"],
                root / "static",
                _static_backend_config(root / "static", static_port),
                static_port,
            )
        )
        receiver, receiver_pid = stack.enter_context(
            prometheus_receiver(tools["prometheus"], root / "prometheus")
        )
        backend_pids = {static_port: nginx_workers(static.process.pid), receiver: [receiver_pid]}
        proxies: dict[tuple[int, str], Proxy] = {}
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
                        workers=args.proxy_workers,
                    )
                )
        time.sleep(0.5)  # the pooled upstreams resolve their names just after start
        cases = [
            ("static", "GET (small)", static_port, None),
            ("static", f"POST {large.stat().st_size // 1024} KiB", static_port, large),
            ("prometheus", f"remote write {small.stat().st_size} B", receiver, small),
            ("prometheus", f"remote write {large.stat().st_size // 1024} KiB", receiver, large),
        ]
        for backend, request, direct_port, body in cases:
            backend_cpu = {"backend": backend_pids[direct_port]}
            targets = {"direct": (f"http://127.0.0.1:{direct_port}{WRITE_PATH}", backend_cpu)}
            for rendering in RENDERINGS:
                proxy = proxies[direct_port, rendering]
                workers = nginx_workers(proxy.pid)
                targets[rendering] = (
                    f"http://127.0.0.1:{proxy.port}{ROUTE}", backend_cpu | {"proxy": workers}
                )  # fmt: skip
            results = measure(targets, wrk=tools["wrk"], body=body, runs=runs,
                              warm_up=not args.quick, duration=duration,
                              connections=connections, prefix=root)  # fmt: skip
            for rendering in RENDERINGS:
                rows.append(
                    _row(backend, request, rendering, results["direct"], results[rendering])
                )
    load_after = os.getloadavg()
    print("## Proxy throughput\n")
    versions = {r: _nginx_version(proxy_nginx[r]) for r in RENDERINGS}
    print(f"proxy: nginx {versions['$upstream']} ($upstream), nginx {versions['pooled']} (pooled), "
          f"{args.proxy_workers} worker processes, buffered access log into a pipe; "
          f"{connections} connections on one wrk thread, {runs} run(s) of {duration} s per "
          f"target and case, interleaved{'' if args.quick else ', after a warm-up'}; "
          f"{os.cpu_count()} CPUs, nothing pinned, shared by wrk, both nginx, the backend and "
          f"anything else running (load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after)")  # fmt: skip
    print()
    print(markdown_table(HEADERS, rows))
    return 0


def _nginx_version(nginx: str) -> str:
    result = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return result.stderr.strip().split("/")[-1]


if __name__ == "__main__":
    sys.exit(main())
