"""Hypothesis strategies for telemetry proxy inputs: plausible, malformed and hostile.

Shared by the pure tests (tests/unit/test_telemetry_proxy.py imports it as
``nginx.proxy_strategies``) and the real-nginx tests in this directory.
"""

from __future__ import annotations

from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.proxy.plan import CoordinatorIdentity, TelemetryProxyInputs
from coordinated_mesh.relations.cluster import JujuTopology, MetricsEndpoint, WorkerUnitData
from hypothesis import strategies as st

MODEL_UUID = "12345678-1234-4234-8234-123456789abc"
IDENTITY = CoordinatorIdentity("coordinator", "mymodel", MODEL_UUID)

# Characters that would break out of an nginx directive or a URL, plus unusual Unicode.
HOSTILE_CHARS = list(";{}$\"' \t\n\r#\\`|&<>*?()[]%@!,=+^\x00\u2028\u00e9\ufeff") + list(
    "abc019./:-_"
)
HOSTILE_SNIPPETS = [
    "x; include /etc/passwd;",
    "a}\nserver { listen 1;",
    "$host",
    "${upstream}",
    'x" ; "',
    "evil.com/a b",
    "127.0.0.1:80/x;return 200",
    "http://a/$1",
    "http://a:80/x\n",
    "\n",
    "x" * 3000,
]

hostile_text = st.one_of(
    st.text(alphabet=st.sampled_from(HOSTILE_CHARS), max_size=40),
    st.sampled_from(HOSTILE_SNIPPETS),
)

hosts = st.one_of(
    st.sampled_from(
        [
            "127.0.0.1",
            "10.1.2.3",
            "loki-0.loki-endpoints.cos.svc.cluster.local",
            "Tempo.COS.svc",
            "999.1.1.1",
            "1.2.3",
            "-bad.example",
            "a..b",
            "[::1]",
        ]
    ),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,6}){0,3}", fullmatch=True),
    hostile_text,
)
ports = st.one_of(
    st.integers(1, 65535).map(str),
    st.sampled_from(["", "0", "65536", "99999", "-1", "80a", " 80"]),
)
paths = st.one_of(
    st.sampled_from(["", "/", "/loki/api/v1/push", "/api/v1/write", "/a/../b", "/a b", "/%2e"]),
    st.from_regex(r"(/[A-Za-z0-9._~-]{0,8}){0,4}", fullmatch=True),
    hostile_text.map(lambda t: "/" + t),
)
schemes = st.sampled_from(["http", "https", "HTTP", "ftp", "grpc", ""])


def _url(scheme: str, host: str, port: str, path: str) -> str:
    return f"{scheme}://{host}{':' + port if port else ''}{path}"


urls = st.one_of(st.builds(_url, schemes, hosts, ports, paths), hostile_text)
grpc_addresses = st.one_of(st.builds(lambda h, p: f"{h}:{p}", hosts, ports), urls)
unit_names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,8}/[0-9]{1,3}", fullmatch=True),
    hostile_text,
)
protocols = st.one_of(
    st.sampled_from(
        ["otlp_http", "otlp_grpc", "zipkin", "jaeger_grpc", "jaeger_thrift_http", "tempo_http"]
    ),
    hostile_text,
)
valid_hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "10.1.2.3"]),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,6}){0,3}", fullmatch=True),
)
valid_ports = st.integers(1, 65535).map(str)
plausible_receivers = st.fixed_dictionaries(
    {},
    optional={
        "otlp_grpc": st.builds(lambda h, p: f"{h}:{p}", valid_hosts, valid_ports),
        "jaeger_grpc": st.builds(lambda h, p: f"{h}:{p}", valid_hosts, valid_ports),
        "otlp_http": st.builds(_url, st.just("http"), valid_hosts, valid_ports, st.just("")),
        "zipkin": st.builds(_url, st.just("https"), valid_hosts, valid_ports, paths),
    },
)
receivers = st.one_of(st.dictionaries(protocols, grpc_addresses, max_size=6), plausible_receivers)


def _valid_worker(app: str, number: int, host: str, port: int) -> WorkerUnitData:
    return WorkerUnitData(
        juju_topology=JujuTopology(
            application=app, unit=f"{app}/{number}", charm_name="worker-k8s"
        ),
        address=host,
        metrics_endpoint=MetricsEndpoint(port=port, path="/metrics"),
    )


def _hostile_worker(unit: str, address: str, port: int, path: str) -> WorkerUnitData:
    """Bypass the pydantic validation of the cluster models: defence in depth."""
    app = unit.split("/", maxsplit=1)[0]
    return WorkerUnitData.model_construct(
        juju_topology=JujuTopology.model_construct(application=app, unit=unit, charm_name="w"),
        address=address,
        metrics_endpoint=MetricsEndpoint.model_construct(port=port, path=path),
    )


valid_workers = st.builds(
    _valid_worker,
    st.sampled_from(["worker", "worker-b", "querier"]),
    st.integers(0, 20),
    st.sampled_from(["127.0.0.1", "worker-0.worker-endpoints.mymodel.svc.cluster.local"]),
    st.integers(1, 65535),
)
hostile_workers = st.builds(_hostile_worker, unit_names, hosts, st.integers(-5, 70000), paths)
workers = st.lists(st.one_of(valid_workers, hostile_workers), max_size=6)

resolvers = st.lists(
    st.one_of(
        st.sampled_from(["10.152.183.10", "127.0.0.1:5353", "fd00::10", "[fd00::10]:53"]),
        hostile_text,
    ),
    max_size=3,
)

proxy_configs = st.one_of(
    st.just(WorkerTelemetryProxyConfig(http_port=8080, https_port=8080)),
    st.just(WorkerTelemetryProxyConfig(http_port=8080, https_port=8443, grpc_port=4317)),
)

query_apis = st.one_of(
    st.none(),
    st.just(WorkerQueryApi()),
    st.just(WorkerQueryApi(path_prefix="/api/query_v1", port=3100, datasource_type="loki")),
)

proxy_inputs = st.builds(
    TelemetryProxyInputs,
    identity=st.just(IDENTITY),
    config=proxy_configs,
    workers=workers,
    backend_loki_urls=st.dictionaries(unit_names, urls, max_size=5),
    backend_remote_write_urls=st.dictionaries(unit_names, urls, max_size=5),
    backend_charm_tracing_receivers=receivers,
    backend_workload_tracing_receivers=receivers,
    resolvers=resolvers,
    worker_query_api=query_apis,
)
