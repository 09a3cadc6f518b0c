"""Rendering the nginx configuration: structure, determinism and refusal of unsafe values.

The rendered text is checked by the real nginx in tests/nginx/.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from coordinated_mesh.parse import HttpUrl
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import NginxSettings, nginx_command, render_nginx_config
from coordinated_mesh.proxy.plan import (
    HttpRoute,
    QueryRoute,
    TelemetryProxyInputs,
    build_telemetry_proxy,
)
from coordinated_mesh.relations.cluster import JujuTopology, MetricsEndpoint, WorkerUnitData

from tests.support.proxy_strategies import IDENTITY

WORKER = WorkerUnitData(
    juju_topology=JujuTopology(application="worker", unit="worker/0", charm_name="w"),
    address="worker-0.worker-endpoints.mymodel.svc.cluster.local",
    metrics_endpoint=MetricsEndpoint(port=9090, path="/metrics"),
)
INPUTS = TelemetryProxyInputs(
    identity=IDENTITY,
    config=WorkerTelemetryProxyConfig(http_port=8080, https_port=8080, grpc_port=4317),
    workers=[WORKER],
    backend_loki_urls={"loki/0": "http://loki-0.l.cos.svc.cluster.local:3100/loki/api/v1/push"},
    backend_remote_write_urls={
        "prometheus/0": "http://prometheus-0.p.cos.svc.cluster.local:9090/api/v1/write"
    },
    backend_charm_tracing_receivers={"otlp_http": "http://tempo.cos.svc.cluster.local:4318"},
    backend_workload_tracing_receivers={
        "otlp_http": "http://tempo.cos.svc.cluster.local:4318/base",
        "otlp_grpc": "tempo.cos.svc.cluster.local:4317",
    },
    resolvers=["10.152.183.10", "fd00::a"],
    status_port=8081,
)


def render(inputs: TelemetryProxyInputs = INPUTS, **settings: object) -> str:
    return render_nginx_config(build_telemetry_proxy(inputs), NginxSettings(**settings))  # type: ignore[arg-type]


def block(text: str, header: str) -> str:
    """The lines of the block that starts with ``header {`` (up to its closing brace)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == header + " {")
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == " " * indent + "}")
    return "\n".join(line.strip() for line in lines[start + 1 : end])


def test_main_context():
    text = render()
    assert text.startswith("# Rendered by coordinated_mesh.proxy.nginx")
    for line in [
        "worker_processes 2;",
        "pid /tmp/nginx.pid;",
        "error_log stderr warn;",
        "pcre_jit on;",
        "client_body_temp_path /tmp/nginx-client-body;",
        "proxy_temp_path /tmp/nginx-proxy;",
        "access_log /dev/stdout proxy buffer=4k flush=1s;",
        "client_max_body_size 64m;",
        "resolver 10.152.183.10 [fd00::a] valid=10s;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
    ]:
        assert f"\n{line}\n" in "\n" + "\n".join(s.strip() for s in text.splitlines()) + "\n"
    assert "daemon" not in text  # Pebble runs nginx with -g 'daemon off;'
    assert not any(
        s.strip().startswith("upstream ") for s in text.splitlines()
    )  # no blocks: names resolve at request time


def test_exact_locations_forward_to_the_full_url():
    assert block(render(), "location = /proxy/loki/loki-0/push") == (
        "set $upstream http://loki-0.l.cos.svc.cluster.local:3100/loki/api/v1/push;\n"
        "proxy_pass $upstream$is_args$args;"
    )
    assert block(render(), "location = /proxy/worker/worker-0/metrics") == (
        "set $upstream http://worker-0.worker-endpoints.mymodel.svc.cluster.local:9090/metrics;\n"
        "proxy_pass $upstream$is_args$args;"
    )


def test_prefix_locations_rewrite_the_prefix():
    assert block(render(), "location /proxy/charm-tracing/otlp_http/") == (
        "set $upstream http://tempo.cos.svc.cluster.local:4318;\n"
        'rewrite "(?s)^/proxy/charm-tracing/otlp_http/(.*)$" /$1 break;\n'
        "proxy_pass $upstream;"
    )
    assert block(render(), "location /proxy/workload-tracing/otlp_http/") == (
        "set $upstream http://tempo.cos.svc.cluster.local:4318;\n"
        'rewrite "(?s)^/proxy/workload-tracing/otlp_http/(.*)$" /base/$1 break;\n'
        "proxy_pass $upstream;"
    )


def test_grpc_server_and_status_server():
    text = render()
    assert "listen 4317 http2;" in text
    assert block(text, "location /opentelemetry.proto.collector.trace.v1.TraceService/") == (
        "set $grpc_upstream grpc://tempo.cos.svc.cluster.local:4317;\ngrpc_pass $grpc_upstream;"
    )
    assert "listen 127.0.0.1:8081;" in text
    assert block(text, "location = /status") == "stub_status;"


def test_grpc_to_a_tls_receiver_is_grpcs_with_sni():
    """Tempo's otlp_grpc has no scheme; its https otlp_http says TLS is served on every port."""
    tls = replace(
        INPUTS,
        backend_workload_tracing_receivers={
            "otlp_http": "https://tempo.cos.svc.cluster.local:4318",
            "otlp_grpc": "tempo.cos.svc.cluster.local:4317",
        },
        upstream_trust=True,  # without a CA to verify it with, a TLS backend is refused (502)
    )
    text = render(tls)
    assert block(text, "location /opentelemetry.proto.collector.trace.v1.TraceService/") == (
        "set $grpc_upstream grpcs://tempo.cos.svc.cluster.local:4317;\ngrpc_pass $grpc_upstream;\n"
        "grpc_ssl_verify on;\ngrpc_ssl_verify_depth 4;\n"
        "grpc_ssl_trusted_certificate /etc/nginx/tls/upstream-ca.crt;"
    )
    assert "grpc_ssl_server_name on;" in text


def test_no_grpc_server_without_grpc_port():
    text = render(replace(INPUTS, config=WorkerTelemetryProxyConfig(8080, 8080)))
    assert "http2" not in text
    assert "grpc_pass" not in text


def test_settings_are_rendered():
    text = render(
        temp_dir="/run/x/",
        worker_processes=4,
        listen_address="127.0.0.1",
        user="root",
        access_log=None,
        client_max_body_size="128m",
        resolver_valid_seconds=30,
    )
    for line in [
        "user root;",
        "worker_processes 4;",
        "pid /run/x/nginx.pid;",
        "uwsgi_temp_path /run/x/nginx-uwsgi;",
        "listen 127.0.0.1:8080;",
        "listen 127.0.0.1:4317 http2;",
        "access_log off;",
        "client_max_body_size 128m;",
        "resolver 10.152.183.10 [fd00::a] valid=30s;",
    ]:
        assert line in text


def test_access_log_unbuffered():
    text = render(access_log="/var/log/proxy.log", access_log_buffered=False)
    assert "    access_log /var/log/proxy.log proxy;\n" in text
    assert "buffer=" not in text


def test_no_resolver_line_without_resolvers():
    assert "resolver" not in render(replace(INPUTS, resolvers=[]))


def test_rendering_is_deterministic():
    reordered = replace(
        INPUTS,
        resolvers=list(reversed(INPUTS.resolvers)),
        backend_workload_tracing_receivers=dict(
            reversed(list(INPUTS.backend_workload_tracing_receivers.items()))
        ),
    )
    assert render(reordered) == render(INPUTS)


@pytest.mark.parametrize(
    "settings",
    [
        {"temp_dir": "tmp"},
        {"temp_dir": "/tmp; user root"},
        {"access_log": "/dev/stdout main"},
        {"worker_processes": 0},
        {"listen_address": "localhost"},
        {"user": "root;"},
        {"client_max_body_size": "1g;"},
        {"resolver_valid_seconds": 0},
    ],
)
def test_unsafe_settings_are_refused(settings: dict[str, object]):
    with pytest.raises(ValueError):
        NginxSettings(**settings)  # type: ignore[arg-type]


def test_renderer_refuses_unvalidated_values():
    """A plan built by hand with a hostile value is refused, not rendered."""
    plan = build_telemetry_proxy(INPUTS)
    evil = HttpRoute("/proxy/x", True, HttpUrl("http", "a;b", 80, ""))
    with pytest.raises(ValueError, match="unsafe"):
        render_nginx_config(replace(plan, http_routes=(evil,)))


def _workers(count: int) -> list[WorkerUnitData]:
    return [
        WORKER.model_copy(
            update={
                "juju_topology": JujuTopology(
                    application="worker", unit=f"worker/{i}", charm_name="w"
                ),
                "address": f"worker-{i}.worker-endpoints.mymodel.svc.cluster.local",
            }
        )
        for i in range(count)
    ]


QUERY_INPUTS = replace(INPUTS, workers=_workers(3), worker_query_api=WorkerQueryApi())


def test_query_api_split_and_location():
    text = render(QUERY_INPUTS)
    assert block(text, 'split_clients "${request_id}" $worker_query_backend') == (
        '33.34% "worker-0.worker-endpoints.mymodel.svc.cluster.local:9090";\n'
        '33.33% "worker-1.worker-endpoints.mymodel.svc.cluster.local:9090";\n'
        '* "worker-2.worker-endpoints.mymodel.svc.cluster.local:9090";'
    )
    # The prefix is stripped by the rewrite: with a variable, proxy_pass replaces no URI part.
    assert block(text, "location /query/") == (
        'rewrite "(?s)^/query(/.*)$" $1 break;\n'
        "proxy_read_timeout 150s;\n"
        "proxy_pass http://$worker_query_backend;"
    )
    # split_clients is in the http context, before the servers; the location in the proxy's.
    assert text.index("split_clients") < text.index("server {")
    assert block(text, "server").count("location /query/ {") == 1


def test_query_api_with_its_own_prefix_and_port():
    inputs = replace(
        QUERY_INPUTS, workers=_workers(1), worker_query_api=WorkerQueryApi("/api/q", 3100)
    )
    text = render(inputs)
    assert block(text, 'split_clients "${request_id}" $worker_query_backend') == (
        '* "worker-0.worker-endpoints.mymodel.svc.cluster.local:3100";'
    )
    assert 'rewrite "(?s)^/api/q(/.*)$" $1 break;' in block(text, "location /api/q/")


def test_no_query_api_rendered_without_api_or_workers():
    for inputs in [INPUTS, replace(QUERY_INPUTS, workers=[])]:
        text = render(inputs)
        assert "split_clients" not in text
        assert "worker_query_backend" not in text
        assert "location /query/" not in text


def test_renderer_refuses_unvalidated_query_routes():
    plan = build_telemetry_proxy(QUERY_INPUTS)
    assert plan.query_route is not None
    evil_host = QueryRoute("/query/", "/query", (HttpUrl("http", 'a";}', 80, ""),))
    evil_prefix = replace(plan.query_route, strip_prefix="/q(.*)", location="/q(.*)/")
    mismatched = replace(plan.query_route, location="/other/")
    for route in [evil_host, evil_prefix, mismatched]:
        with pytest.raises(ValueError, match="unsafe"):
            render_nginx_config(replace(plan, query_route=route))


def test_nginx_command():
    assert nginx_command() == "nginx -c /etc/nginx/nginx.conf -g 'daemon off;'"
