"""The telemetry proxy's plan: routes, proxied URLs and scrape jobs, decided by a pure function.

:func:`build_telemetry_proxy` takes what the coordinator knows (its identity, the proxy ports, the
worker units, the backends' URLs read from the telemetry relations) and returns a
:class:`TelemetryProxyPlan`: the HTTP and gRPC routes nginx serves (rendered by
:mod:`coordinated_mesh.proxy.nginx`), the proxied URLs handed to the workers, the optional query
route over the workers, the scrape jobs, and the problems found. Every remote value is parsed by
:mod:`coordinated_mesh.parse`; equal inputs in any order give equal plans. The routes and why
telemetry goes through the proxy: ``docs/explanation/telemetry-proxy.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from coordinated_mesh.parse import (
    GrpcAddress,
    HttpUrl,
    Problem,
    check_backend_host,
    is_app_name,
    is_dns_name,
    is_model_name,
    is_model_uuid,
    parse_grpc_address,
    parse_host,
    parse_http_url,
    parse_path,
    parse_pem_certificates,
    parse_port,
    parse_resolver,
    parse_unit_name,
    unit_path_name,
)
from coordinated_mesh.proxy.config import WorkerQueryApi, WorkerTelemetryProxyConfig
from coordinated_mesh.relations.cluster import ProxiedTelemetry, WorkerUnitData
from coordinated_mesh.relations.endpoints import CoordinatorEndpoints
from coordinated_mesh.relations.tracing import (
    GRPC_TRACING_PROTOCOLS,
    HTTP_TRACING_PROTOCOLS,
    grpc_receivers_use_tls,
)

__all__ = [
    "MAX_ITEMS",
    "MAX_WORKER_UNITS",
    "NGINX_EXPORTER_JOB_NAME",
    "NGINX_EXPORTER_PORT",
    "TLS_ENDPOINT",
    "CoordinatorIdentity",
    "GrpcRoute",
    "HttpRoute",
    "QueryRoute",
    "TelemetryProxyInputs",
    "TelemetryProxyPlan",
    "build_telemetry_proxy",
    "split_percentages",
]

NGINX_EXPORTER_PORT = 9113
"""Where ``nginx-prometheus-exporter`` serves metrics (``--web.listen-address=:9113``)."""
NGINX_EXPORTER_JOB_NAME = "nginx-exporter"
"""The scrape job of the coordinator's own exporter (worker jobs start ``workers-``)."""
DEFAULT_STATUS_PORT = 8081
"""The loopback port of nginx's ``stub_status`` page, read by the exporter."""
MAX_ITEMS = 1024
"""The most backend items of one kind (Loki units, remote-write units, tracing receivers) taken
from one relation; more are dropped, with a problem."""
MAX_WORKER_UNITS = 10_000
"""The most worker units one coordinator serves (nginx ``split_clients`` shares cannot go below
0.01%); more are dropped, with a problem. Tested at 5,000."""
TLS_ENDPOINT = "certificates"
"""The endpoint named in a problem with the proxy's own certificate (its CA)."""

# --- Inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoordinatorIdentity:
    """Who the coordinator is: what the proxied URLs and the workers' topology labels need.

    Raises:
        ValueError: a name is not a valid Juju application/model name or the UUID is malformed.
    """

    app_name: str
    model_name: str
    model_uuid: str
    cluster_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        if not is_app_name(self.app_name):
            raise ValueError(f"{self.app_name!r} is not a Juju application name")
        if not is_model_name(self.model_name):
            raise ValueError(f"{self.model_name!r} is not a Juju model name")
        if not is_model_uuid(self.model_uuid):
            raise ValueError(f"{self.model_uuid!r} is not a Juju model UUID")
        if not is_dns_name(self.cluster_domain):
            raise ValueError(f"{self.cluster_domain!r} is not a DNS domain")

    @property
    def service_fqdn(self) -> str:
        """The coordinator's Kubernetes Service: ``<app>.<model>.svc.<cluster domain>``."""
        return f"{self.app_name}.{self.model_name}.svc.{self.cluster_domain}"


@dataclass(frozen=True)
class TelemetryProxyInputs:
    """Everything the telemetry proxy is computed from.

    The mappings hold raw, untrusted strings as read from the relations (the readers in
    :mod:`coordinated_mesh.relations` already validate them; they are validated again here).

    Attributes:
        identity: the coordinator's application, model and cluster domain.
        config: the proxy ports.
        workers: every worker unit's cluster data (units without a metrics endpoint get no
            metrics route).
        backend_loki_urls: Loki unit name -> its push URL (``logging``).
        backend_remote_write_urls: remote-write provider unit name -> its URL (``send-remote-write``).
        backend_charm_tracing_receivers: protocol -> receiver URL (``charm-tracing``).
        backend_workload_tracing_receivers: protocol -> receiver URL (``workload-tracing``); gRPC
            protocols are ``host:port``.
        resolvers: DNS resolver addresses for nginx (from the nginx container's
            ``/etc/resolv.conf``, see :func:`nameservers_from_resolv_conf`).
        status_port: the loopback port of nginx's ``stub_status`` page.
        endpoints: the relation endpoint names, used in problems.
        worker_query_api: the query API to offer through the proxy, or ``None`` for none.
        server_ca_cert: the PEM CA bundle of the certificate the proxy serves (from the
            ``certificates`` relation), or ``None``: no TLS. Parsed again here
            (:func:`~coordinated_mesh.parse.parse_pem_certificates`); a malformed one is a
            problem and the proxy stays plain HTTP (no URL names a CA nobody can verify with).
        upstream_trust: the coordinator has written at least one CA to the nginx container's
            ``NginxSettings.upstream_ca_path`` (the received ``receive-ca-cert`` CAs and the
            system bundle). Without it nothing can verify a TLS backend, so every ``https`` or
            ``grpcs`` backend is refused (502), never reached unverified.
    """

    identity: CoordinatorIdentity
    config: WorkerTelemetryProxyConfig
    workers: Sequence[WorkerUnitData] = ()
    backend_loki_urls: Mapping[str, str] = field(default_factory=dict[str, str])
    backend_remote_write_urls: Mapping[str, str] = field(default_factory=dict[str, str])
    backend_charm_tracing_receivers: Mapping[str, str] = field(default_factory=dict[str, str])
    backend_workload_tracing_receivers: Mapping[str, str] = field(default_factory=dict[str, str])
    resolvers: Sequence[str] = ()
    status_port: int = DEFAULT_STATUS_PORT
    endpoints: CoordinatorEndpoints = field(default_factory=CoordinatorEndpoints)
    worker_query_api: WorkerQueryApi | None = None
    server_ca_cert: str | None = None
    upstream_trust: bool = False


# --- Outputs -------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class HttpRoute:
    """One nginx ``location`` on the HTTP proxy server.

    Attributes:
        location: the path matched (exactly when ``exact``, else as a prefix ending in ``/``).
        exact: ``location = <path>`` (the upstream URL replaces the URI) when true; otherwise a
            prefix location whose prefix is replaced by the upstream URL's path.
        upstream: where requests go.
    """

    location: str
    exact: bool
    upstream: HttpUrl


@dataclass(frozen=True, order=True)
class GrpcRoute:
    """One ``location`` on the gRPC listener: a gRPC service path prefix and its receiver.

    ``tls``: the receiver serves TLS (``grpcs://``, with SNI); see
    :func:`~coordinated_mesh.relations.tracing.grpc_receivers_use_tls`.
    """

    location: str
    upstream: GrpcAddress
    tls: bool = False


@dataclass(frozen=True)
class QueryRoute:
    """The worker query API route: one prefix location spread over every worker unit.

    Attributes:
        location: the prefix location, ending in ``/`` (``/query/``).
        strip_prefix: what is removed from the request path before forwarding (``/query``).
        backends: the workers' ``http://host:port`` (no path), distinct and sorted; never empty.
    """

    location: str
    strip_prefix: str
    backends: tuple[HttpUrl, ...]

    def split(self) -> list[tuple[str, HttpUrl]]:
        """Each backend with its share of requests, as nginx ``split_clients`` takes it.

        See :func:`split_percentages`; the last backend gets ``*``, the remainder.
        """
        return list(zip(split_percentages(len(self.backends)), self.backends, strict=True))


def split_percentages(count: int) -> list[str]:
    """Even shares of 100% for ``count`` backends, in nginx ``split_clients`` form.

    nginx takes percentages with at most two decimals, each above zero, summing to at most 100%;
    ``*`` takes what is left. The first ``count - 1`` shares are explicit and the last is ``*``.
    Shares are in hundredths of a percent and differ by at most one hundredth: with 3 backends
    ``["33.34%", "33.33%", "*"]`` (the ``*`` gets 33.33%).

    Raises:
        ValueError: ``count`` is not in 1..10000 (a share would be below 0.01%).
    """
    if not 1 <= count <= 10_000:
        raise ValueError(f"cannot split requests over {count} backends")
    base, extra = divmod(10_000, count)
    shares = [base + 1 if i < extra else base for i in range(count)]
    return [f"{share // 100}.{share % 100:02d}%" for share in shares[:-1]] + ["*"]


@dataclass(frozen=True)
class TelemetryProxyPlan:
    """What the proxy must do, computed by :func:`build_telemetry_proxy`.

    Attributes:
        config: the proxy ports.
        status_port: the loopback ``stub_status`` port.
        resolvers: validated resolver addresses for nginx, sorted.
        http_routes: routes of the HTTP proxy server, sorted by location.
        grpc_routes: routes of the gRPC listener (empty without ``grpc_port``), sorted.
        proxied_telemetry: the proxied URLs for the workers.
        scrape_jobs: Prometheus scrape jobs: the exporter's, then one per worker application
            (``workers-<app>``, a target per unit), by job name.
        problems: dropped inputs, sorted.
        query_route: the worker query API route; ``None`` without a :class:`WorkerQueryApi` or
            while no worker can serve queries.
        query_url: the query API as the coordinator offers it (its Service, the HTTP port and
            the prefix, no trailing ``/``): ``None`` exactly when ``query_route`` is.
        loop_token: what this coordinator's proxy marks the requests it forwards with (the same
            on every unit, 16 hex digits): a request arriving with it has looped back.
        tls: the proxy serves TLS (``https_port`` and the gRPC listener) with the certificate
            the coordinator wrote to ``NginxSettings.server_cert_path``; every proxied URL is
            ``https`` on ``https_port`` and ``proxied_telemetry.ca_cert`` is its CA.
        upstream_trust: nginx verifies TLS backends against ``NginxSettings.upstream_ca_path``
            (always on); ``False``: no trust material, every TLS backend is refused (502).
    """

    config: WorkerTelemetryProxyConfig
    status_port: int
    resolvers: tuple[str, ...]
    http_routes: tuple[HttpRoute, ...]
    grpc_routes: tuple[GrpcRoute, ...]
    proxied_telemetry: ProxiedTelemetry
    scrape_jobs: tuple[dict[str, Any], ...]
    problems: tuple[Problem, ...]
    query_route: QueryRoute | None = None
    query_url: str | None = None
    loop_token: str = "0" * 16
    tls: bool = False
    upstream_trust: bool = False

    @property
    def client_port(self) -> int:
        """The port the proxied URLs and scrape jobs name: ``https_port`` with TLS."""
        return self.config.client_port(tls=self.tls)

    @property
    def listen_ports(self) -> frozenset[int]:
        """Every port nginx listens on for this plan (without the loopback status port)."""
        return self.config.listen_ports(tls=self.tls)


# --- Building ------------------------------------------------------------------------------


class _Collector:
    """Accumulates problems while parsing inputs."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, endpoint: str, item: object, reason: str) -> None:
        self.problems.append(Problem.of(endpoint, item, reason))

    def capped(
        self, endpoint: str, items: Iterable[tuple[Any, Any]], limit: int = MAX_ITEMS
    ) -> list[tuple[Any, Any]]:
        """Items of a mapping sorted by key (as text), at most ``limit``; the rest reported.

        Keys of a mapping are distinct, so the key alone orders them.
        """
        ordered = sorted(items, key=lambda kv: str(kv[0]))
        if len(ordered) > limit:
            self.add(endpoint, f"{len(ordered)} items", f"only the first {limit} are used")
        return ordered[:limit]


def _server_ca(collect: _Collector, inputs: TelemetryProxyInputs) -> str | None:
    """The proxy's own CA, parsed; ``None`` (plain HTTP) without one or when it is malformed."""
    if inputs.server_ca_cert is None:
        return None
    try:
        return parse_pem_certificates(inputs.server_ca_cert)
    except ValueError as e:
        collect.add(TLS_ENDPOINT, "ca", f"not serving TLS: {e}")
        return None


def _proxy_base_url(inputs: TelemetryProxyInputs, *, tls: bool) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://{inputs.identity.service_fqdn}:{inputs.config.client_port(tls=tls)}"


def _backend_host(inputs: TelemetryProxyInputs, host: str) -> None:
    """Apply the upstream policy to a telemetry backend (:func:`check_backend_host`).

    Raises:
        ValueError: the host is refused.
    """
    identity = inputs.identity
    check_backend_host(
        host,
        app_name=identity.app_name,
        model_name=identity.model_name,
        cluster_domain=identity.cluster_domain,
    )


def _loop_token(identity: CoordinatorIdentity) -> str:
    """The same for every unit of one coordinator, different for every other coordinator."""
    text = f"{identity.model_uuid}/{identity.app_name}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unit_urls(
    collect: _Collector, inputs: TelemetryProxyInputs, endpoint: str, urls: Mapping[str, str]
) -> dict[str, HttpUrl]:
    """Validate ``unit -> URL``; drop invalid or refused ones and later duplicates of a URL."""
    valid: dict[str, HttpUrl] = {}
    seen: set[HttpUrl] = set()
    for unit, raw in collect.capped(endpoint, urls.items()):
        try:
            name = parse_unit_name(unit)
            url = parse_http_url(raw)
            _backend_host(inputs, url.host)
        except ValueError as e:
            collect.add(endpoint, unit, str(e))
            continue
        if url in seen:
            continue  # the same backend published by several units: send once, not N times
        seen.add(url)
        valid[name] = url
    return valid


def _unique_workers(collect: _Collector, inputs: TelemetryProxyInputs) -> dict[str, WorkerUnitData]:
    """The workers by unit name; a unit published twice is reported and one copy kept."""
    endpoint = inputs.endpoints.cluster
    by_unit: dict[str, WorkerUnitData] = {}
    for worker in inputs.workers:
        unit = worker.juju_topology.unit
        if unit in by_unit and by_unit[unit] != worker:
            collect.add(endpoint, unit, "published by more than one worker; using one of them")
            if worker.model_dump_json() < by_unit[unit].model_dump_json():
                by_unit[unit] = worker
        else:
            by_unit[unit] = worker
    return by_unit


def _worker_host(unit: object, worker: WorkerUnitData) -> tuple[str, str]:
    """The checked unit name and address of a worker.

    Raises:
        ValueError: the unit name, its topology or its address is not acceptable.
    """
    name = parse_unit_name(unit)
    topology = worker.juju_topology
    if not isinstance(topology.application, str) or name.split("/")[0] != topology.application:
        raise ValueError("the unit name does not match its application")
    if not is_app_name(topology.charm_name):
        raise ValueError(f"{topology.charm_name!r} is not a charm name")
    return name, parse_host(worker.address)


WORKER_JOB_PREFIX = "workers-"
"""Worker scrape jobs are ``workers-<application>``: never the exporter's job name."""


def _worker_scrape_job(
    inputs: TelemetryProxyInputs,
    application: str,
    charm_name: str,
    units: Sequence[str],
    ca_cert: str | None,
) -> dict[str, Any]:
    """The proxied scrape job of one worker application: one target per unit, O(1) bytes each.

    Each target is a placeholder ``<unit path name>:<port>`` that ``relabel_configs`` turn into
    the unit's proxied metrics path and ``juju_unit``, then point at the coordinator's Service
    (the blackbox-exporter pattern). The real ``prometheus_scrape`` consumer keeps non-wildcard
    targets that are not its provider's unit addresses as given, in one job, and keeps our
    ``relabel_configs`` before its own ``instance`` one (``prometheus_k8s`` v0 LIBPATCH 61,
    ``PrometheusConfig.expand_wildcard_targets_into_individual_jobs``).

    With TLS (``ca_cert``) the job is ``scheme: https`` on ``https_port`` with ``tls_config:
    {ca_file: <the CA's PEM text>}``: prometheus-k8s writes a ``ca_file`` it receives to a file
    of its own and points the job at it (``src/charm.py``, ``_process_tls_config``, in
    canonical/prometheus-k8s-operator at 432c227); the name verified is ``__address__``'s host,
    the coordinator's Service, which the certificate covers.
    """
    port = inputs.config.client_port(tls=ca_cert is not None)
    labels = {
        "juju_model": inputs.identity.model_name,
        "juju_model_uuid": inputs.identity.model_uuid,
        "juju_application": application,
        "juju_charm": charm_name,
    }
    tls: dict[str, Any] = {}
    if ca_cert is not None:
        tls = {"scheme": "https", "tls_config": {"ca_file": ca_cert}}
    return {
        "job_name": WORKER_JOB_PREFIX + application,
        "metrics_path": "/metrics",
        **tls,
        "static_configs": [{"targets": [f"{unit_path_name(u)}:{port}" for u in sorted(units)]}],
        "relabel_configs": [
            {
                "source_labels": ["__address__"],
                "regex": r"(.+):[0-9]+",
                "target_label": "__metrics_path__",
                "replacement": "/proxy/worker/${1}/metrics",
            },
            {
                "source_labels": ["__address__"],
                "regex": r"(.+)-([0-9]+):[0-9]+",
                "target_label": "juju_unit",
                "replacement": "${1}/${2}",
            },
            {
                "target_label": "__address__",
                "replacement": f"{inputs.identity.service_fqdn}:{port}",
            },
            *(
                {"target_label": label, "replacement": value}
                for label, value in sorted(labels.items())
            ),
        ],
    }


def _worker_routes(
    collect: _Collector, inputs: TelemetryProxyInputs, ca_cert: str | None
) -> tuple[list[HttpRoute], list[dict[str, Any]], set[HttpUrl]]:
    """Each worker's metrics route and scrape job, and the query API backends."""
    endpoint = inputs.endpoints.cluster
    api = inputs.worker_query_api
    routes: list[HttpRoute] = []
    scraped: dict[str, tuple[str, list[str]]] = {}  # application -> its charm, its units
    query_backends: set[HttpUrl] = set()
    workers = _unique_workers(collect, inputs).items()
    for unit, worker in collect.capped(endpoint, workers, MAX_WORKER_UNITS):
        metrics = worker.metrics_endpoint
        query_port: int | None = None
        if api is not None:
            query_port = api.port if api.port is not None or metrics is None else metrics.port
        if metrics is None and query_port is None:
            continue
        try:
            name, host = _worker_host(unit, worker)
        except ValueError as e:
            collect.add(endpoint, unit, f"worker dropped: {e}")
            continue
        if metrics is not None:
            try:
                url = HttpUrl("http", host, parse_port(metrics.port), parse_path(metrics.path))
            except ValueError as e:
                collect.add(endpoint, unit, f"metrics endpoint dropped: {e}")
            else:
                location = f"/proxy/worker/{unit_path_name(name)}/metrics"
                routes.append(HttpRoute(location=location, exact=True, upstream=url))
                topology = worker.juju_topology
                scraped.setdefault(topology.application, (topology.charm_name, []))[1].append(name)
        if query_port is not None:
            try:
                query_backends.add(HttpUrl("http", host, parse_port(query_port), ""))
            except ValueError as e:
                collect.add(endpoint, unit, f"query API dropped: {e}")
    jobs = [
        _worker_scrape_job(inputs, app, charm, units, ca_cert)
        for app, (charm, units) in scraped.items()
    ]
    return routes, jobs, query_backends


def _query_route(
    inputs: TelemetryProxyInputs, backends: set[HttpUrl], *, tls: bool
) -> tuple[QueryRoute | None, str | None]:
    api = inputs.worker_query_api
    if api is None or not backends:
        return None, None
    route = QueryRoute(
        location=api.location, strip_prefix=api.path_prefix, backends=tuple(sorted(backends))
    )
    return route, _proxy_base_url(inputs, tls=tls) + api.path_prefix


def _tracing(
    collect: _Collector,
    inputs: TelemetryProxyInputs,
    *,
    kind: Literal["charm", "workload"],
    tls: bool,
) -> tuple[list[HttpRoute], list[GrpcRoute], dict[str, str]]:
    if kind == "charm":
        endpoint, receivers = inputs.endpoints.charm_tracing, inputs.backend_charm_tracing_receivers
    else:
        endpoint = inputs.endpoints.workload_tracing
        receivers = inputs.backend_workload_tracing_receivers
    http_routes: list[HttpRoute] = []
    grpc_routes: list[GrpcRoute] = []
    proxied: dict[str, str] = {}
    grpc_tls = grpc_receivers_use_tls(receivers)
    for protocol, raw in collect.capped(endpoint, receivers.items()):
        if protocol not in HTTP_TRACING_PROTOCOLS and protocol not in GRPC_TRACING_PROTOCOLS:
            collect.add(endpoint, protocol, "unknown tracing protocol")
            continue
        try:
            if protocol in HTTP_TRACING_PROTOCOLS:
                url = parse_http_url(raw)
                _backend_host(inputs, url.host)
                location = f"/proxy/{kind}-tracing/{protocol}/"
                http_routes.append(HttpRoute(location=location, exact=False, upstream=url))
                proxied[protocol] = _proxy_base_url(inputs, tls=tls) + location.rstrip("/")
            else:
                address = parse_grpc_address(raw)
                _backend_host(inputs, address.host)
                if kind == "workload" and inputs.config.grpc_port is not None:
                    route = GrpcRoute(GRPC_TRACING_PROTOCOLS[protocol], address, tls=grpc_tls)
                    grpc_routes.append(route)
                    proxied[protocol] = f"{inputs.identity.service_fqdn}:{inputs.config.grpc_port}"
        except ValueError as e:
            collect.add(endpoint, protocol, str(e))
    return http_routes, grpc_routes, proxied


def _refuse_unverifiable(
    collect: _Collector,
    http_routes: Sequence[HttpRoute],
    grpc_routes: Sequence[GrpcRoute],
) -> None:
    """A problem for every TLS backend nginx cannot verify (no trusted CA): it gets 502."""
    for route in http_routes:
        if route.upstream.scheme == "https":
            collect.add("", route.upstream.origin, "TLS backend refused: no CA to verify it")
    for grpc in grpc_routes:
        if grpc.tls:
            collect.add("", str(grpc.upstream), "TLS backend refused: no CA to verify it")


def _resolvers(collect: _Collector, raw: Sequence[str]) -> tuple[str, ...]:
    valid: set[str] = set()
    for item in list(raw)[:16]:
        try:
            valid.add(parse_resolver(item))
        except ValueError as e:
            collect.add("", "resolver", str(e))
    return tuple(sorted(valid))


def _exporter_job() -> dict[str, Any]:
    return {
        "job_name": NGINX_EXPORTER_JOB_NAME,
        "static_configs": [{"targets": [f"*:{NGINX_EXPORTER_PORT}"]}],
    }


def build_telemetry_proxy(inputs: TelemetryProxyInputs) -> TelemetryProxyPlan:
    """Compute the telemetry proxy: routes, proxied URLs, scrape jobs and problems.

    Never raises on relation data: invalid items are dropped and listed in ``plan.problems``.

    With ``server_ca_cert`` the proxy serves TLS: every URL is ``https`` on ``https_port``, the
    workers get the CA (``proxied_telemetry.ca_cert``) and the scrape jobs name it.

    Raises:
        ValueError: the status port collides with a proxy port or the exporter port.
    """
    config = inputs.config
    configured = config.listen_ports(tls=True)  # https_port is reserved even without TLS
    if inputs.status_port in configured or inputs.status_port == NGINX_EXPORTER_PORT:
        raise ValueError(f"status_port {inputs.status_port} collides with another port")
    if NGINX_EXPORTER_PORT in configured:
        raise ValueError(f"port {NGINX_EXPORTER_PORT} is reserved for the nginx exporter")
    names = inputs.endpoints
    collect = _Collector()
    ca_cert = _server_ca(collect, inputs)
    tls = ca_cert is not None
    base = _proxy_base_url(inputs, tls=tls)

    http_routes, worker_jobs, query_backends = _worker_routes(collect, inputs, ca_cert)
    query_route, query_url = _query_route(inputs, query_backends, tls=tls)

    loki_urls: dict[str, str] = {}
    for unit, url in _unit_urls(collect, inputs, names.logging, inputs.backend_loki_urls).items():
        location = f"/proxy/loki/{unit_path_name(unit)}/push"
        http_routes.append(HttpRoute(location=location, exact=True, upstream=url))
        loki_urls[unit] = base + location

    remote_write: list[str] = []
    for unit, url in _unit_urls(
        collect, inputs, names.remote_write, inputs.backend_remote_write_urls
    ).items():
        location = f"/proxy/remote-write/{unit_path_name(unit)}/write"
        http_routes.append(HttpRoute(location=location, exact=True, upstream=url))
        remote_write.append(base + location)

    charm_http, _, charm_proxied = _tracing(collect, inputs, kind="charm", tls=tls)
    workload_http, grpc_routes, workload_proxied = _tracing(
        collect, inputs, kind="workload", tls=tls
    )
    http_routes += charm_http + workload_http

    if not inputs.upstream_trust:
        _refuse_unverifiable(collect, http_routes, grpc_routes)
    resolvers = _resolvers(collect, inputs.resolvers)
    upstreams = [route.upstream for route in http_routes]
    upstreams += query_route.backends if query_route else ()
    if not resolvers and any(not upstream.is_ip for upstream in upstreams):
        collect.add("", "resolver", "no DNS resolver known: host names cannot be proxied")

    return TelemetryProxyPlan(
        config=config,
        status_port=inputs.status_port,
        resolvers=resolvers,
        http_routes=tuple(sorted(http_routes)),
        grpc_routes=tuple(sorted(grpc_routes)),
        proxied_telemetry=ProxiedTelemetry(
            loki_urls=dict(sorted(loki_urls.items())),
            charm_tracing_receivers=dict(sorted(charm_proxied.items())),
            workload_tracing_receivers=dict(sorted(workload_proxied.items())),
            remote_write_urls=tuple(sorted(remote_write)),
            ca_cert=ca_cert,
        ),
        scrape_jobs=(_exporter_job(), *sorted(worker_jobs, key=lambda j: j["job_name"])),
        problems=tuple(sorted(set(collect.problems))),
        query_route=query_route,
        query_url=query_url,
        loop_token=_loop_token(inputs.identity),
        tls=tls,
        upstream_trust=inputs.upstream_trust,
    )
