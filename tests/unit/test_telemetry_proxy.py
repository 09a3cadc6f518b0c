"""The telemetry proxy's pure decisions: parsing untrusted data, routes, proxied URLs, jobs."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest
from coordinated_mesh.parse import (
    GrpcAddress,
    HttpUrl,
    Problem,
    nameservers_from_resolv_conf,
    parse_grpc_address,
    parse_http_url,
    parse_resolver,
    parse_unit_name,
    unit_path_name,
)
from coordinated_mesh.proxy import plan as plan_module
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.nginx import render_nginx_config
from coordinated_mesh.proxy.plan import (
    MAX_ITEMS,
    MAX_WORKER_UNITS,
    GrpcRoute,
    HttpRoute,
    QueryRoute,
    TelemetryProxyInputs,
    build_telemetry_proxy,
    split_percentages,
)
from coordinated_mesh.relations.cluster import (
    CoordinatorAppData,
    JujuTopology,
    MetricsEndpoint,
    WorkerUnitData,
)
from hypothesis import example, given
from hypothesis import strategies as st

from tests.support.coordinator import check_nginx
from tests.support.proxy_strategies import IDENTITY, MODEL_UUID, proxy_inputs

FQDN = "coordinator.mymodel.svc.cluster.local"
CONFIG = WorkerTelemetryProxyConfig(http_port=8080, https_port=8080)
GRPC_CONFIG = WorkerTelemetryProxyConfig(http_port=8080, https_port=8080, grpc_port=4317)
LOKI_0 = "http://loki-0.loki-endpoints.cos.svc.cluster.local:3100/loki/api/v1/push"
LOKI_1 = "http://loki-1.loki-endpoints.cos.svc.cluster.local:3100/loki/api/v1/push"
PROM_0 = "http://prometheus-0.prometheus-endpoints.cos.svc.cluster.local:9090/api/v1/write"
TEMPO_HTTP = "http://tempo.cos.svc.cluster.local:4318"
TEMPO_GRPC = "tempo.cos.svc.cluster.local:4317"


def worker(
    unit: str, address: str = "", port: int = 9090, path: str = "/metrics"
) -> WorkerUnitData:
    app, number = unit.split("/")
    return WorkerUnitData(
        juju_topology=JujuTopology(application=app, unit=unit, charm_name="mesh-worker-k8s"),
        address=address or f"{app}-{number}.{app}-endpoints.mymodel.svc.cluster.local",
        metrics_endpoint=MetricsEndpoint(port=port, path=path),
    )


def full_inputs(**overrides: object) -> TelemetryProxyInputs:
    inputs = TelemetryProxyInputs(
        identity=IDENTITY,
        config=GRPC_CONFIG,
        workers=[worker("worker/0"), worker("worker/1", port=9100, path="/custom/metrics")],
        backend_loki_urls={"loki/0": LOKI_0, "loki/1": LOKI_1},
        backend_remote_write_urls={"prometheus/0": PROM_0},
        backend_charm_tracing_receivers={"otlp_http": TEMPO_HTTP, "otlp_grpc": TEMPO_GRPC},
        backend_workload_tracing_receivers={"otlp_http": TEMPO_HTTP, "otlp_grpc": TEMPO_GRPC},
        resolvers=["10.152.183.10"],
    )
    return replace(inputs, **overrides)  # type: ignore[arg-type]


# --- strict parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://loki:3100/loki/api/v1/push", HttpUrl("http", "loki", 3100, "/loki/api/v1/push")),
        ("https://Tempo.COS.svc:4318", HttpUrl("https", "tempo.cos.svc", 4318, "")),
        ("http://10.1.2.3", HttpUrl("http", "10.1.2.3", 80, "")),
        ("https://10.1.2.3/", HttpUrl("https", "10.1.2.3", 443, "/")),
        ("http://a.b:1/x_y~z-1.2/", HttpUrl("http", "a.b", 1, "/x_y~z-1.2/")),
    ],
)
def test_parse_http_url_accepts_and_normalises(raw: str, expected: HttpUrl):
    assert parse_http_url(raw) == expected
    assert str(parse_http_url(str(expected))) == str(expected)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "loki:3100",
        "ftp://loki:21/x",
        "HTTP://loki",
        "http://loki:0",
        "http://loki:65536",
        "http://loki:-1",
        "http://loki:80a",
        "http://user:pw@loki:3100/push",
        "http://loki:3100/push?x=1",
        "http://loki:3100/push#f",
        "http://loki:3100/a b",
        "http://loki:3100/a;b",
        "http://loki:3100/$host",
        "http://loki:3100/{x}",
        'http://loki:3100/"x"',
        "http://loki:3100/x\n",
        "http://loki:3100/x\nserver {",
        "http://loki:3100/%2e%2e",
        "http://loki:3100/a/../b",
        "http://loki:3100/./b",
        "http://[::1]:3100/",
        "http://999.1.1.1/",
        "http://1.2.3/",
        "http://01.2.3.4/",
        "http://-loki/",
        "http://lo_ki/",
        "http://a..b/",
        "http://" + "a" * 64 + ".com/",
        "http://x/" + "a" * 3000,
        " http://loki/",
        "http://lokі/",  # noqa: RUF001 - a Cyrillic letter
    ],
)
def test_parse_http_url_rejects(raw: str):
    with pytest.raises(ValueError):
        parse_http_url(raw)


@pytest.mark.parametrize("raw", [None, 3100, ["http://x"], {"url": "http://x"}])
def test_parse_http_url_rejects_non_strings(raw: object):
    with pytest.raises(ValueError, match="expected a URL string"):
        parse_http_url(raw)


def test_parse_grpc_address():
    assert parse_grpc_address(TEMPO_GRPC) == GrpcAddress("tempo.cos.svc.cluster.local", 4317)
    for bad in ["tempo", "http://tempo:4317", "tempo:0", "tempo:4317/x", "tempo:4317;", 4317]:
        with pytest.raises(ValueError):
            parse_grpc_address(bad)


def test_unit_names():
    assert parse_unit_name("loki/0") == "loki/0"
    assert unit_path_name("mimir-write/12") == "mimir-write-12"
    for bad in ["loki", "Loki/0", "loki/x", "loki/0/1", "loki/0\n", "", None, "a" * 300 + "/0"]:
        with pytest.raises(ValueError):
            parse_unit_name(bad)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10.152.183.10", "10.152.183.10"),
        ("127.0.0.1:5353", "127.0.0.1:5353"),
        ("fd00::10", "[fd00::10]"),
        ("[fd00::10]:53", "[fd00::10]:53"),
    ],
)
def test_parse_resolver(raw: str, expected: str):
    assert parse_resolver(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "dns.local", "fe80::1%eth0", "10.0.0.1:0", "10.0.0.1:x", "[fd00::1", "1.2.3.4;"]
)
def test_parse_resolver_rejects(raw: str):
    with pytest.raises(ValueError):
        parse_resolver(raw)


def test_nameservers_from_resolv_conf():
    text = (
        "# generated\nsearch mymodel.svc.cluster.local svc.cluster.local\n"
        "nameserver 10.152.183.10\nnameserver   fd00::a # second\noptions ndots:5\n"
    )
    assert nameservers_from_resolv_conf(text) == ["10.152.183.10", "fd00::a"]


# --- the plan ----------------------------------------------------------------------------


def test_full_plan_routes():
    plan = build_telemetry_proxy(full_inputs())
    assert plan.problems == ()
    assert plan.http_routes == tuple(
        sorted(
            [
                HttpRoute(
                    "/proxy/worker/worker-0/metrics",
                    True,
                    parse_http_url(
                        "http://worker-0.worker-endpoints.mymodel.svc.cluster.local:9090/metrics"
                    ),
                ),
                HttpRoute(
                    "/proxy/worker/worker-1/metrics",
                    True,
                    parse_http_url(
                        "http://worker-1.worker-endpoints.mymodel.svc.cluster.local:9100/custom/metrics"
                    ),
                ),
                HttpRoute("/proxy/loki/loki-0/push", True, parse_http_url(LOKI_0)),
                HttpRoute("/proxy/loki/loki-1/push", True, parse_http_url(LOKI_1)),
                HttpRoute("/proxy/remote-write/prometheus-0/write", True, parse_http_url(PROM_0)),
                HttpRoute("/proxy/charm-tracing/otlp_http/", False, parse_http_url(TEMPO_HTTP)),
                HttpRoute("/proxy/workload-tracing/otlp_http/", False, parse_http_url(TEMPO_HTTP)),
            ]
        )
    )
    assert plan.grpc_routes == (
        GrpcRoute(
            "/opentelemetry.proto.collector.trace.v1.TraceService/",
            GrpcAddress("tempo.cos.svc.cluster.local", 4317),
        ),
    )
    assert plan.resolvers == ("10.152.183.10",)


def test_full_plan_worker_urls_fit_coordinator_app_data():
    plan = build_telemetry_proxy(full_inputs())
    base = f"http://{FQDN}:8080"
    urls = plan.proxied_telemetry
    assert urls.loki_urls == {
        "loki/0": f"{base}/proxy/loki/loki-0/push",
        "loki/1": f"{base}/proxy/loki/loki-1/push",
    }
    # Charm traces: HTTP only (gRPC tracing is served for workloads only).
    assert urls.charm_tracing_receivers == {"otlp_http": f"{base}/proxy/charm-tracing/otlp_http"}
    assert urls.workload_tracing_receivers == {
        "otlp_grpc": f"{FQDN}:4317",
        "otlp_http": f"{base}/proxy/workload-tracing/otlp_http",
    }
    assert list(urls.remote_write_urls) == [f"{base}/proxy/remote-write/prometheus-0/write"]
    data = CoordinatorAppData.compose(worker_labels=None, worker_config=None, telemetry=urls)
    assert CoordinatorAppData.load(data.dump()) == data
    assert data.remote_write_endpoints is not None
    assert data.remote_write_endpoints[0].url.endswith("/proxy/remote-write/prometheus-0/write")


def test_proxied_urls_parse_as_safe_urls():
    plan = build_telemetry_proxy(full_inputs())
    for url in [
        *plan.proxied_telemetry.loki_urls.values(),
        *plan.proxied_telemetry.charm_tracing_receivers.values(),
        *plan.proxied_telemetry.remote_write_urls,
    ]:
        assert parse_http_url(url).host == FQDN


def test_scrape_jobs():
    plan = build_telemetry_proxy(full_inputs())
    assert plan.scrape_jobs[0] == {
        "job_name": "nginx-exporter",
        "static_configs": [{"targets": ["*:9113"]}],
    }
    # One job per worker application, one placeholder target per unit (relabelled per unit).
    assert [j["job_name"] for j in plan.scrape_jobs[1:]] == ["workers-worker"]
    assert plan.scrape_jobs[1] == {
        "job_name": "workers-worker",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": ["worker-0:8080", "worker-1:8080"]}],
        "relabel_configs": [
            {
                "source_labels": ["__address__"],
                "regex": "(.+):[0-9]+",
                "target_label": "__metrics_path__",
                "replacement": "/proxy/worker/${1}/metrics",
            },
            {
                "source_labels": ["__address__"],
                "regex": "(.+)-([0-9]+):[0-9]+",
                "target_label": "juju_unit",
                "replacement": "${1}/${2}",
            },
            {"target_label": "__address__", "replacement": f"{FQDN}:8080"},
            {"target_label": "juju_application", "replacement": "worker"},
            {"target_label": "juju_charm", "replacement": "mesh-worker-k8s"},
            {"target_label": "juju_model", "replacement": "mymodel"},
            {"target_label": "juju_model_uuid", "replacement": MODEL_UUID},
        ],
    }


def test_no_backends_gives_empty_urls_and_only_the_exporter_job():
    plan = build_telemetry_proxy(TelemetryProxyInputs(identity=IDENTITY, config=CONFIG))
    assert plan.http_routes == ()
    assert plan.grpc_routes == ()
    assert plan.problems == ()
    assert CoordinatorAppData.compose(
        worker_labels=None, worker_config=None, telemetry=plan.proxied_telemetry
    ).dump() == {
        "loki_endpoints": "{}",
        "charm_tracing_receivers": "{}",
        "workload_tracing_receivers": "{}",
        "remote_write_endpoints": "[]",
    }
    assert [j["job_name"] for j in plan.scrape_jobs] == ["nginx-exporter"]


def test_worker_without_metrics_endpoint_gets_no_route():
    bare = WorkerUnitData(
        juju_topology=JujuTopology(application="worker", unit="worker/3", charm_name="w"),
        address="10.0.0.3",
    )
    plan = build_telemetry_proxy(full_inputs(workers=[bare]))
    assert not any(r.location.startswith("/proxy/worker/") for r in plan.http_routes)
    assert plan.problems == ()


def test_invalid_items_are_dropped_and_reported_rest_keeps_working():
    plan = build_telemetry_proxy(
        full_inputs(
            backend_loki_urls={"loki/0": LOKI_0, "loki/1": "http://evil;include /etc/passwd"},
            backend_remote_write_urls={"prometheus/0": PROM_0, "not a unit": PROM_0 + "x"},
            backend_charm_tracing_receivers={
                "otlp_http": "http://tempo:4318/$x",
                "tempo_http": "x",
            },
            backend_workload_tracing_receivers={"otlp_http": TEMPO_HTTP, "otlp_grpc": "tempo"},
        )
    )
    assert [str(p) for p in plan.problems] == sorted(
        [
            "charm-tracing: otlp_http: path '/$x' has characters other than letters, digits, "
            "'/', '.', '_', '~', '-'",
            "charm-tracing: tempo_http: unknown tracing protocol",
            "logging: loki/1: 'http://evil;include /etc/passwd' is not an "
            "http(s)://host[:port][/path] URL",
            "send-remote-write: not a unit: 'not a unit' is not a Juju unit name",
            "workload-tracing: otlp_grpc: 'tempo' is not a host:port gRPC address",
        ]
    )
    assert list(plan.proxied_telemetry.loki_urls) == ["loki/0"]
    assert len(plan.proxied_telemetry.remote_write_urls) == 1
    assert plan.proxied_telemetry.charm_tracing_receivers == {}
    assert list(plan.proxied_telemetry.workload_tracing_receivers) == ["otlp_http"]
    assert plan.grpc_routes == ()


def test_problem_items_are_shown_safely():
    hostile = "loki/0\nserver { listen 1; }" + "x" * 200
    plan = build_telemetry_proxy(full_inputs(backend_loki_urls={hostile: LOKI_0}))
    (problem,) = plan.problems
    assert problem.endpoint == "logging"
    assert "\n" not in str(problem)
    assert len(problem.item) <= 80


def test_hostile_worker_models_are_dropped():
    """Even if a WorkerUnitData skipped validation, nothing unsafe gets into a route."""
    evil = WorkerUnitData.model_construct(
        juju_topology=JujuTopology.model_construct(
            application="worker", unit="worker/9", charm_name="w"
        ),
        address="x; return 200",
        metrics_endpoint=MetricsEndpoint.model_construct(port=9090, path="/metrics"),
    )
    mismatched = worker("worker/8").model_copy(
        update={
            "juju_topology": JujuTopology.model_construct(
                application="other", unit="worker/8", charm_name="w"
            )
        }
    )
    plan = build_telemetry_proxy(full_inputs(workers=[worker("worker/0"), evil, mismatched]))
    assert [r.location for r in plan.http_routes if "/worker/" in r.location] == [
        "/proxy/worker/worker-0/metrics"
    ]
    assert {(p.endpoint, p.item) for p in plan.problems} == {
        ("cluster", "worker/8"),
        ("cluster", "worker/9"),
    }


def test_same_backend_url_from_several_units_is_routed_once():
    plan = build_telemetry_proxy(
        full_inputs(
            backend_remote_write_urls={"mimir/1": PROM_0, "mimir/0": PROM_0}, backend_loki_urls={}
        )
    )
    assert list(plan.proxied_telemetry.remote_write_urls) == [
        f"http://{FQDN}:8080/proxy/remote-write/mimir-0/write"
    ]


def test_duplicate_worker_units_are_reported():
    plan = build_telemetry_proxy(
        full_inputs(workers=[worker("worker/0", port=1), worker("worker/0", port=2)])
    )
    assert [p.item for p in plan.problems] == ["worker/0"]
    again = build_telemetry_proxy(
        full_inputs(workers=[worker("worker/0", port=2), worker("worker/0", port=1)])
    )
    assert again == plan


def test_tracing_receiver_with_a_path_and_https():
    plan = build_telemetry_proxy(
        full_inputs(
            backend_charm_tracing_receivers={"otlp_http": "https://tempo.example:443/otlp/"}
        )
    )
    (route,) = [r for r in plan.http_routes if r.location.startswith("/proxy/charm-tracing/")]
    assert route == HttpRoute(
        "/proxy/charm-tracing/otlp_http/", False, HttpUrl("https", "tempo.example", 443, "/otlp/")
    )


def test_grpc_receivers_need_a_grpc_port():
    plan = build_telemetry_proxy(full_inputs(config=CONFIG))
    assert plan.grpc_routes == ()
    assert "otlp_grpc" not in plan.proxied_telemetry.workload_tracing_receivers
    assert plan.problems == ()


def test_missing_resolver_is_a_problem_only_for_host_names():
    by_name = build_telemetry_proxy(full_inputs(resolvers=[]))
    assert [str(p) for p in by_name.problems] == [
        "resolver: no DNS resolver known: host names cannot be proxied"
    ]
    by_ip = build_telemetry_proxy(
        full_inputs(
            resolvers=[],
            workers=[worker("worker/0", address="10.1.0.5")],
            backend_loki_urls={"loki/0": "http://10.1.0.6:3100/loki/api/v1/push"},
            backend_remote_write_urls={},
            backend_charm_tracing_receivers={},
            backend_workload_tracing_receivers={},
        )
    )
    assert by_ip.problems == ()


def test_bad_resolvers_are_reported():
    plan = build_telemetry_proxy(full_inputs(resolvers=["fe80::1%eth0", "10.0.0.10"]))
    assert plan.resolvers == ("10.0.0.10",)
    assert [p.item for p in plan.problems] == ["resolver"]


def test_too_many_items_are_capped():
    urls = {f"loki/{i}": f"http://loki-{i}.l:3100/push" for i in range(MAX_ITEMS + 5)}
    plan = build_telemetry_proxy(full_inputs(backend_loki_urls=urls))
    assert len(plan.proxied_telemetry.loki_urls) == MAX_ITEMS
    assert Problem("logging", f"{MAX_ITEMS + 5} items", f"only the first {MAX_ITEMS} are used") in (
        plan.problems
    )


def test_five_thousand_worker_units_are_all_served():
    """No cap below what Juju runs: 50 applications of 100 units, every unit routed and scraped."""
    workers = [worker(f"w{a}/{u}") for a in range(50) for u in range(100)]
    random.Random(5).shuffle(workers)
    api = WorkerQueryApi(path_prefix="/query")
    plan = build_telemetry_proxy(full_inputs(workers=workers, worker_query_api=api))
    assert plan.problems == ()
    metrics = [r for r in plan.http_routes if r.location.startswith("/proxy/worker/")]
    assert len(metrics) == 5000
    assert len(plan.scrape_jobs) == 51  # the exporter's, then one per application
    assert sum(len(j["static_configs"][0]["targets"]) for j in plan.scrape_jobs[1:]) == 5000
    assert plan.query_route is not None and len(plan.query_route.backends) == 5000
    check_nginx(render_nginx_config(plan))


def test_worker_units_beyond_the_supported_maximum_are_reported(
    monkeypatch: pytest.MonkeyPatch,
):
    assert MAX_WORKER_UNITS >= 5000
    split_percentages(MAX_WORKER_UNITS)  # the query route can spread over all of them
    monkeypatch.setattr(plan_module, "MAX_WORKER_UNITS", 3)
    workers = [worker(f"w/{u}") for u in range(5)]
    plan = build_telemetry_proxy(full_inputs(workers=workers))
    routed = sorted(r.location for r in plan.http_routes if r.location.startswith("/proxy/worker/"))
    assert routed == [f"/proxy/worker/w-{u}/metrics" for u in range(3)]
    assert Problem("cluster", "5 items", "only the first 3 are used") in plan.problems


def test_port_collisions_are_charm_errors():
    with pytest.raises(ValueError, match="status_port"):
        build_telemetry_proxy(full_inputs(status_port=8080))
    with pytest.raises(ValueError, match="reserved"):
        build_telemetry_proxy(
            full_inputs(config=WorkerTelemetryProxyConfig(http_port=9113, https_port=9113))
        )
    with pytest.raises(ValueError, match="grpc_port"):
        WorkerTelemetryProxyConfig(http_port=8080, https_port=8443, grpc_port=8443)
    with pytest.raises(ValueError, match="http_port"):
        WorkerTelemetryProxyConfig(http_port=0, https_port=8443)
    with pytest.raises(ValueError, match="https_port"):
        WorkerTelemetryProxyConfig(http_port=80, https_port=True)


def test_identity_validation():
    assert IDENTITY.service_fqdn == FQDN
    for bad in [
        {"app_name": "Coord"},
        {"model_name": "my model"},
        {"model_uuid": "nope"},
        {"cluster_domain": "cluster.local;"},
    ]:
        with pytest.raises(ValueError):
            replace(IDENTITY, **bad)  # type: ignore[arg-type]


def test_identity_accepts_every_juju_model_name():
    """Juju model names may start with a digit; the coordinator must not fail every hook there."""
    for model in ["2024-prod", "0", "m" * 63]:
        identity = replace(IDENTITY, model_name=model)
        assert identity.service_fqdn == f"{IDENTITY.app_name}.{model}.svc.cluster.local"
    for bad in ["prod-", "-prod", "m" * 64, "Prod"]:
        with pytest.raises(ValueError):
            replace(IDENTITY, model_name=bad)


# --- the worker query API ----------------------------------------------------------------

QUERY = WorkerQueryApi()


def _hundredths(share: str) -> int:
    whole, decimals = share.rstrip("%").split(".")
    return int(whole) * 100 + int(decimals)


def test_worker_query_api_defaults_and_paths():
    assert WorkerQueryApi(path_prefix="/query", port=None, datasource_type="prometheus") == QUERY
    assert QUERY.location == "/query/"
    assert QUERY.mesh_path == "/query/*"
    assert WorkerQueryApi("/api/v1-q_2", 3100, "loki").mesh_path == "/api/v1-q_2/*"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path_prefix": ""},
        {"path_prefix": "/"},
        {"path_prefix": "query"},
        {"path_prefix": "/query/"},
        {"path_prefix": "/query//x"},
        {"path_prefix": "/a/../b"},
        {"path_prefix": "/q.v1"},
        {"path_prefix": "/q y"},
        {"path_prefix": "/q;return 200"},
        {"path_prefix": "/q$x"},
        {"path_prefix": "/q(.*)"},
        {"path_prefix": "/proxy"},
        {"path_prefix": "/proxy/worker"},
        {"path_prefix": "/" + "a" * 64},
        {"path_prefix": "/a" * 9},
        {"path_prefix": None},
        {"port": 0},
        {"port": 65536},
        {"port": True},
        {"port": "9090"},
        {"datasource_type": "Prometheus"},
        {"datasource_type": "prom etheus"},
        {"datasource_type": ""},
    ],
)
def test_worker_query_api_rejects(kwargs: dict[str, object]):
    with pytest.raises(ValueError):
        WorkerQueryApi(**kwargs)  # type: ignore[arg-type]


def test_worker_query_api_accepts_proxy_as_a_later_segment():
    assert WorkerQueryApi("/proxyish").location == "/proxyish/"
    assert WorkerQueryApi("/q/proxy").location == "/q/proxy/"


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, ["*"]),
        (2, ["50.00%", "*"]),
        (3, ["33.34%", "33.33%", "*"]),
        (4, ["25.00%", "25.00%", "25.00%", "*"]),
        (7, ["14.29%", "14.29%", "14.29%", "14.29%", "14.28%", "14.28%", "*"]),
    ],
)
def test_split_percentages_pinned(count: int, expected: list[str]):
    assert split_percentages(count) == expected


@given(st.integers(min_value=1, max_value=10_000))
@example(1)
@example(2)
@example(MAX_ITEMS)
@example(10_000)
def test_split_percentages_sum_and_evenness(count: int):
    """What nginx accepts (two decimals, each > 0, total <= 100%) and an even spread."""
    split = split_percentages(count)
    assert len(split) == count
    assert split[-1] == "*"
    explicit = split[:-1]
    assert all(re.fullmatch(r"[0-9]{1,3}\.[0-9]{2}%", share) for share in explicit)
    shares = [_hundredths(share) for share in explicit]
    assert all(share > 0 for share in shares)
    assert sum(shares) <= 10_000
    shares.append(10_000 - sum(shares))  # what "*" gets
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)


@pytest.mark.parametrize("count", [0, -1, 10_001])
def test_split_percentages_refuses_impossible_counts(count: int):
    with pytest.raises(ValueError):
        split_percentages(count)


def _backend(host: str, port: int = 9090) -> HttpUrl:
    return HttpUrl("http", host, port, "")


W0 = "worker-0.worker-endpoints.mymodel.svc.cluster.local"
W1 = "worker-1.worker-endpoints.mymodel.svc.cluster.local"


def test_query_route_spreads_over_every_worker_on_its_metrics_port():
    plan = build_telemetry_proxy(full_inputs(worker_query_api=QUERY))
    assert plan.problems == ()
    # worker/1 publishes its metrics (its Prometheus) on 9100: that is where its API is.
    assert plan.query_route == QueryRoute(
        "/query/", "/query", (_backend(W0, 9090), _backend(W1, 9100))
    )
    assert plan.query_url == f"http://{FQDN}:8080/query"
    assert plan.query_route is not None
    assert plan.query_route.split() == [("50.00%", _backend(W0)), ("*", _backend(W1, 9100))]
    # The metrics routes and the proxied URLs are unchanged by the query API.
    without = build_telemetry_proxy(full_inputs())
    assert plan.http_routes == without.http_routes
    assert plan.scrape_jobs == without.scrape_jobs
    assert plan.proxied_telemetry == without.proxied_telemetry
    assert (without.query_route, without.query_url) == (None, None)


def test_query_route_with_a_fixed_port_includes_workers_without_metrics():
    bare = WorkerUnitData(
        juju_topology=JujuTopology(application="worker", unit="worker/3", charm_name="w"),
        address="10.0.0.3",
    )
    api = WorkerQueryApi(path_prefix="/loki", port=3100, datasource_type="loki")
    plan = build_telemetry_proxy(
        full_inputs(workers=[worker("worker/0"), bare], worker_query_api=api)
    )
    assert plan.query_route == QueryRoute(
        "/loki/", "/loki", (_backend("10.0.0.3", 3100), _backend(W0, 3100))
    )
    assert plan.query_url == f"http://{FQDN}:8080/loki"
    # Without a fixed port, a worker that publishes no metrics port serves no queries.
    plan = build_telemetry_proxy(full_inputs(workers=[bare], worker_query_api=QUERY))
    assert (plan.query_route, plan.query_url, plan.problems) == (None, None, ())


def test_no_query_route_without_workers():
    plan = build_telemetry_proxy(full_inputs(workers=[], worker_query_api=QUERY))
    assert plan.query_route is None
    assert plan.query_url is None
    assert plan.problems == ()


def test_no_query_route_when_every_worker_is_invalid():
    evil = WorkerUnitData.model_construct(
        juju_topology=JujuTopology.model_construct(
            application="worker", unit="worker/9", charm_name="w"
        ),
        address='x";} server { listen 1; } #',
        metrics_endpoint=MetricsEndpoint.model_construct(port=9090, path="/metrics"),
    )
    plan = build_telemetry_proxy(full_inputs(workers=[evil], worker_query_api=QUERY))
    assert (plan.query_route, plan.query_url) == (None, None)
    assert [(p.endpoint, p.item) for p in plan.problems] == [("cluster", "worker/9")]
    assert "worker dropped" in plan.problems[0].reason


def test_hostile_worker_data_never_reaches_the_query_route():
    def hostile(
        unit: str, address: str, port: object, path: str = "/metrics", app: str = "worker"
    ) -> WorkerUnitData:
        return WorkerUnitData.model_construct(
            juju_topology=JujuTopology.model_construct(application=app, unit=unit, charm_name="w"),
            address=address,
            metrics_endpoint=MetricsEndpoint.model_construct(port=port, path=path),
        )

    workers = [
        worker("worker/0"),
        hostile("worker/1", "worker-1.x;proxy_pass http://evil", 9090),
        hostile("worker/2", "$host", 9090),
        hostile("worker/3", "worker-3.ok", "9090; return 200"),
        hostile("worker/4", "worker-4.ok", 70000),
        hostile("worker/5", "worker-5.ok", 9090, path="/a b;"),  # bad path: metrics only
        hostile("worker/6", "worker-6.ok", 9090, app="evil"),  # not the unit's application
    ]
    plan = build_telemetry_proxy(full_inputs(workers=workers, worker_query_api=QUERY))
    assert plan.query_route is not None
    assert plan.query_route.backends == (_backend(W0), _backend("worker-5.ok"))
    assert {p.item for p in plan.problems} == {f"worker/{i}" for i in range(1, 7)}
    assert not any(r.location == "/proxy/worker/worker-5/metrics" for r in plan.http_routes)


def test_workers_at_the_same_address_are_one_backend():
    same = [worker("worker/0"), worker("worker/1", address=W0)]
    plan = build_telemetry_proxy(full_inputs(workers=same, worker_query_api=QUERY))
    assert plan.query_route is not None
    assert plan.query_route.backends == (_backend(W0),)


@given(st.permutations(range(12)), st.sampled_from([1, 2, 5, 12]))
def test_query_route_is_sorted_whatever_the_order(order: list[int], count: int):
    workers = [worker(f"worker-{'abc'[i % 3]}/{i}") for i in range(12)][:count]
    shuffled = [workers[i] for i in order if i < count]
    plan = build_telemetry_proxy(full_inputs(workers=shuffled, worker_query_api=QUERY))
    assert plan == build_telemetry_proxy(full_inputs(workers=workers, worker_query_api=QUERY))
    assert plan.query_route is not None
    assert list(plan.query_route.backends) == sorted(set(plan.query_route.backends))
    assert len(plan.query_route.backends) == count


def test_query_route_names_need_a_resolver():
    plan = build_telemetry_proxy(
        full_inputs(
            resolvers=[],
            workers=[worker("worker/0", address="10.1.0.5")],
            backend_loki_urls={},
            backend_remote_write_urls={},
            backend_charm_tracing_receivers={},
            backend_workload_tracing_receivers={},
            worker_query_api=WorkerQueryApi(port=8080),
        )
    )
    assert plan.problems == ()
    by_name = replace(
        full_inputs(resolvers=[], backend_loki_urls={}, backend_remote_write_urls={}),
        backend_charm_tracing_receivers={},
        backend_workload_tracing_receivers={},
        workers=[
            WorkerUnitData(
                juju_topology=JujuTopology(application="w", unit="w/0", charm_name="w"),
                address="w-0.w-endpoints.mymodel.svc.cluster.local",
            )
        ],
        worker_query_api=WorkerQueryApi(port=8080),
    )
    plan = build_telemetry_proxy(by_name)
    assert plan.http_routes == ()
    assert [str(p) for p in plan.problems] == [
        "resolver: no DNS resolver known: host names cannot be proxied"
    ]


# --- properties --------------------------------------------------------------------------

_SAFE = re.compile(r"[A-Za-z0-9._~:/\[\]-]+")


@given(proxy_inputs)
def test_never_raises_and_only_safe_values_reach_routes(inputs: TelemetryProxyInputs):
    plan = build_telemetry_proxy(inputs)
    for route in plan.http_routes:
        assert _SAFE.fullmatch(route.location)
        assert _SAFE.fullmatch(str(route.upstream))
        assert parse_http_url(str(route.upstream)) == route.upstream
    for route in plan.grpc_routes:
        assert _SAFE.fullmatch(str(route.upstream))
    for resolver in plan.resolvers:
        assert _SAFE.fullmatch(resolver)
    if plan.query_route is not None:
        assert plan.query_route.backends
        for backend in plan.query_route.backends:
            assert _SAFE.fullmatch(str(backend))
            assert backend.path == ""
            assert parse_http_url(str(backend)) == backend
        assert plan.query_url is not None
        assert parse_http_url(plan.query_url).host == FQDN
    else:
        assert plan.query_url is None
    for problem in plan.problems:
        assert str(problem).isprintable()
    assert len({r.location for r in plan.http_routes}) == len(plan.http_routes)


@given(proxy_inputs, st.randoms(use_true_random=False))
def test_input_order_does_not_matter(inputs: TelemetryProxyInputs, rnd: random.Random):
    def shuffled_dict(d: dict[str, str]) -> dict[str, str]:
        items = list(d.items())
        rnd.shuffle(items)
        return dict(items)

    workers = list(inputs.workers)
    rnd.shuffle(workers)
    resolvers = list(inputs.resolvers)
    rnd.shuffle(resolvers)
    permuted = replace(
        inputs,
        workers=workers,
        resolvers=resolvers,
        backend_loki_urls=shuffled_dict(dict(inputs.backend_loki_urls)),
        backend_remote_write_urls=shuffled_dict(dict(inputs.backend_remote_write_urls)),
        backend_charm_tracing_receivers=shuffled_dict(dict(inputs.backend_charm_tracing_receivers)),
        backend_workload_tracing_receivers=shuffled_dict(
            dict(inputs.backend_workload_tracing_receivers)
        ),
    )
    assert build_telemetry_proxy(permuted) == build_telemetry_proxy(inputs)
