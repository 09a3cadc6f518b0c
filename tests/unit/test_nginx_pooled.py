"""Pooled upstreams (``NginxSettings(upstream_resolve=True)``, nginx >= 1.27.3): the rendering.

The same configuration runs on a real nginx 1.30 in tests/real/test_upstream_pools.py.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest
from coordinated_mesh.parse import GrpcAddress, HttpUrl
from coordinated_mesh.proxy.config import WorkerQueryApi
from coordinated_mesh.proxy.nginx import NginxSettings, render_nginx_config
from coordinated_mesh.proxy.plan import (
    GrpcRoute,
    HttpRoute,
    TelemetryProxyInputs,
    build_telemetry_proxy,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.support.proxy_strategies import proxy_inputs
from tests.unit.test_nginx_config import INPUTS, _workers, block

POOLED = NginxSettings(upstream_resolve=True)
_DIRECTIVE_VALUE = re.compile(r"[A-Za-z0-9._~:/\[\]\"$%*-]+")


def render(inputs: TelemetryProxyInputs = INPUTS, settings: NginxSettings = POOLED) -> str:
    return render_nginx_config(build_telemetry_proxy(inputs), settings)


def upstream_blocks(text: str) -> list[str]:
    return [
        line.strip()[len("upstream ") : -2]
        for line in text.splitlines()
        if "upstream " in line and line.endswith("{")
    ]


def test_one_block_per_distinct_backend():
    text = render()
    names = upstream_blocks(text)
    assert names == sorted(names)
    # Charm and workload otlp_http share tempo:4318 (one block); the gRPC receiver has its own.
    assert names == [
        "grpc_tempo.cos.svc.cluster.local_4317",
        "http_loki-0.l.cos.svc.cluster.local_3100",
        "http_prometheus-0.p.cos.svc.cluster.local_9090",
        "http_tempo.cos.svc.cluster.local_4318",
        "http_worker-0.worker-endpoints.mymodel.svc.cluster.local_9090",
    ]
    assert block(text, "upstream http_loki-0.l.cos.svc.cluster.local_3100").splitlines() == [
        "zone http_loki-0.l.cos.svc.cluster.local_3100 64k;",
        "server loki-0.l.cos.svc.cluster.local:3100 resolve;",
        "keepalive 16;",
        "keepalive_timeout 30s;",
    ]
    assert "resolver 10.152.183.10 [fd00::a] valid=10s;" in text


def test_locations_name_their_block_and_keep_host_and_sni():
    https = replace(
        INPUTS,
        backend_loki_urls={"loki/0": "https://loki-0.l.cos.svc.cluster.local:3100/push"},
        upstream_trust=True,  # verified TLS backends are pooled; unverifiable ones refused
    )
    text = render(https)
    assert block(text, "location = /proxy/loki/loki-0/push").splitlines() == [
        "set $upstream_host loki-0.l.cos.svc.cluster.local:3100;",
        "set $upstream https://https_loki-0.l.cos.svc.cluster.local_3100/push;",
        "proxy_pass $upstream$is_args$args;",
        "proxy_ssl_name loki-0.l.cos.svc.cluster.local;",
        "proxy_ssl_verify on;",
        "proxy_ssl_verify_depth 4;",
        "proxy_ssl_trusted_certificate /etc/nginx/tls/upstream-ca.crt;",
    ]
    # Host comes from the http level (a location's proxy_set_header would drop inherited ones).
    http = [
        line.strip()
        for line in text.splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    ]
    assert "proxy_set_header Host $upstream_host;" in http
    assert "grpc_set_header Host $upstream_host;" in http
    assert not any(
        line.strip().startswith(("proxy_set_header", "grpc_set_header"))
        for line in text.splitlines()
        if line.startswith("        ")
    )
    prefix = block(text, "location /proxy/workload-tracing/otlp_http/").splitlines()
    # Every `set` before `rewrite ... break`, which skips the ones after it.
    assert prefix[0] == "set $upstream_host tempo.cos.svc.cluster.local:4318;"
    assert prefix[1] == "set $upstream http://http_tempo.cos.svc.cluster.local_4318;"
    assert prefix[2].startswith('rewrite "(?s)^/proxy/workload-tracing/otlp_http/(.*)$" /base/')


def test_grpc_to_tls_is_pooled_separately_with_sni():
    plan = build_telemetry_proxy(replace(INPUTS, upstream_trust=True))
    tls = GrpcRoute(
        plan.grpc_routes[0].location, GrpcAddress("tempo.cos.svc.cluster.local", 4317), tls=True
    )
    text = render_nginx_config(replace(plan, grpc_routes=(tls,)), POOLED)
    location = block(text, f"location {tls.location}").splitlines()
    assert location == [
        "set $upstream_host tempo.cos.svc.cluster.local:4317;",
        "set $grpc_upstream grpcs://grpcs_tempo.cos.svc.cluster.local_4317;",
        "grpc_pass $grpc_upstream;",
        "grpc_ssl_name tempo.cos.svc.cluster.local;",
        "grpc_ssl_verify on;",
        "grpc_ssl_verify_depth 4;",
        "grpc_ssl_trusted_certificate /etc/nginx/tls/upstream-ca.crt;",
    ]
    assert "grpcs_tempo.cos.svc.cluster.local_4317" in upstream_blocks(text)
    assert "listen 4317;\n        http2 on;" in text  # nginx >= 1.25.1 deprecates listen http2


def test_ip_backends_are_static_servers():
    ip = replace(INPUTS, backend_loki_urls={"loki/0": "http://10.1.2.3:3100/push"})
    text = render(ip)
    assert "server 10.1.2.3:3100;" in block(text, "upstream http_10.1.2.3_3100").splitlines()


def test_host_names_without_resolver_are_not_pooled():
    """nginx -t refuses ``resolve`` without a resolver: such routes stay as today (and fail)."""
    text = render(
        replace(
            INPUTS,
            resolvers=[],
            backend_remote_write_urls={"prometheus/0": "http://10.1.2.3:9090/api/v1/write"},
        )
    )
    assert "resolve;" not in text
    assert upstream_blocks(text) == ["http_10.1.2.3_9090"]
    loki = block(text, "location = /proxy/loki/loki-0/push").splitlines()
    assert loki == [
        "set $upstream_host loki-0.l.cos.svc.cluster.local:3100;",
        "set $upstream http://loki-0.l.cos.svc.cluster.local:3100/loki/api/v1/push;",
        "proxy_pass $upstream$is_args$args;",
    ]


def test_query_route_uses_the_pools_with_each_workers_host():
    text = render(replace(INPUTS, workers=_workers(2), worker_query_api=WorkerQueryApi()))
    split = block(text, 'split_clients "${request_id}" $worker_query_backend').splitlines()
    assert split == [
        '50.00% "http_worker-0.worker-endpoints.mymodel.svc.cluster.local_9090";',
        '* "http_worker-1.worker-endpoints.mymodel.svc.cluster.local_9090";',
    ]
    host_map = block(text, "map $worker_query_backend $worker_query_host").splitlines()
    assert host_map == [
        "default $proxy_host;",
        'http_worker-0.worker-endpoints.mymodel.svc.cluster.local_9090 "worker-0.worker-endpoints'
        '.mymodel.svc.cluster.local:9090";',
        'http_worker-1.worker-endpoints.mymodel.svc.cluster.local_9090 "worker-1.worker-endpoints'
        '.mymodel.svc.cluster.local:9090";',
    ]
    location = block(text, "location /query/").splitlines()
    assert location[0] == "set $upstream_host $worker_query_host;"  # before the rewrite


def test_default_rendering_is_unchanged_by_the_new_settings():
    assert render(settings=NginxSettings()) == render_nginx_config(build_telemetry_proxy(INPUTS))
    assert upstream_blocks(render(settings=NginxSettings(upstream_keepalive=4))) == []


def test_keepalive_settings_are_rendered_and_checked():
    text = render(
        settings=NginxSettings(
            upstream_resolve=True, upstream_keepalive=4, upstream_keepalive_seconds=9
        )
    )
    assert "keepalive 4;" in text and "keepalive_timeout 9s;" in text
    for bad in (
        {"upstream_keepalive": 0},
        {"upstream_keepalive_seconds": 0},
        {"upstream_keepalive": 5000},
    ):
        with pytest.raises(ValueError):
            NginxSettings(**bad)  # type: ignore[arg-type]


def test_hostile_hand_built_values_are_refused():
    plan = build_telemetry_proxy(INPUTS)
    for evil in (HttpUrl("http", "a;b", 80, ""), HttpUrl("http", "a}b", 80, "")):
        route = HttpRoute("/proxy/x", True, evil)
        with pytest.raises(ValueError, match="unsafe"):
            render_nginx_config(replace(plan, http_routes=(route,)), POOLED)
    grpc = GrpcRoute("/x/", GrpcAddress("a b", 1))
    with pytest.raises(ValueError, match="unsafe"):
        render_nginx_config(replace(plan, grpc_routes=(grpc,)), POOLED)


@given(proxy_inputs, st.randoms(use_true_random=False))
def test_pooled_rendering_is_safe_and_deterministic(
    inputs: TelemetryProxyInputs, rnd: random.Random
):
    """Any inputs: renders (never raises), only safe tokens, every block used, same text."""
    plan = build_telemetry_proxy(inputs)
    text = render_nginx_config(plan, POOLED)
    names = upstream_blocks(text)
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"(http|https|grpc|grpcs)_[a-z0-9.-]+_[0-9]+", name)
        assert f"://{name}" in text or f'"{name}"' in text  # some route uses it
    for line in text.splitlines():
        if not line.endswith("{") and line.strip().startswith(
            (
                "server ",
                "zone ",
                "proxy_ssl_name",
                "grpc_ssl_name",
                "set $",
            )
        ):
            for token in line.strip().rstrip(";").split()[1:]:
                assert _DIRECTIVE_VALUE.fullmatch(token), line
    routes = list(plan.http_routes)
    rnd.shuffle(routes)
    assert render_nginx_config(replace(plan, http_routes=tuple(sorted(routes))), POOLED) == text
