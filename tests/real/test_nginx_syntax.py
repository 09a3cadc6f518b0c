"""Every rendered configuration passes the real ``nginx -t`` (Debian's 1.22 here and in CI).

Table cases cover the shapes a coordinator meets; the Hypothesis test renders batches of configs
from plausible, malformed and hostile inputs and checks each one with nginx, and checks that what
nginx accepted has exactly the locations the plan asked for (an injected directive that still
parses would add or change locations).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import NginxSettings, render_nginx_config
from coordinated_mesh.proxy.plan import (
    TelemetryProxyInputs,
    TelemetryProxyPlan,
    build_telemetry_proxy,
)
from coordinated_mesh.relations.cluster import JujuTopology, MetricsEndpoint, WorkerUnitData
from hypothesis import given
from hypothesis import strategies as st

from tests.support.nginx import ProxyNginx, nginx_settings, nginx_test
from tests.support.proxy_strategies import IDENTITY, proxy_inputs

BATCH = 8


def _worker(unit: str, address: str) -> WorkerUnitData:
    return WorkerUnitData(
        juju_topology=JujuTopology(
            application=unit.split("/", maxsplit=1)[0], unit=unit, charm_name="w"
        ),
        address=address,
        metrics_endpoint=MetricsEndpoint(port=9090, path="/metrics"),
    )


CASES: dict[str, TelemetryProxyInputs] = {
    "nothing related": TelemetryProxyInputs(
        identity=IDENTITY, config=WorkerTelemetryProxyConfig(8080, 8080)
    ),
    "everything, with gRPC, names that do not resolve": TelemetryProxyInputs(
        identity=IDENTITY,
        config=WorkerTelemetryProxyConfig(8080, 8443, grpc_port=4317),
        workers=[_worker(f"worker/{i}", f"worker-{i}.nowhere.invalid") for i in range(3)],
        backend_loki_urls={
            "loki/0": "http://loki-0.loki-endpoints.cos.svc.cluster.local:3100/loki/api/v1/push",
            "loki/1": "https://loki.example.invalid/loki/api/v1/push",
        },
        backend_remote_write_urls={
            "prometheus/0": "http://prometheus-0.nowhere.invalid:9090/api/v1/write",
            "mimir/0": "http://10.1.2.3:8080/api/v1/push",
        },
        backend_charm_tracing_receivers={"otlp_http": "http://tempo.nowhere.invalid:4318"},
        backend_workload_tracing_receivers={
            "otlp_http": "https://tempo.nowhere.invalid:4318/prefix",
            "zipkin": "http://tempo.nowhere.invalid:9411",
            "jaeger_thrift_http": "http://tempo.nowhere.invalid:14268",
            "otlp_grpc": "tempo.nowhere.invalid:4317",
            "jaeger_grpc": "10.0.0.9:14250",
        },
        resolvers=["10.152.183.10", "fd00::10", "127.0.0.1:5353"],
        worker_query_api=WorkerQueryApi(),
    ),
    "query API over seven workers, one of them by IP address": TelemetryProxyInputs(
        identity=IDENTITY,
        config=WorkerTelemetryProxyConfig(8080, 8080),
        workers=[_worker(f"worker/{i}", f"worker-{i}.nowhere.invalid") for i in range(6)]
        + [_worker("worker/6", "10.1.0.6")],
        resolvers=["10.152.183.10"],
        worker_query_api=WorkerQueryApi(),
    ),
    "query API with its own prefix and port, one worker": TelemetryProxyInputs(
        identity=IDENTITY,
        config=WorkerTelemetryProxyConfig(8080, 8080),
        workers=[_worker("worker/0", "worker-0.nowhere.invalid")],
        resolvers=["10.152.183.10"],
        worker_query_api=WorkerQueryApi(path_prefix="/loki/api", port=3100, datasource_type="loki"),
    ),
    "IP addresses only, no resolver": TelemetryProxyInputs(
        identity=IDENTITY,
        config=WorkerTelemetryProxyConfig(18080, 18080),
        workers=[_worker("worker/0", "10.1.0.1")],
        backend_loki_urls={"loki/0": "http://10.1.0.2:3100/loki/api/v1/push"},
        worker_query_api=WorkerQueryApi(),
    ),
    "hostile data only": TelemetryProxyInputs(
        identity=IDENTITY,
        config=WorkerTelemetryProxyConfig(8080, 8080, grpc_port=4317),
        backend_loki_urls={"loki/0": "http://a;}\nserver{listen 1;}#", "x}": "http://b"},
        backend_remote_write_urls={"p/0": "http://$host/", "p/1": 'http://a/"'},
        backend_charm_tracing_receivers={"otlp_http": "http://t:1/${x}"},
        backend_workload_tracing_receivers={"otlp_grpc": "t:1;grpc_pass x"},
        resolvers=["1.1.1.1; include /etc/passwd"],
        worker_query_api=WorkerQueryApi(),
    ),
}


def _locations(config: str) -> list[str]:
    return sorted(re.findall(r"^\s*location (.+) \{$", config, flags=re.MULTILINE))


def _expected_locations(plan: TelemetryProxyPlan) -> list[str]:
    wanted = [f"= {r.location}" if r.exact else r.location for r in plan.http_routes]
    wanted += [r.location for r in plan.grpc_routes]
    wanted += [plan.query_route.location] if plan.query_route else []
    wanted += ["/"] * (3 if plan.config.grpc_port else 2) + ["= /status"]
    return sorted(wanted)


def _check(nginx: str, plan: TelemetryProxyPlan, prefix: Path, **overrides: object) -> str:
    config = render_nginx_config(plan, replace(nginx_settings(prefix), **overrides))  # type: ignore[arg-type]
    result = nginx_test(nginx, config, prefix)
    assert result.returncode == 0, f"nginx -t failed:\n{result.stderr}\n--- config ---\n{config}"
    assert _locations(config) == _expected_locations(plan)
    splits = re.findall(r"^\s*split_clients .*$", config, flags=re.MULTILINE)
    assert len(splits) == (plan.query_route is not None)
    return config


@pytest.mark.parametrize("case", list(CASES))
def test_table_cases_pass_nginx_t(nginx_bin: str, tmp_path: Path, case: str):
    plan = build_telemetry_proxy(CASES[case])
    _check(nginx_bin, plan, tmp_path)


def test_default_settings_pass_nginx_t(proxy_nginx: ProxyNginx, tmp_path: Path):
    """The charm's defaults (all addresses, buffered stdout access log, PCRE JIT, /tmp paths)
    are valid on both renderings, without a warning (a PCRE2 without JIT would give one)."""
    plan = build_telemetry_proxy(CASES["everything, with gRPC, names that do not resolve"])
    settings = replace(NginxSettings(), temp_dir=str(tmp_path), upstream_resolve=proxy_nginx.pooled)
    result = nginx_test(proxy_nginx.binary, render_nginx_config(plan, settings), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_hostile_case_routes_nothing(nginx_bin: str, tmp_path: Path):
    plan = build_telemetry_proxy(CASES["hostile data only"])
    assert plan.http_routes == () and plan.grpc_routes == () and plan.resolvers == ()
    assert plan.query_route is None
    assert len(plan.problems) == 7
    config = _check(nginx_bin, plan, tmp_path)
    assert "passwd" not in config
    assert "listen 1;" not in config


@given(st.lists(proxy_inputs, min_size=BATCH, max_size=BATCH))
def test_generated_configs_pass_nginx_t(nginx_bin: str, batch: list[TelemetryProxyInputs]):
    """Batches keep the number of Hypothesis examples (and shrinking) moderate."""
    with TemporaryDirectory() as tmp:
        for inputs in batch:
            _check(nginx_bin, build_telemetry_proxy(inputs), Path(tmp))


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100, 1024])
def test_query_split_of_any_size_passes_nginx_t(nginx_bin: str, tmp_path: Path, count: int):
    """nginx refuses a split_clients whose shares exceed 100% or are 0%: none of ours do."""
    inputs = TelemetryProxyInputs(
        identity=IDENTITY,
        config=WorkerTelemetryProxyConfig(8080, 8080),
        workers=[_worker(f"worker/{i}", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(count)],
        worker_query_api=WorkerQueryApi(),
    )
    plan = build_telemetry_proxy(inputs)
    assert plan.query_route is not None and len(plan.query_route.backends) == count
    config = _check(nginx_bin, plan, tmp_path)
    assert config.count(':9090";') == count


def test_harness_detects_an_invalid_split(nginx_bin: str, tmp_path: Path):
    """Negative control: shares over 100% fail nginx -t, so the test above means something."""
    plan = build_telemetry_proxy(CASES["query API over seven workers, one of them by IP address"])
    config = render_nginx_config(plan, nginx_settings(tmp_path))
    broken = config.replace("14.29%", "50.00%")
    result = nginx_test(nginx_bin, broken, tmp_path)
    assert result.returncode != 0
    assert "percent total is greater than 100%" in result.stderr


def test_harness_detects_an_invalid_config(nginx_bin: str, tmp_path: Path):
    """Negative control: the nginx -t harness really fails on a broken configuration."""
    plan = build_telemetry_proxy(CASES["nothing related"])
    config = render_nginx_config(plan, nginx_settings(tmp_path))
    broken = config.replace("server_name _;", "server_name _; set $x $nonexistent_var;", 1)
    result = nginx_test(nginx_bin, broken, tmp_path)
    assert result.returncode != 0
    assert "nonexistent_var" in result.stderr


# --- pooled upstreams, on nginx >= 1.27.3 (the Debian forky root of tools/nginx-forky.sh) ------


@pytest.mark.parametrize("case", list(CASES))
def test_table_cases_pass_pooled_nginx_t(nginx_resolve_bin: str, tmp_path: Path, case: str):
    plan = build_telemetry_proxy(CASES[case])
    config = _check(nginx_resolve_bin, plan, tmp_path, upstream_resolve=True)
    if not plan.resolvers:  # `resolve` without a resolver would fail nginx -t
        assert " resolve;" not in config


@given(st.lists(proxy_inputs, min_size=BATCH, max_size=BATCH))
def test_generated_configs_pass_pooled_nginx_t(
    nginx_resolve_bin: str, batch: list[TelemetryProxyInputs]
):
    with TemporaryDirectory() as tmp:
        for inputs in batch:
            _check(
                nginx_resolve_bin, build_telemetry_proxy(inputs), Path(tmp), upstream_resolve=True
            )


@pytest.mark.parametrize("count", [1, 3, 100])
def test_pooled_query_split_with_long_names_passes_nginx_t(
    nginx_resolve_bin: str, tmp_path: Path, count: int
):
    """Block names as long as DNS allows are keys of the Host map: its buckets must fit them."""
    label = "w" * 63

    def long_name(i: int) -> str:  # 200+ characters
        return f"w{i}-{label[:56]}.{label}.{label}.mymodel.svc.cluster.local"

    inputs = TelemetryProxyInputs(
        identity=IDENTITY,
        config=WorkerTelemetryProxyConfig(8080, 8080),
        workers=[_worker(f"worker/{i}", long_name(i)) for i in range(count)],
        worker_query_api=WorkerQueryApi(),
        resolvers=["10.152.183.10"],
    )
    plan = build_telemetry_proxy(inputs)
    assert plan.query_route is not None and len(plan.query_route.backends) == count
    config = _check(nginx_resolve_bin, plan, tmp_path, upstream_resolve=True)
    assert config.count(" resolve;") == count
