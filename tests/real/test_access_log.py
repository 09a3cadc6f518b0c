"""The default access log as Pebble receives it: buffered writes into a pipe.

Under Pebble a service's stdout is a pipe (Pebble sets ``exec.Cmd.Stdout`` to its log writer,
internals/overlord/servstate/handlers.go). The default ``access_log /dev/stdout proxy buffer=4k
flush=1s`` batches lines: each write is at most 4 KiB (``PIPE_BUF``, so it reaches the pipe
whole), a line waits at most a second, and nginx writes what it holds when a worker exits
(``ngx_conf_flush_files``, nginx's core/ngx_conf_file.c, 1.22 and 1.30). Here stdout is a FIFO
that the test reads, and nginx runs two worker processes, as the charm's default does.
"""

from __future__ import annotations

import http.client
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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

from tests.support.nginx import ProxyNginx, RunningNginx, free_port, nginx_settings, wait_for_port

IDENTITY = CoordinatorIdentity("coordinator", "mymodel", "12345678-1234-4234-8234-123456789abc")
LINE = re.compile(r'127\.0\.0\.1 \[[^]]+\] "GET /nothing/(\d+) HTTP/1\.1" 404 \d+ [\d.]+ "-" -')


class Pipe:
    """The reading end of a FIFO, read without blocking."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        # Opened before nginx: a non-blocking open for reading needs no writer.
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = b""
        self.eof = False

    def read(self) -> None:
        while not self.eof:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            self.eof = not chunk
            self.data += chunk

    def lines(self) -> list[str]:
        self.read()
        return self.data.decode().splitlines()

    def wait_for(self, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(lines := self.lines()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return lines


@pytest.fixture
def stdout_pipe(tmp_path: Path) -> Iterator[Pipe]:
    pipe = Pipe(tmp_path / "stdout.fifo")
    yield pipe
    os.close(pipe.fd)


def get(port: int, number: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/nothing/{number}")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_buffered_access_log_reaches_a_pipe_whole_and_in_time(
    proxy_nginx: ProxyNginx, tmp_path: Path, stdout_pipe: Pipe
):
    port = free_port()
    plan = build_telemetry_proxy(
        TelemetryProxyInputs(
            identity=IDENTITY,
            config=WorkerTelemetryProxyConfig(http_port=port, https_port=port),
            status_port=free_port(),
        )
    )
    defaults = NginxSettings()
    settings = replace(
        nginx_settings(tmp_path),
        access_log=str(tmp_path / "stdout.fifo"),
        access_log_buffered=defaults.access_log_buffered,
        worker_processes=defaults.worker_processes,
        upstream_resolve=proxy_nginx.pooled,
    )
    config = render_nginx_config(plan, settings)
    assert "buffer=4k flush=1s;" in config
    nginx = RunningNginx(proxy_nginx.binary, tmp_path, config)
    try:
        wait_for_port(port)
        assert get(port, 0) == 404
        answered = time.monotonic()
        time.sleep(0.3)
        early = stdout_pipe.lines()
        # Held in the buffer (unless this machine stalled us past the 1 s flush)...
        assert early == [] or time.monotonic() - answered >= 1.0, early
        assert len(stdout_pipe.wait_for(1, timeout=3)) == 1  # ...for at most flush=1s

        # Many lines from both workers, more than one 4 KiB buffer each: every line is whole.
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda n: get(port, n), range(1, 301))) == {404}
        lines = stdout_pipe.wait_for(301, timeout=5)
        matches = [LINE.fullmatch(line) for line in lines]
        assert all(matches), [line for line, m in zip(lines, matches, strict=True) if not m]
        assert sorted(int(m[1]) for m in matches if m) == list(range(301))

        # Stopped as Pebble stops it (SIGTERM) right after requests: their lines still arrive.
        for n in range(301, 306):
            assert get(port, n) == 404
    finally:
        nginx.stop()
    deadline = time.monotonic() + 5
    while not stdout_pipe.eof and time.monotonic() < deadline:
        stdout_pipe.read()
        time.sleep(0.05)
    lines = stdout_pipe.lines()
    assert stdout_pipe.eof
    # Each worker writes its own buffer: the order across workers is not the requests' order.
    assert sorted(int(m[1]) for line in lines[301:] if (m := LINE.fullmatch(line))) == list(
        range(301, 306)
    )
    assert nginx.log().count("[emerg]") == 0
