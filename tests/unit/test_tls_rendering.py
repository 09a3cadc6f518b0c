"""TLS in the plan and the rendering (pure): https URLs, scrape jobs, ports, nginx directives.

The same renderings run on real nginx in tests/real/test_proxy_tls.py (named apart: pytest
imports both by their base name).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import (
    TLS12_CIPHERS,
    NginxSettings,
    render_nginx_config,
)
from coordinated_mesh.proxy.plan import TelemetryProxyInputs, build_telemetry_proxy
from coordinated_mesh.proxy.tls import upstream_ca_bundle
from coordinated_mesh.relations.grafana_source import (
    GrafanaSourceData,
    provider_app_databag,
    tls_fields,
)
from coordinated_mesh.relations.prometheus_scrape import sanitize_scrape_jobs
from hypothesis import given, settings

from tests.support.proxy_strategies import hostile_text
from tests.support.tls import make_ca
from tests.unit.test_nginx_config import INPUTS, block

FQDN = "coordinator.mymodel.svc.cluster.local"


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_ca(tmp_path_factory.mktemp("ca")).pem


def tls_inputs(ca_pem: str, **changes: object) -> TelemetryProxyInputs:
    base = replace(
        INPUTS,
        config=WorkerTelemetryProxyConfig(http_port=8080, https_port=8443, grpc_port=4317),
        worker_query_api=WorkerQueryApi(),
        server_ca_cert=ca_pem,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- config ---------------------------------------------------------------------------------


def test_listen_and_client_ports_follow_tls():
    two = WorkerTelemetryProxyConfig(http_port=8080, https_port=8443, grpc_port=4317)
    assert two.listen_ports(tls=False) == {8080, 4317} == two.ports
    assert two.listen_ports(tls=True) == {8080, 8443, 4317}
    assert (two.client_port(tls=False), two.client_port(tls=True)) == (8080, 8443)
    one = WorkerTelemetryProxyConfig(http_port=8080, https_port=8080)
    assert one.listen_ports(tls=True) == {8080} == one.listen_ports(tls=False)
    assert one.client_port(tls=True) == 8080


# --- plan -----------------------------------------------------------------------------------


def test_with_a_ca_every_url_is_https_on_the_https_port(ca_pem: str):
    plan = build_telemetry_proxy(tls_inputs(ca_pem))
    assert plan.tls
    assert plan.problems == ()
    assert plan.client_port == 8443
    assert plan.listen_ports == {8080, 8443, 4317}
    urls = plan.proxied_telemetry
    assert urls.ca_cert == ca_pem
    assert urls.loki_urls == {"loki/0": f"https://{FQDN}:8443/proxy/loki/loki-0/push"}
    assert urls.remote_write_urls == (f"https://{FQDN}:8443/proxy/remote-write/prometheus-0/write",)
    assert urls.charm_tracing_receivers == {
        "otlp_http": f"https://{FQDN}:8443/proxy/charm-tracing/otlp_http"
    }
    assert urls.workload_tracing_receivers == {
        "otlp_grpc": f"{FQDN}:4317",  # no scheme; the listener serves TLS
        "otlp_http": f"https://{FQDN}:8443/proxy/workload-tracing/otlp_http",
    }
    assert plan.query_url == f"https://{FQDN}:8443/query"


def test_without_a_ca_nothing_changes(ca_pem: str):
    plain = build_telemetry_proxy(tls_inputs(ca_pem, server_ca_cert=None))
    assert not plain.tls
    assert plain.proxied_telemetry.ca_cert is None
    assert plain.proxied_telemetry.loki_urls["loki/0"].startswith(f"http://{FQDN}:8080/")
    assert plain.listen_ports == {8080, 4317}
    assert all("tls_config" not in job and "scheme" not in job for job in plain.scrape_jobs)


def test_worker_scrape_jobs_are_https_with_the_ca_as_prometheus_k8s_reads_it(ca_pem: str):
    plan = build_telemetry_proxy(tls_inputs(ca_pem))
    exporter, worker = plan.scrape_jobs
    assert "scheme" not in exporter  # nginx-prometheus-exporter serves plain HTTP
    assert worker["scheme"] == "https"
    assert worker["tls_config"] == {"ca_file": ca_pem}  # the PEM text; prometheus-k8s files it
    assert worker["static_configs"] == [{"targets": ["worker-0:8443"]}]
    address = [r for r in worker["relabel_configs"] if r["target_label"] == "__address__"]
    assert address == [{"target_label": "__address__", "replacement": f"{FQDN}:8443"}]
    assert sanitize_scrape_jobs([worker]) == [worker]  # every key is one prometheus-k8s takes


def test_a_malformed_ca_is_a_problem_and_the_proxy_stays_plain(ca_pem: str):
    for bad in ("not a certificate", ca_pem + "-----BEGIN PRIVATE KEY-----\nAAAA\n"):
        plan = build_telemetry_proxy(tls_inputs(ca_pem, server_ca_cert=bad))
        assert not plan.tls
        assert plan.proxied_telemetry.ca_cert is None
        ((problem,),) = [[p for p in plan.problems if p.endpoint == "certificates"]]
        assert problem.reason.startswith("not serving TLS: ")
        assert "\n" not in str(problem)


@settings(max_examples=200, deadline=None)
@given(hostile=hostile_text)
def test_a_hostile_ca_never_raises_nor_reaches_the_text(hostile: str):
    """Whatever the certificates provider sends as its CA: plain HTTP and a printable problem."""
    plan = build_telemetry_proxy(replace(INPUTS, server_ca_cert=hostile))
    assert not plan.tls
    (problem,) = [p for p in plan.problems if p.endpoint == "certificates"]
    assert str(problem).isprintable()
    # nginx.conf is the plain one, as without a CA.
    assert render_nginx_config(plan) == render_nginx_config(build_telemetry_proxy(INPUTS))


def test_a_ca_is_canonicalised(ca_pem: str):
    crlf = ca_pem.replace("\n", "\r\n")
    plan = build_telemetry_proxy(tls_inputs(ca_pem, server_ca_cert=crlf))
    assert plan.proxied_telemetry.ca_cert == ca_pem


def test_tls_backends_without_trust_are_problems(ca_pem: str):
    inputs = tls_inputs(
        ca_pem,
        backend_loki_urls={"loki/0": "https://loki-0.l.cos.svc.cluster.local:3100/push"},
        backend_workload_tracing_receivers={
            "otlp_http": "https://tempo.cos.svc.cluster.local:4318",
            "otlp_grpc": "tempo.cos.svc.cluster.local:4317",
        },
    )
    refused = build_telemetry_proxy(inputs)
    assert sorted(p.item for p in refused.problems) == [
        "https://loki-0.l.cos.svc.cluster.local:3100",
        "https://tempo.cos.svc.cluster.local:4318",
        "tempo.cos.svc.cluster.local:4317",
    ]
    assert build_telemetry_proxy(replace(inputs, upstream_trust=True)).problems == ()


# --- rendering ------------------------------------------------------------------------------

SETTINGS = NginxSettings(tls_dir="/etc/nginx/tls")
SERVER_TLS = [
    "ssl_certificate /etc/nginx/tls/server.crt;",
    "ssl_certificate_key /etc/nginx/tls/server.key;",
    "ssl_protocols TLSv1.2 TLSv1.3;",
    f"ssl_ciphers {TLS12_CIPHERS};",
    "ssl_prefer_server_ciphers off;",
    "ssl_session_cache shared:proxy_tls:10m;",
    "ssl_session_timeout 1h;",
    "ssl_session_tickets off;",
]


def servers(text: str) -> list[list[str]]:
    """Each ``server`` block's lines (stripped), in order."""
    out: list[list[str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line == "    server {":
            end = lines.index("    }", i)
            out.append([item.strip() for item in lines[i + 1 : end]])
    return out


def test_the_tls_files_live_in_tls_dir():
    settings = NginxSettings(tls_dir="/srv/tls/")
    assert settings.server_cert_path == "/srv/tls/server.crt"
    assert settings.server_key_path == "/srv/tls/server.key"
    assert settings.upstream_ca_path == "/srv/tls/upstream-ca.crt"
    for bad in ("relative/tls", "/etc/nginx/tls;", "/a b"):
        with pytest.raises(ValueError, match="tls_dir"):
            NginxSettings(tls_dir=bad)


def test_two_ports_serve_tls_beside_plain_http(ca_pem: str):
    text = render_nginx_config(build_telemetry_proxy(tls_inputs(ca_pem)), SETTINGS)
    proxy, grpc, status = servers(text)
    assert proxy[:10] == ["listen 8080;", "listen 8443 ssl;", *SERVER_TLS]
    assert grpc[:9] == ["listen 4317 ssl http2;", *SERVER_TLS]  # nginx 1.22's form
    assert status[0] == "listen 127.0.0.1:8081;"  # the exporter's stays plain
    assert not any(line.startswith("ssl") for line in status)
    assert text == render_nginx_config(build_telemetry_proxy(tls_inputs(ca_pem)), SETTINGS)


def test_one_port_is_tls_only(ca_pem: str):
    config = WorkerTelemetryProxyConfig(http_port=8443, https_port=8443, grpc_port=4317)
    plan = build_telemetry_proxy(tls_inputs(ca_pem, config=config))
    proxy, _, _ = servers(render_nginx_config(plan, SETTINGS))
    assert proxy[:9] == ["listen 8443 ssl;", *SERVER_TLS]
    assert plan.proxied_telemetry.loki_urls["loki/0"].startswith(f"https://{FQDN}:8443/")


def test_pooled_grpc_listener_uses_http2_on(ca_pem: str):
    plan = build_telemetry_proxy(tls_inputs(ca_pem))
    _, grpc, _ = servers(render_nginx_config(plan, replace(SETTINGS, upstream_resolve=True)))
    assert grpc[:10] == ["listen 4317 ssl;", "http2 on;", *SERVER_TLS]


def test_without_tls_no_server_directive_changes(ca_pem: str):
    plan = build_telemetry_proxy(tls_inputs(ca_pem, server_ca_cert=None))
    text = render_nginx_config(plan, SETTINGS)
    assert "ssl_certificate" not in text
    assert " ssl" not in text.replace("_ssl", "")
    proxy, grpc, _ = servers(text)
    assert (proxy[0], grpc[0]) == ("listen 8080;", "listen 4317 http2;")


def _upstream_tls_lines(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.startswith("    ")
        and not line.startswith("     ")
        and line.strip().startswith(("proxy_ssl", "grpc_ssl"))
    ]


@pytest.mark.parametrize("pooled", [False, True])
def test_tls_backends_are_verified_with_the_trusted_file(ca_pem: str, pooled: bool):
    inputs = tls_inputs(
        ca_pem,
        backend_loki_urls={"loki/0": "https://loki-0.l.cos.svc.cluster.local:3100/push"},
        backend_workload_tracing_receivers={
            "otlp_http": "https://tempo.cos.svc.cluster.local:4318",  # so gRPC is TLS too
            "otlp_grpc": "tempo.cos.svc.cluster.local:4317",
        },
        upstream_trust=True,
    )
    text = render_nginx_config(
        build_telemetry_proxy(inputs), replace(SETTINGS, upstream_resolve=pooled)
    )
    assert _upstream_tls_lines(text) == [  # http level: no trusted file (see below)
        "proxy_ssl_server_name on;",
        "grpc_ssl_server_name on;",
        "proxy_ssl_protocols TLSv1.2 TLSv1.3;",
        "grpc_ssl_protocols TLSv1.2 TLSv1.3;",
    ]
    location = block(text, "location = /proxy/loki/loki-0/push").splitlines()
    assert "proxy_pass $upstream$is_args$args;" in location
    assert location[-3:] == [
        "proxy_ssl_verify on;",
        "proxy_ssl_verify_depth 4;",
        "proxy_ssl_trusted_certificate /etc/nginx/tls/upstream-ca.crt;",
    ]
    if pooled:  # the name verified is the backend's, not the block's
        assert "proxy_ssl_name loki-0.l.cos.svc.cluster.local;" in location
    grpc = block(text, "location /opentelemetry.proto.collector.trace.v1.TraceService/")
    assert grpc.splitlines()[-3:] == [
        "grpc_ssl_verify on;",
        "grpc_ssl_verify_depth 4;",
        "grpc_ssl_trusted_certificate /etc/nginx/tls/upstream-ca.crt;",
    ]
    # Only the TLS backends' locations load the trusted file (nginx 1.22 loads it once per
    # location that has it; inherited by thousands of worker locations, that takes minutes).
    assert text.count("_ssl_trusted_certificate") == 3  # loki, otlp_http, otlp_grpc
    assert "ssl" not in block(text, "location = /proxy/worker/worker-0/metrics")


@pytest.mark.parametrize("pooled", [False, True])
def test_without_trust_tls_backends_answer_502_and_are_never_proxied(ca_pem: str, pooled: bool):
    inputs = tls_inputs(
        ca_pem,
        backend_loki_urls={"loki/0": "https://loki-0.l.cos.svc.cluster.local:3100/push"},
        backend_workload_tracing_receivers={
            "otlp_http": "https://tempo.cos.svc.cluster.local:4318",
            "otlp_grpc": "tempo.cos.svc.cluster.local:4317",
        },
    )
    text = render_nginx_config(
        build_telemetry_proxy(inputs), replace(SETTINGS, upstream_resolve=pooled)
    )
    assert block(text, "location = /proxy/loki/loki-0/push") == "return 502;"
    assert block(text, "location /proxy/workload-tracing/otlp_http/") == "return 502;"
    assert block(text, "location /opentelemetry.proto.collector.trace.v1.TraceService/") == (
        "return 502;"
    )
    assert "https://" not in text
    assert "grpcs://" not in text
    assert "ssl_verify" not in text  # nginx refuses it without a trusted file
    assert "upstream https_" not in text  # no pool for a refused backend
    # Plain-HTTP backends are still proxied.
    assert "proxy_pass" in block(text, "location = /proxy/worker/worker-0/metrics")


# --- grafana-source and prometheus_scrape ---------------------------------------------------


def test_grafana_datasource_trusts_the_ca(ca_pem: str):
    assert tls_fields(None) == (None, None)
    assert tls_fields(ca_pem) == ({"tlsAuthWithCACert": True}, {"tlsCACert": ca_pem})
    with pytest.raises(ValueError):
        tls_fields("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    extra, secure = tls_fields(ca_pem)
    data = GrafanaSourceData(
        model="m",
        model_uuid="u",
        application="a",
        type="prometheus",
        extra_fields=extra,
        secure_extra_fields=secure,
    )
    assert json.loads(provider_app_databag(data)["grafana_source_data"] or "") == {
        "application": "a",
        "model": "m",
        "model_uuid": "u",
        "type": "prometheus",
        "extra_fields": {"tlsAuthWithCACert": True},
        "secure_extra_fields": {"tlsCACert": ca_pem},
    }


def test_a_scrape_job_never_carries_a_private_key(caplog: pytest.LogCaptureFixture):
    job = {"job_name": "j", "scheme": "https", "tls_config": {"ca_file": "CA", "key_file": "KEY"}}
    with caplog.at_level(logging.WARNING):
        (cleaned,) = sanitize_scrape_jobs([job])
    assert cleaned == {"job_name": "j", "scheme": "https", "tls_config": {"ca_file": "CA"}}
    assert "key_file" in caplog.text
    assert "KEY" not in caplog.text


# --- the upstream trust bundle --------------------------------------------------------------


def test_upstream_ca_bundle_writes_each_ca_once_sorted_then_the_system_bundle(
    tmp_path_factory: pytest.TempPathFactory, ca_pem: str
):
    other = make_ca(tmp_path_factory.mktemp("other"), "Other CA").pem
    text = upstream_ca_bundle([other, ca_pem, ca_pem], system_bundle="SYSTEM")
    assert text == "".join(sorted([ca_pem, other])) + "SYSTEM\n"
    assert upstream_ca_bundle([ca_pem, other]) == upstream_ca_bundle([other, ca_pem])
    assert upstream_ca_bundle([]) == ""  # nothing to trust: TLS backends get 502
