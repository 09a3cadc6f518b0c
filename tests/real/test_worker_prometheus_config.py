"""The worker charm's Prometheus configuration: rendering (pure), ``promtool``, the real binary.

Every rendered ``prometheus.yml`` is checked by the real ``promtool check config``. The real
``prometheus`` then runs with the charm's own command-line flags and a rendered configuration: it
remote-writes to the proxied URL path it was given, and re-reads its configuration on ``SIGHUP``
(how the charm reloads it), with the lifecycle API (``/-/quit``) left disabled.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.binaries import require_binary
from tests.support.charm_loader import load_charm_module
from tests.support.nginx import RunningNginx, free_port, wait_for_port
from tests.support.tls import Leaf, issue, make_ca

CHARM = load_charm_module("worker")
PROXY = "http://coord.mymodel.svc.cluster.local:8080"
RW = f"{PROXY}/proxy/remote-write/prometheus-0/write"
BASE = "global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\n"


def promtool_check(text: str, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def render(**kwargs: Any) -> tuple[dict[str, Any], list[str], str]:
    args: dict[str, Any] = {"base": BASE, "remote_write_urls": (), "tracing": None, **kwargs}
    text, notes = CHARM.render_prometheus_config(**args)
    return yaml.safe_load(text), notes, text


# --- Rendering (pure) -----------------------------------------------------------------------------


def test_minimal_config_scrapes_itself(tmp_path: Path):
    config, notes, text = render(base=None)
    assert notes == []
    assert config == {
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]}
        ]
    }
    promtool_check(text, tmp_path)


def test_full_config(tmp_path: Path):
    tracing, tracing_notes = CHARM.tracing_config(
        {"otlp_grpc": "coord.mymodel.svc.cluster.local:4317"}
    )
    config, notes, text = render(remote_write_urls=[RW], tracing=tracing)
    assert notes == tracing_notes == []
    assert config["global"] == {"scrape_interval": "1m", "evaluation_interval": "1m"}
    assert config["remote_write"] == [{"url": RW}]
    assert config["tracing"] == {
        "client_type": "grpc",
        "endpoint": "coord.mymodel.svc.cluster.local:4317",
        "insecure": True,
        "sampling_fraction": 1.0,
    }
    promtool_check(text, tmp_path)


def test_rendering_is_deterministic():
    urls = [f"{PROXY}/proxy/remote-write/p-{n}/write" for n in range(5)]
    base_a = "global:\n  scrape_interval: 1m\n  evaluation_interval: 2m\n"
    base_b = "global:\n  evaluation_interval: 2m\n  scrape_interval: 1m\n"
    text_a, _ = CHARM.render_prometheus_config(base=base_a, remote_write_urls=urls, tracing=None)
    text_b, _ = CHARM.render_prometheus_config(
        base=base_b, remote_write_urls=[*reversed(urls), urls[0]], tracing=None
    )
    assert text_a == text_b


def test_the_charm_owns_scrape_configs_remote_write_and_tracing(tmp_path: Path):
    base = yaml.safe_dump(
        {
            "global": {"scrape_interval": "30s"},
            "scrape_configs": [{"job_name": "evil", "static_configs": [{"targets": ["x:1"]}]}],
            "remote_write": [{"url": "http://elsewhere/write"}],
            "tracing": {"endpoint": "elsewhere:4317"},
        }
    )
    config, notes, text = render(base=base, remote_write_urls=[RW])
    assert notes == []
    assert config["global"] == {"scrape_interval": "30s"}
    assert [job["job_name"] for job in config["scrape_configs"]] == ["prometheus"]
    assert config["remote_write"] == [{"url": RW}]
    assert "tracing" not in config
    promtool_check(text, tmp_path)


TOPOLOGY = {
    "juju_application": "worker",
    "juju_charm": "mesh-worker-k8s",
    "juju_model": "mymodel",
    "juju_model_uuid": "12345678-1234-4234-8234-123456789abc",
    "juju_unit": "worker/1",
}


def test_topology_labels_are_external_labels_over_the_bases(tmp_path: Path):
    base = yaml.safe_dump(
        {
            "global": {
                "scrape_interval": "30s",
                "external_labels": {"cluster": "east", "juju_unit": "spoofed/0"},
            }
        }
    )
    config, notes, text = render(base=base, remote_write_urls=[RW], external_labels=TOPOLOGY)
    assert notes == []
    assert config["global"] == {
        "scrape_interval": "30s",
        "external_labels": {"cluster": "east", **TOPOLOGY},
    }
    promtool_check(text, tmp_path)


@pytest.mark.parametrize(
    "base, note",
    [
        ("global: 3\n", "worker_config global ignored: not a YAML mapping"),
        (
            "global:\n  external_labels: [a]\n",
            "worker_config external_labels ignored: not a YAML mapping",
        ),
    ],
)
def test_unusable_global_still_gets_the_topology(base: str, note: str, tmp_path: Path):
    config, notes, text = render(base=base, external_labels=TOPOLOGY)
    assert notes == [note]
    assert config["global"] == {"external_labels": TOPOLOGY}
    promtool_check(text, tmp_path)


@pytest.mark.parametrize(
    "base, note",
    [
        ("global: [unclosed", "worker_config ignored: invalid YAML (ParserError)"),
        ("- a list\n- not a mapping\n", "worker_config ignored: not a YAML mapping"),
        ("1: numeric keys\n", "worker_config ignored: not a YAML mapping"),
        (
            "a: &x [1, 2]\nb: [*x, *x, *x]\n",
            "worker_config ignored: YAML aliases are not allowed",
        ),
    ],
)
def test_unusable_base_is_ignored_with_a_note(base: str, note: str, tmp_path: Path):
    config, notes, text = render(base=base)
    assert notes == [note]
    assert list(config) == ["scrape_configs"]
    promtool_check(text, tmp_path)


def test_deeply_nested_base_is_ignored_with_a_note():
    """Nesting fits in a databag but not in PyYAML's (recursive) composer: no RecursionError."""
    config, notes, _ = render(base="a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert notes == ["worker_config ignored: nested more than 32 levels deep"]
    assert list(config) == ["scrape_configs"]


def _block_nesting(depth: int) -> str:
    return "".join(" " * (2 * i) + f"k{i}:\n" for i in range(depth)) + " " * (2 * depth) + "v\n"


@pytest.mark.parametrize(
    "base, note",
    [
        # Under PyYAML's composer limit, over yaml.safe_dump's: it once crashed the dump.
        ("a: " + "[" * 600 + "]" * 600 + "\n", "nested more than 32 levels deep"),
        (_block_nesting(200), "nested more than 32 levels deep"),
        ("a:\n" + "- " * 100 + "x\n", "nested more than 32 levels deep"),
        # A YAML 1.1 base-60 integer: 9 KB of text, 5,000 digits, no safe_dump.
        ("a: 1" + ":59" * 3000 + "\n", "an integer of more than 64 bits"),
        ("a: [" + "1, " * 20_001 + "1]\n", "more than 20000 YAML nodes"),
        ("a: '" + "x" * (64 * 1024) + "'\n", "65542 bytes, more than 65536"),
    ],
)
def test_costly_base_is_refused_before_it_is_composed(base: str, note: str, tmp_path: Path):
    config, notes, text = render(base=base)
    assert notes == [f"worker_config ignored: {note}"]
    assert list(config) == ["scrape_configs"]
    promtool_check(text, tmp_path)


def test_nesting_within_the_bound_is_kept():
    base = "global:\n  external_labels:\n    a: b\n" + _block_nesting(30)
    config, notes, _ = render(base=base)
    assert notes == []
    assert config["global"] == {"external_labels": {"a": "b"}}
    assert "k0" in config


def test_empty_base_is_no_base():
    assert render(base="")[0] == render(base="# nothing\n")[0] == render(base=None)[0]


# --- Tracing: what Prometheus 2 can send to ---------------------------------------------------------


def test_grpc_is_preferred():
    tracing, notes = CHARM.tracing_config(
        {"otlp_grpc": "coord:4317", "otlp_http": "http://tempo.cos.svc.cluster.local:4318"}
    )
    assert notes == []
    assert tracing is not None and tracing["client_type"] == "grpc"


@pytest.mark.parametrize(
    "url, endpoint, insecure",
    [
        ("http://tempo.cos.svc.cluster.local:4318", "tempo.cos.svc.cluster.local:4318", True),
        ("https://tempo.cos.svc.cluster.local:4318/", "tempo.cos.svc.cluster.local:4318", False),
        ("http://tempo.cos.svc.cluster.local", "tempo.cos.svc.cluster.local:80", True),
    ],
)
def test_otlp_http_without_a_path_is_used(url: str, endpoint: str, insecure: bool, tmp_path: Path):
    tracing, notes = CHARM.tracing_config({"otlp_http": url})
    assert notes == []
    assert tracing == {
        "client_type": "http",
        "endpoint": endpoint,
        "insecure": insecure,
        "sampling_fraction": 1.0,
    }
    promtool_check(render(tracing=tracing)[2], tmp_path)


def test_otlp_http_with_a_path_cannot_be_used_and_says_so():
    tracing, notes = CHARM.tracing_config(
        {"otlp_http": f"{PROXY}/proxy/workload-tracing/otlp_http"}
    )
    assert tracing is None
    assert notes == ["no workload traces: Prometheus 2 needs otlp_grpc (OTLP/HTTP has a path)"]


def test_an_invalid_receiver_is_a_note_not_an_error():
    tracing, notes = CHARM.tracing_config({"otlp_http": "http://a-:1"})
    assert tracing is None
    assert notes == ["no workload traces: invalid otlp_http receiver"]


def test_no_receivers_no_tracing():
    assert CHARM.tracing_config({}) == (None, [])
    assert CHARM.tracing_config({"zipkin": "http://tempo:9411"}) == (None, [])


# --- TLS: the proxy's CA --------------------------------------------------------------------------
# Fields checked against Prometheus 2.42's configuration reference
# (docs/configuration/configuration.md: <remote_write> and <tracing_config> take a <tls_config>
# whose ca_file is a file name; tracing's ``insecure: false`` means TLS) and its source
# (tracing/tracing.go getClient: gRPC uses TLS credentials only when insecure is false).

CA_FILE = "/etc/ssl/certs/coordinated-mesh-proxy-ca.pem"
TLS_RW = "https://coord.mymodel.svc.cluster.local:8443/proxy/remote-write/prometheus-0/write"


def test_tls_proxy_remote_write_and_tracing_trust_the_ca_file(tmp_path: Path):
    tracing, tracing_notes = CHARM.tracing_config(
        {"otlp_grpc": "coord.mymodel.svc.cluster.local:4317"}, ca_file=CA_FILE
    )
    config, notes, text = render(
        remote_write_urls=[TLS_RW, RW], tracing=tracing, ca_file=CA_FILE, ca_cert="PEM A\n"
    )
    assert notes == tracing_notes == []
    assert config["remote_write"] == [
        {"url": RW},  # a plain URL stays plain
        {"url": TLS_RW, "tls_config": {"ca_file": CA_FILE}},
    ]
    assert config["tracing"] == {
        "client_type": "grpc",
        "endpoint": "coord.mymodel.svc.cluster.local:4317",
        "insecure": False,
        "sampling_fraction": 1.0,
        "tls_config": {"ca_file": CA_FILE},
    }
    assert text.startswith("# proxy CA sha256:")
    promtool_check(text, tmp_path)


def test_a_new_ca_changes_the_text_the_same_ca_does_not():
    """The tracer reads its CA file when the configuration is applied: a new CA must reload."""
    args: dict[str, Any] = {"remote_write_urls": [TLS_RW], "ca_file": CA_FILE}
    a, _, text_a = render(ca_cert="PEM A\n", **args)
    b, _, text_b = render(ca_cert="PEM B\n", **args)
    assert a == b and text_a != text_b
    assert render(ca_cert="PEM A\n", **args)[2] == text_a


def test_otlp_http_over_tls_trusts_the_ca_file(tmp_path: Path):
    tracing, notes = CHARM.tracing_config(
        {"otlp_http": "https://tempo.cos.svc.cluster.local:4318"}, ca_file=CA_FILE
    )
    assert notes == []
    assert tracing == {
        "client_type": "http",
        "endpoint": "tempo.cos.svc.cluster.local:4318",
        "insecure": False,
        "sampling_fraction": 1.0,
        "tls_config": {"ca_file": CA_FILE},
    }
    promtool_check(render(tracing=tracing)[2], tmp_path)


def test_without_a_ca_nothing_names_a_ca_file():
    tracing, _ = CHARM.tracing_config({"otlp_grpc": "coord:4317"})
    config, _, text = render(remote_write_urls=[TLS_RW, RW], tracing=tracing)
    assert "tls_config" not in json.dumps(config)
    assert tracing is not None and tracing["insecure"] is True
    assert not text.startswith("#")


_label = r"[a-z]([a-z0-9-]{0,18}[a-z0-9])?"
_host = st.from_regex(rf"{_label}(\.{_label}){{0,3}}", fullmatch=True)
_path = st.from_regex(r"(/[A-Za-z0-9._~-]{1,12}){0,4}", fullmatch=True).filter(
    lambda p: "/./" not in p + "/" and "/../" not in p + "/"
)
_url = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}:{port}{path}",
    st.sampled_from(["http", "https"]),
    _host,
    st.integers(1, 65535),
    _path,
)


@settings(max_examples=15)
@given(
    urls=st.lists(_url, max_size=6),
    grpc=st.one_of(st.none(), st.builds(lambda h, p: f"{h}:{p}", _host, st.integers(1, 65535))),
    http=st.one_of(st.none(), _url),
    tls=st.booleans(),
)
def test_any_valid_inputs_render_a_config_promtool_accepts(
    urls: list[str],
    grpc: str | None,
    http: str | None,
    tls: bool,
    tmp_path_factory: pytest.TempPathFactory,
):
    receivers = {k: v for k, v in {"otlp_grpc": grpc, "otlp_http": http}.items() if v}
    ca_file = CA_FILE if tls else None
    tracing, _ = CHARM.tracing_config(receivers, ca_file=ca_file)
    text, notes = CHARM.render_prometheus_config(
        base=BASE,
        remote_write_urls=urls,
        tracing=tracing,
        ca_file=ca_file,
        ca_cert="PEM\n" if tls else None,
    )
    assert notes == []
    promtool_check(text, tmp_path_factory.mktemp("prom"))


# --- The real Prometheus --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Sink(http.server.ThreadingHTTPServer):
    paths: list[str]


class _SinkHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        cast(_Sink, self.server).paths.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[_Sink]:
    """A remote-write receiver standing in for the coordinator's proxy; records request paths."""
    server = _Sink(("127.0.0.1", 0), _SinkHandler)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def _charm_flags(tmp_path: Path, port: int) -> list[str]:
    """The charm's Pebble command, with its paths and port moved into ``tmp_path``."""
    command = shlex.split(CHARM.prometheus_layer()["services"]["prometheus"]["command"])
    moved = {
        "--config.file": str(tmp_path / "prometheus.yml"),
        "--storage.tsdb.path": str(tmp_path / "data"),
        "--web.listen-address": f"127.0.0.1:{port}",
    }
    flags: list[str] = []
    for arg in command[1:]:
        name, _, value = arg.partition("=")
        assert name in moved, f"unexpected flag {arg}"
        assert value, f"flag without value {arg}"
        flags.append(f"{name}={moved[name]}")
    return flags


def test_real_prometheus_remote_writes_to_the_proxied_path_and_reloads_on_sighup(
    tmp_path: Path, sink: _Sink
):
    prometheus = require_binary("prometheus")
    port = _free_port()
    sink_base = f"http://127.0.0.1:{sink.server_address[1]}"
    first = f"{sink_base}/proxy/remote-write/prometheus-0/write"
    second = f"{sink_base}/proxy/remote-write/mimir-0/write"
    base = "global:\n  scrape_interval: 1s\n"
    text, _ = CHARM.render_prometheus_config(base=base, remote_write_urls=[first], tracing=None)
    (tmp_path / "prometheus.yml").write_text(text)
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [prometheus, *_charm_flags(tmp_path, port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        api = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _get(f"{api}/-/ready") is not None, "prometheus to be ready")
        _wait_for(
            lambda: "/proxy/remote-write/prometheus-0/write" in sink.paths,
            "a remote write to the proxied path",
        )

        text, _ = CHARM.render_prometheus_config(
            base=base, remote_write_urls=[first, second], tracing=None
        )
        (tmp_path / "prometheus.yml").write_text(text)
        process.send_signal(signal.SIGHUP)

        def loaded() -> bool:
            body = _get(f"{api}/api/v1/status/config")
            return body is not None and second in json.loads(body)["data"]["yaml"]

        _wait_for(loaded, "the new configuration to be loaded")
        _wait_for(
            lambda: "/proxy/remote-write/mimir-0/write" in sink.paths,
            "a remote write to the new proxied path",
        )
        assert process.poll() is None  # reloaded in place, not restarted

        request = urllib.request.Request(f"{api}/-/quit", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=2)
        assert refused.value.code == 403  # the lifecycle API is off
        assert process.poll() is None
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _tls_nginx_config(prefix: Path, *, port: int, server: Leaf, upstream_port: int) -> str:
    """nginx terminating TLS 1.2/1.3 on loopback in front of a plain HTTP upstream (by hand: the
    proxy's own TLS rendering is tested with the proxy)."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
  access_log {prefix}/access.log;
{temp}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {server.cert};
    ssl_certificate_key {server.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ proxy_pass http://127.0.0.1:{upstream_port}; }}
  }}
}}
"""


def test_real_prometheus_remote_writes_over_tls_trusting_only_the_ca_file(
    tmp_path: Path, sink: _Sink
):
    """The charm's rendering for a TLS proxy: Prometheus verifies nginx's certificate against
    the CA file alone (its system roots are emptied); an entry naming another CA is refused."""
    prometheus = require_binary("prometheus")
    nginx = require_binary("nginx")
    ca, other_ca = make_ca(tmp_path / "ca"), make_ca(tmp_path / "other", "other-ca")
    server = issue(ca, tmp_path / "server", ["localhost", "127.0.0.1"])
    tls_port, port = free_port(), _free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    config = _tls_nginx_config(
        prefix, port=tls_port, server=server, upstream_port=sink.server_address[1]
    )
    trusted = f"https://localhost:{tls_port}/proxy/remote-write/prometheus-0/write"
    text, notes = CHARM.render_prometheus_config(
        base="global:\n  scrape_interval: 1s\n",
        remote_write_urls=[trusted],
        tracing=None,
        ca_file=str(ca.cert),
        ca_cert=ca.pem,
    )
    assert notes == []
    rendered = yaml.safe_load(text)
    assert rendered["remote_write"] == [{"url": trusted, "tls_config": {"ca_file": str(ca.cert)}}]
    promtool_check(text, tmp_path)
    untrusted = f"https://localhost:{tls_port}/untrusted/write"
    rendered["remote_write"].append(
        {"url": untrusted, "tls_config": {"ca_file": str(other_ca.cert)}}
    )
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(rendered))
    no_roots = tmp_path / "no-system-roots"
    no_roots.mkdir()
    env = {**os.environ, "SSL_CERT_FILE": str(no_roots / "none.pem"), "SSL_CERT_DIR": str(no_roots)}
    running = RunningNginx(nginx, prefix, config)
    log_path = tmp_path / "prometheus.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [prometheus, *_charm_flags(tmp_path, port)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    try:
        wait_for_port(tls_port)
        _wait_for(
            lambda: "/proxy/remote-write/prometheus-0/write" in sink.paths,
            "a remote write over TLS, verified against the CA file",
        )
        _wait_for(
            lambda: "certificate signed by unknown authority" in log_path.read_text(),
            "the entry trusting another CA to be refused",
        )
        assert "/untrusted/write" not in sink.paths
        assert process.poll() is None and running.alive()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        running.stop()
