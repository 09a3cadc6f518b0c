"""Render the telemetry proxy's nginx configuration: pure text, deterministic, injection-safe.

:func:`render_nginx_config` turns a :class:`~coordinated_mesh.proxy.plan.TelemetryProxyPlan` into
a complete ``nginx.conf`` for nginx 1.22 and newer under Pebble: request-time DNS (``resolver`` and
``proxy_pass $upstream``, so a backend that does not resolve never stops nginx), HTTP/1.1 upstreams,
one HTTP server, an optional h2c gRPC server, a loopback ``stub_status``; raw paths that could
route differently in Istio and nginx, and requests that looped back, are refused. With
``NginxSettings.upstream_resolve`` (nginx >= 1.27.3), ``$upstream`` names a pooled ``upstream``
block (``server ... resolve``, ``keepalive``) per backend. With ``plan.tls`` the proxy serves TLS
1.2/1.3 (:data:`TLS_PROTOCOLS`, :data:`TLS12_CIPHERS`); TLS backends are always verified
(:func:`render_nginx_config`). Every value is checked against a conservative character set
before it is written. Why: ``docs/explanation/telemetry-proxy.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coordinated_mesh.parse import HttpUrl
from coordinated_mesh.proxy.plan import GrpcRoute, HttpRoute, QueryRoute, TelemetryProxyPlan

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "HOP_HEADER",
    "TLS12_CIPHERS",
    "TLS_PROTOCOLS",
    "UNSAFE_REQUEST_PATH",
    "UPSTREAM_RESOLVE_SINCE",
    "NginxSettings",
    "nginx_command",
    "render_nginx_config",
]

DEFAULT_CONFIG_PATH = "/etc/nginx/nginx.conf"
"""Where the coordinator writes the rendered configuration in the nginx container."""
UPSTREAM_RESOLVE_SINCE = (1, 27, 3)
"""The first nginx (open source) with ``server host:port resolve`` in an ``upstream`` block."""

# What may appear in a rendered value: no whitespace, quotes, ';', '{', '}', '$', '#', '\\'.
_SAFE_VALUE_RE = re.compile(r"[A-Za-z0-9._~:/\[\]-]+")
_SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9._/-]*")
_SIZE_RE = re.compile(r"[0-9]{1,6}[km]?")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_QUERY_PREFIX_RE = re.compile(r"(?:/[A-Za-z0-9_-]+)+")
_SHARE_RE = re.compile(r"[0-9]{1,3}\.[0-9]{2}%|\*")

HOP_HEADER = "X-Telemetry-Proxy-Hop"
"""The header nginx adds to every request it proxies, valued with the plan's ``loop_token``: a
request that comes back carrying it is refused (508), and the ``stub_status`` server refuses any
request carrying it, so no route can loop to this proxy or reach its status page."""
_HOP_VARIABLE = "$http_" + HOP_HEADER.lower().replace("-", "_")
_TOKEN_RE = re.compile(r"[0-9a-f]{16,64}")
UNSAFE_REQUEST_PATH = r"^[^?]*(%2f|%5c|%2e|%00|\\\\|/\.\.?(/|\?|$))"
"""Requests whose raw path (``$request_uri``, before ``?``) matches this, case-insensitively, are
refused (400) before any location is chosen: an encoded slash, backslash or dot, a NUL, a raw
backslash or a dot segment (written for nginx's quoted-string unescaping). nginx decodes ``%2F``
and resolves ``..`` before matching a location, while Istio's default path normalization (BASE)
does not decode ``%2F``/``%5C`` (istio.io/latest/docs/reference/config/security/normalization):
without this, a client the mesh allows only ``/query/*`` reaches any route, as
``/query/..%2Fproxy%2F...``."""

QUERY_BACKEND_VARIABLE = "$worker_query_backend"
"""The variable ``split_clients`` sets to the worker (``host:port``) serving a query request."""
QUERY_HOST_VARIABLE = "$worker_query_host"
"""With pooled upstreams, the ``Host`` header for the worker serving a query request."""
HOST_VARIABLE = "$upstream_host"
"""With pooled upstreams, each location's backend ``host:port``: the ``Host`` it sends."""
TLS_PROTOCOLS = "TLSv1.2 TLSv1.3"
"""The TLS versions the proxy serves and speaks to its backends: never TLS 1.0 or 1.1."""
TLS12_CIPHERS = ":".join(
    f"ECDHE-{key}-{cipher}"
    for cipher in ("AES128-GCM-SHA256", "AES256-GCM-SHA384", "CHACHA20-POLY1305")
    for key in ("ECDSA", "RSA")
)
"""The TLS 1.2 cipher suites served: forward secret (ECDHE) and AEAD (AES-GCM, ChaCha20-Poly1305)
only. TLS 1.3 suites are all AEAD and not set by ``ssl_ciphers``."""
UPSTREAM_VERIFY_DEPTH = 4
"""How many certificates above a backend's leaf nginx may follow (intermediate CAs)."""
QUERY_READ_TIMEOUT_SECONDS = 150
"""How long a query may take: beyond Prometheus' default ``--query.timeout`` (2m), so the
worker's own timeout error reaches the client rather than a 504 from the proxy."""


def _safe(value: object) -> str:
    """Return ``value`` as text after checking it cannot break out of an nginx directive."""
    text = str(value)
    if not _SAFE_VALUE_RE.fullmatch(text):
        raise ValueError(f"refusing to render unsafe value {text!r} into nginx.conf")
    return text


@dataclass(frozen=True)
class NginxSettings:
    """Runtime settings of the nginx process (the charm's choices, not remote data).

    Attributes:
        temp_dir: an existing, writable directory; nginx creates its ``nginx-*`` temp directories
            and pid file in it.
        worker_processes: nginx worker processes (a number: ``auto`` counts the node's CPUs, not
            the container's limit).
        worker_connections: connections per worker.
        listen_address: IPv4 address the proxy servers bind to; ``None`` binds all addresses.
            The status server always binds ``127.0.0.1``.
        user: the ``user`` directive (only meaningful when the master runs as root); ``None``
            keeps nginx's default.
        access_log: access log path, or ``None`` to turn access logging off.
        access_log_buffered: write the access log in batches (``buffer=4k flush=1s``): at most
            4 KiB per write, at most a second late, instead of one write per request. Under
            Pebble stdout is a pipe, where a write of up to ``PIPE_BUF`` (4096 bytes) arrives
            whole, so batches of several worker processes never split a line.
        client_max_body_size: the largest accepted request body (log pushes, remote write).
        resolver_valid_seconds: how long resolved upstream addresses are cached.
        upstream_resolve: the nginx that runs this configuration has ``server host:port
            resolve`` in an ``upstream`` with a ``zone`` (nginx >= 1.27.3, see
            :data:`UPSTREAM_RESOLVE_SINCE`). Then every backend gets a pooled ``upstream`` block
            (``keepalive``) that nginx still re-resolves at run time; otherwise (nginx 1.22)
            requests use ``proxy_pass $upstream`` and open a new connection each.
        upstream_keepalive: idle connections each worker process keeps per backend (only with
            ``upstream_resolve``).
        upstream_keepalive_seconds: how long an idle pooled connection is kept; shorter than the
            backends' own idle timeouts, so nginx never reuses one the backend is closing.
        tls_dir: the directory of the TLS files in the nginx container: the coordinator writes
            them exactly at :attr:`server_cert_path`, :attr:`server_key_path` and
            :attr:`upstream_ca_path`, where the rendered configuration reads them.

    Raises:
        ValueError: a setting is not safe to render.
    """

    temp_dir: str = "/tmp"
    worker_processes: int = 2
    worker_connections: int = 4096
    listen_address: str | None = None
    user: str | None = None
    access_log: str | None = "/dev/stdout"
    access_log_buffered: bool = True
    client_max_body_size: str = "64m"
    resolver_valid_seconds: int = 10
    upstream_resolve: bool = False
    upstream_keepalive: int = 16
    upstream_keepalive_seconds: int = 30
    tls_dir: str = "/etc/nginx/tls"

    def __post_init__(self) -> None:
        for name, path in (("temp_dir", self.temp_dir), ("access_log", self.access_log)):
            if path is not None and not _SAFE_PATH_RE.fullmatch(path):
                raise ValueError(
                    f"{name} must be an absolute path of [A-Za-z0-9._/-], not {path!r}"
                )
        if not 1 <= self.worker_processes <= 256 or not 1 <= self.worker_connections <= 1 << 20:
            raise ValueError("worker_processes or worker_connections out of range")
        if self.listen_address is not None and not _IPV4_RE.fullmatch(self.listen_address):
            raise ValueError(f"listen_address must be an IPv4 address, not {self.listen_address!r}")
        if self.user is not None and not _USER_RE.fullmatch(self.user):
            raise ValueError(f"user {self.user!r} is not a user name")
        if not _SIZE_RE.fullmatch(self.client_max_body_size):
            raise ValueError(f"client_max_body_size {self.client_max_body_size!r} is not a size")
        if not 1 <= self.resolver_valid_seconds <= 3600:
            raise ValueError("resolver_valid_seconds must be in 1..3600")
        if not 1 <= self.upstream_keepalive <= 1024:
            raise ValueError("upstream_keepalive must be in 1..1024")
        if not 1 <= self.upstream_keepalive_seconds <= 3600:
            raise ValueError("upstream_keepalive_seconds must be in 1..3600")
        if not _SAFE_PATH_RE.fullmatch(self.tls_dir):
            raise ValueError(
                f"tls_dir must be an absolute path of [A-Za-z0-9._/-], not {self.tls_dir!r}"
            )

    @property
    def pid_path(self) -> str:
        """The pid file, in :attr:`temp_dir`."""
        return f"{self.temp_dir.rstrip('/')}/nginx.pid"

    @property
    def server_cert_path(self) -> str:
        """The certificate the proxy serves: the leaf, then its chain (PEM), in :attr:`tls_dir`."""
        return f"{self.tls_dir.rstrip('/')}/server.crt"

    @property
    def server_key_path(self) -> str:
        """The private key of :attr:`server_cert_path` (PEM; the coordinator writes it 0600)."""
        return f"{self.tls_dir.rstrip('/')}/server.key"

    @property
    def upstream_ca_path(self) -> str:
        """The CAs TLS backends are verified against (PEM bundle), in :attr:`tls_dir`."""
        return f"{self.tls_dir.rstrip('/')}/upstream-ca.crt"


def nginx_command(config_path: str = DEFAULT_CONFIG_PATH) -> str:
    """The Pebble service command that runs nginx in the foreground with this configuration."""
    return f"nginx -c {_safe(config_path)} -g 'daemon off;'"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str = "") -> None:
        self.lines.append(("    " * self.depth + text) if text else "")

    def open(self, text: str) -> None:
        self.line(text + " {")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self.line("}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _listen(settings: NginxSettings, port: int, *extra: str) -> str:
    address = f"{settings.listen_address}:" if settings.listen_address else ""
    return " ".join([f"listen {address}{_safe(port)}", *extra]) + ";"


def _http_route(
    out: _Writer, route: HttpRoute, pools: _Pools | None = None, trusted: str | None = None
) -> None:
    upstream = route.upstream
    location = _safe(route.location)
    origin = upstream.origin if pools is None else pools.http_origin(upstream)
    out.open(f"location = {location}" if route.exact else f"location {location}")
    if pools is not None:
        # Before any `rewrite ... break`, which ends the rewrite phase (and skips later `set`s).
        pools.set_host(out, f"{_safe(upstream.host)}:{_safe(upstream.port)}")
    if route.exact:
        # With a variable, proxy_pass sends the request's own URI when the URL has no path: a
        # URL without a path means "/", so say so rather than leak our /proxy/... path upstream.
        out.line(f"set $upstream {_safe(origin + (upstream.path or '/'))};")
        out.line("proxy_pass $upstream$is_args$args;")
    else:
        # `set` must come before `rewrite ... break`, which ends the rewrite phase.
        out.line(f"set $upstream {_safe(origin)};")
        base = upstream.path.rstrip("/")
        out.line(f'rewrite "(?s)^{location}(.*)$" {_safe(base + "/")}$1 break;')
        out.line("proxy_pass $upstream;")
    if pools is not None:
        pools.http_headers(out, upstream)
    if trusted is not None and upstream.scheme == "https":
        _verify_backend(out, "proxy", trusted)
    out.close()


def _query_split(out: _Writer, route: QueryRoute, pools: _Pools | None = None) -> None:
    """The http-level ``split_clients`` choosing the worker of each query request."""
    out.open(f'split_clients "${{request_id}}" {QUERY_BACKEND_VARIABLE}')
    for share, backend in route.split():
        if not _SHARE_RE.fullmatch(share):
            raise ValueError(f"refusing to render unsafe share {share!r} into nginx.conf")
        target = f"{_safe(backend.host)}:{_safe(backend.port)}"
        if pools is not None:
            target = pools.http_target(backend)
        out.line(f'{share} "{target}";')
    out.close()
    if pools is not None:
        pools.query_host_map(out, route)


def _query_location(out: _Writer, route: QueryRoute, pools: _Pools | None = None) -> None:
    """The query API location: strip the prefix, then pass to the chosen worker."""
    prefix = route.strip_prefix
    if not _QUERY_PREFIX_RE.fullmatch(prefix) or route.location != prefix + "/":
        raise ValueError(f"refusing to render unsafe query prefix {prefix!r} into nginx.conf")
    out.open(f"location {route.location}")
    if pools is not None:
        pools.set_host(out, QUERY_HOST_VARIABLE)  # before `rewrite ... break`
    # With a variable in proxy_pass, nginx passes the (rewritten) URI as is: strip it here.
    out.line(f'rewrite "(?s)^{prefix}(/.*)$" $1 break;')
    out.line(f"proxy_read_timeout {QUERY_READ_TIMEOUT_SECONDS}s;")
    out.line(f"proxy_pass http://{QUERY_BACKEND_VARIABLE};")
    out.close()


def _grpc_route(
    out: _Writer, route: GrpcRoute, pools: _Pools | None = None, trusted: str | None = None
) -> None:
    out.open(f"location {_safe(route.location)}")
    if pools is not None:
        pools.set_host(out, _safe(route.upstream))
    # A receiver serving TLS gets grpcs:// (SNI: grpc_ssl_server_name, in the http block).
    scheme = "grpcs" if route.tls else "grpc"
    target = _safe(route.upstream) if pools is None else pools.grpc_target(route)
    out.line(f"set $grpc_upstream {scheme}://{target};")
    out.line("grpc_pass $grpc_upstream;")
    if pools is not None:
        pools.grpc_headers(out, route)
    if trusted is not None and route.tls:
        _verify_backend(out, "grpc", trusted)
    out.close()


def _guard_proxy_server(out: _Writer, plan: TelemetryProxyPlan) -> None:
    """Server-level refusals, run before location matching: unsafe raw paths and our own hops."""
    out.open(f'if ($request_uri ~* "{UNSAFE_REQUEST_PATH}")')
    out.line("return 400;")
    out.close()
    out.open(f'if ({_HOP_VARIABLE} = "{_token(plan)}")')
    out.line("return 508;")
    out.close()


def _token(plan: TelemetryProxyPlan) -> str:
    if not _TOKEN_RE.fullmatch(plan.loop_token):
        raise ValueError(f"refusing to render unsafe loop token {plan.loop_token!r}")
    return plan.loop_token


# --- pooled upstreams (NginxSettings.upstream_resolve: nginx >= 1.27.3) ----------------------


@dataclass(frozen=True, order=True)
class _Backend:
    """One pooled backend: what connections to it speak, and where it is."""

    kind: str  # http, https, grpc or grpcs: connections of different kinds never share a pool
    host: str
    port: int

    @property
    def name(self) -> str:
        # '_' never occurs in a DNS name or an IPv4 address: no upstream name is also a host.
        return _safe(f"{self.kind}_{self.host}_{self.port}")

    @property
    def address(self) -> str:
        return f"{_safe(self.host)}:{_safe(self.port)}"


class _Pools:
    """The ``upstream`` blocks of a plan, one per distinct backend, and how routes use them.

    A route's ``$upstream`` names its block instead of the host; ``proxy_pass`` with a variable
    looks the name up among the ``upstream`` blocks first. The block's ``server ... resolve``
    keeps request-time DNS (nginx re-resolves it after ``resolver ... valid``, and a name that
    does not resolve leaves the block empty: 502, never a failed start or reload). Host names
    without a resolver are left as they are (the plan reports them; their requests fail).
    """

    def __init__(self, plan: TelemetryProxyPlan) -> None:
        self._resolve = bool(plan.resolvers)
        found = {
            _Backend(route.upstream.scheme, route.upstream.host, route.upstream.port)
            for route in plan.http_routes
        }
        found |= {
            _Backend("grpcs" if route.tls else "grpc", route.upstream.host, route.upstream.port)
            for route in plan.grpc_routes
        }
        if plan.query_route is not None:
            found |= {_Backend("http", b.host, b.port) for b in plan.query_route.backends}
        if not plan.upstream_trust:  # refused TLS backends (502) need no pool
            found = {b for b in found if b.kind in ("http", "grpc")}
        self.backends = sorted(b for b in found if self._pooled(b.host))

    def _pooled(self, host: str) -> bool:
        return self._resolve or _IPV4_RE.fullmatch(host) is not None

    def blocks(self, out: _Writer, settings: NginxSettings) -> None:
        for backend in self.backends:
            out.line()
            out.open(f"upstream {backend.name}")
            out.line(f"zone {backend.name} 64k;")
            if _IPV4_RE.fullmatch(backend.host):
                out.line(f"server {backend.address};")
            else:
                out.line(f"server {backend.address} resolve;")
            out.line(f"keepalive {settings.upstream_keepalive};")
            out.line(f"keepalive_timeout {settings.upstream_keepalive_seconds}s;")
            out.close()

    def http_target(self, url: HttpUrl) -> str:
        """The block's name, or ``host:port`` when the URL is not pooled."""
        if not self._pooled(url.host):
            return f"{_safe(url.host)}:{_safe(url.port)}"
        return _Backend(url.scheme, url.host, url.port).name

    def http_origin(self, url: HttpUrl) -> str:
        """``scheme://<block name>``, or the URL's own origin when it is not pooled."""
        return f"{url.scheme}://{self.http_target(url)}"

    def http_headers(self, out: _Writer, url: HttpUrl) -> None:
        """What the block name would otherwise change: the Host header and the TLS SNI name.

        ``Host`` comes from :data:`HOST_VARIABLE` (:meth:`set_host`, used by the http-level
        ``proxy_set_header``): a location's own ``proxy_set_header`` would replace every
        inherited one.
        """
        if url.scheme == "https" and self._pooled(url.host):
            out.line(f"proxy_ssl_name {_safe(url.host)};")

    def grpc_target(self, route: GrpcRoute) -> str:
        upstream = route.upstream
        if not self._pooled(upstream.host):
            return _safe(upstream)
        return _Backend("grpcs" if route.tls else "grpc", upstream.host, upstream.port).name

    def grpc_headers(self, out: _Writer, route: GrpcRoute) -> None:
        """As for HTTP: the authority (``Host``) and SNI name the receiver, not the block."""
        if route.tls and self._pooled(route.upstream.host):
            out.line(f"grpc_ssl_name {_safe(route.upstream.host)};")

    @staticmethod
    def set_host(out: _Writer, value: str) -> None:
        """Set the location's :data:`HOST_VARIABLE` (``host:port``, or the query map's)."""
        out.line(f"set {HOST_VARIABLE} {value};")

    @staticmethod
    def http_settings(out: _Writer) -> None:
        """At http level, so no location-level ``*_set_header`` replaces the inherited ones."""
        out.line(f"proxy_set_header Host {HOST_VARIABLE};")
        out.line(f"grpc_set_header Host {HOST_VARIABLE};")

    def query_host_map(self, out: _Writer, route: QueryRoute) -> None:
        """``$worker_query_host``: the Host header of the worker a query request goes to."""
        # Keys are block names (a DNS name of up to 253 characters and more): beyond the default
        # bucket (64 bytes on x86_64), which makes nginx refuse to start.
        out.line("map_hash_bucket_size 512;")
        out.open(f"map {QUERY_BACKEND_VARIABLE} {QUERY_HOST_VARIABLE}")
        out.line("default $proxy_host;")
        for backend in route.backends:
            if self._pooled(backend.host):
                name = _Backend("http", backend.host, backend.port).name
                out.line(f'{name} "{_safe(backend.host)}:{_safe(backend.port)}";')
        out.close()


def _main_context(out: _Writer, settings: NginxSettings) -> None:
    temp = settings.temp_dir.rstrip("/")
    out.line("# Rendered by coordinated_mesh.proxy.nginx; the coordinator charm rewrites it.")
    if settings.user is not None:
        out.line(f"user {settings.user};")
    out.line(f"worker_processes {settings.worker_processes};")
    out.line(f"pid {_safe(settings.pid_path)};")
    out.line("error_log stderr warn;")
    # The guards and rewrites run a regex per request: compiled to machine code (where PCRE2
    # has a JIT; otherwise nginx warns and interprets them, as without this line).
    out.line("pcre_jit on;")
    out.line()
    out.open("events")
    out.line(f"worker_connections {settings.worker_connections};")
    out.close()
    out.line()
    out.open("http")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        out.line(f"{kind}_temp_path {_safe(temp)}/nginx-{kind.replace('_', '-')};")
    out.line(
        'log_format proxy \'$remote_addr [$time_local] "$request" $status $body_bytes_sent '
        '$request_time "$upstream_addr" $upstream_status\';'
    )
    if settings.access_log is None:
        out.line("access_log off;")
    else:
        buffer = " buffer=4k flush=1s" if settings.access_log_buffered else ""
        out.line(f"access_log {_safe(settings.access_log)} proxy{buffer};")
    out.line("server_tokens off;")
    out.line(f"client_max_body_size {settings.client_max_body_size};")
    out.line("client_body_buffer_size 1m;")


def _http_settings(out: _Writer, plan: TelemetryProxyPlan, settings: NginxSettings) -> None:
    if plan.resolvers:
        resolvers = " ".join(_safe(r) for r in plan.resolvers)
        out.line(f"resolver {resolvers} valid={settings.resolver_valid_seconds}s;")
        out.line("resolver_timeout 5s;")
    out.line("proxy_http_version 1.1;")
    out.line('proxy_set_header Connection "";')
    out.line(f"proxy_set_header {HOP_HEADER} {_token(plan)};")
    out.line(f"grpc_set_header {HOP_HEADER} {_token(plan)};")
    out.line("proxy_connect_timeout 10s;")
    out.line("proxy_send_timeout 60s;")
    out.line("proxy_read_timeout 60s;")
    out.line("proxy_ssl_server_name on;")
    out.line("grpc_connect_timeout 10s;")
    out.line("grpc_ssl_server_name on;")


def render_nginx_config(plan: TelemetryProxyPlan, settings: NginxSettings | None = None) -> str:
    """Render the complete nginx configuration for a telemetry proxy plan.

    TLS backends (``https`` routes, ``grpcs`` receivers) are always verified: certificate and
    name (SNI and the name checked are the backend's host), TLS 1.2 or 1.3. With
    ``plan.upstream_trust`` nginx trusts the CAs in ``settings.upstream_ca_path``; without it
    there is nothing to verify against (and nginx refuses ``*_ssl_verify`` with no or an empty
    trusted file), so every TLS backend's location answers 502 and nothing reaches a backend
    unverified. With ``plan.tls`` the proxy server and the gRPC listener serve TLS with
    ``settings.server_cert_path`` and ``server_key_path`` (see ``WorkerTelemetryProxyConfig``
    for the ports); the files must exist, else nginx refuses the configuration.

    Args:
        plan: the routes and ports, from
            :func:`~coordinated_mesh.proxy.plan.build_telemetry_proxy`.
        settings: process settings; the defaults suit an nginx image under Pebble (and
            nginx 1.22: pass ``upstream_resolve=True`` for nginx >= 1.27.3).

    Returns:
        The configuration text; equal plans and settings give byte-identical text.

    Raises:
        ValueError: a value is unsafe to render (a bug: plans only hold validated values).
    """
    settings = settings or NginxSettings()
    pools = _Pools(plan) if settings.upstream_resolve else None
    out = _Writer()
    _main_context(out, settings)
    _http_settings(out, plan, settings)
    _upstream_tls(out, plan, settings)
    if pools is not None:
        # nginx refuses an unknown variable: only when some location sets it.
        if _sets_host(plan):
            pools.http_settings(out)
        pools.blocks(out, settings)
    if plan.query_route is not None:
        out.line()
        _query_split(out, plan.query_route, pools)
    _proxy_server(out, plan, settings, pools)
    if plan.config.grpc_port is not None:
        _grpc_server(out, plan, settings, pools, plan.config.grpc_port)
    _status_server(out, plan)
    out.close()  # http
    return out.text()


def _not_found(out: _Writer) -> None:
    out.open("location /")
    out.line("return 404;")
    out.close()


def _proxy_server(
    out: _Writer, plan: TelemetryProxyPlan, settings: NginxSettings, pools: _Pools | None
) -> None:
    """The HTTP server: every ``/proxy/...`` route and the query route."""
    out.line()
    out.open("server")
    _proxy_listen(out, plan, settings)
    out.line("server_name _;")
    _guard_proxy_server(out, plan)
    for route in sorted(plan.http_routes):
        if _refused(plan, route.upstream.scheme == "https"):
            _refused_route(out, route.location, exact=route.exact)
            continue
        _http_route(out, route, pools, _trusted(plan, settings))
    if plan.query_route is not None:
        _query_location(out, plan.query_route, pools)
    _not_found(out)
    out.close()


def _grpc_server(
    out: _Writer,
    plan: TelemetryProxyPlan,
    settings: NginxSettings,
    pools: _Pools | None,
    port: int,
) -> None:
    """The cleartext HTTP/2 server of the gRPC routes."""
    out.line()
    out.open("server")
    ssl = ("ssl",) if plan.tls else ()
    if settings.upstream_resolve:
        # nginx >= 1.25.1 deprecates `listen ... http2` for `http2 on`.
        out.line(_listen(settings, port, *ssl))
        out.line("http2 on;")
    else:
        out.line(_listen(settings, port, *ssl, "http2"))
    if plan.tls:
        _server_tls(out, settings)
    out.line("server_name _;")
    _guard_proxy_server(out, plan)
    for route in sorted(plan.grpc_routes):
        if _refused(plan, route.tls):
            _refused_route(out, route.location, exact=False)
            continue
        _grpc_route(out, route, pools, _trusted(plan, settings))
    _not_found(out)
    out.close()


def _status_server(out: _Writer, plan: TelemetryProxyPlan) -> None:
    """The loopback ``stub_status`` server; a request that came through the proxy is refused."""
    out.line()
    out.open("server")
    out.line(f"listen 127.0.0.1:{_safe(plan.status_port)};")
    out.line("access_log off;")
    out.open(f'if ({_HOP_VARIABLE} != "")')
    out.line("return 403;")
    out.close()
    out.open("location = /status")
    out.line("stub_status;")
    out.close()
    _not_found(out)
    out.close()


# --- TLS ------------------------------------------------------------------------------------


def _refused(plan: TelemetryProxyPlan, tls_backend: bool) -> bool:
    """A TLS backend with nothing to verify it against is refused, never reached unverified."""
    return tls_backend and not plan.upstream_trust


def _sets_host(plan: TelemetryProxyPlan) -> bool:
    """Whether some location proxies (and so sets the pooled ``$upstream_host``)."""
    return (
        plan.query_route is not None
        or any(not _refused(plan, route.upstream.scheme == "https") for route in plan.http_routes)
        or any(not _refused(plan, route.tls) for route in plan.grpc_routes)
    )


def _refused_route(out: _Writer, location: str, *, exact: bool) -> None:
    out.open(f"location = {_safe(location)}" if exact else f"location {_safe(location)}")
    out.line("return 502;")
    out.close()


def _upstream_tls(out: _Writer, plan: TelemetryProxyPlan, settings: NginxSettings) -> None:
    """The TLS versions nginx speaks to every backend (verification is per TLS location)."""
    for module in ("proxy", "grpc"):
        out.line(f"{module}_ssl_protocols {TLS_PROTOCOLS};")


def _trusted(plan: TelemetryProxyPlan, settings: NginxSettings) -> str | None:
    return settings.upstream_ca_path if plan.upstream_trust else None


def _verify_backend(out: _Writer, module: str, trusted: str) -> None:
    """Verify this location's TLS backend: its chain against ``trusted``, and its name.

    In the location, not at http level: nginx 1.22 loads the trusted file once per location
    that inherits it (every proxying location: ``proxy_pass`` with a variable may be TLS), which
    with a system bundle and thousands of worker locations takes minutes; only TLS backends'
    locations load it here.
    """
    out.line(f"{module}_ssl_verify on;")
    out.line(f"{module}_ssl_verify_depth {UPSTREAM_VERIFY_DEPTH};")
    out.line(f"{module}_ssl_trusted_certificate {_safe(trusted)};")


def _server_tls(out: _Writer, settings: NginxSettings) -> None:
    """A server's TLS: the certificate and key, TLS 1.2/1.3, modern ciphers, no tickets."""
    out.line(f"ssl_certificate {_safe(settings.server_cert_path)};")
    out.line(f"ssl_certificate_key {_safe(settings.server_key_path)};")
    out.line(f"ssl_protocols {TLS_PROTOCOLS};")
    out.line(f"ssl_ciphers {_safe(TLS12_CIPHERS)};")
    out.line("ssl_prefer_server_ciphers off;")
    # One cache for every TLS server; it lives across reloads (shared memory).
    out.line("ssl_session_cache shared:proxy_tls:10m;")
    out.line("ssl_session_timeout 1h;")
    out.line("ssl_session_tickets off;")


def _proxy_listen(out: _Writer, plan: TelemetryProxyPlan, settings: NginxSettings) -> None:
    """The proxy server's ports: see ``WorkerTelemetryProxyConfig`` for the two layouts."""
    config = plan.config
    if not plan.tls:
        out.line(_listen(settings, config.http_port))
        return
    if config.http_port != config.https_port:
        out.line(_listen(settings, config.http_port))  # plain HTTP kept for clients not switched
    out.line(_listen(settings, config.https_port, "ssl"))
    _server_tls(out, settings)
