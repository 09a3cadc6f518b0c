#!/usr/bin/env python3
"""A worker of a coordinated-worker cluster whose workload is Prometheus 2.

Everything generic (joining the cluster, the pod labels, Pebble log forwarding to the proxied Loki
URLs, statuses) is done by :class:`coordinated_mesh.Worker` on every hook; this charm has no
mesh-specific code. What is here is specific to Prometheus:

* :class:`MeshWorkerCharm`: a ``Worker`` and :meth:`~MeshWorkerCharm.configure_prometheus`, which
  pushes ``prometheus.yml`` and keeps the Pebble service, reloading only when the text changes;
* :func:`render_prometheus_config` (pure): the configuration from the coordinator's base text and
  the proxied URLs: scrape itself, ``remote_write`` to each URL, ``tracing`` to the receiver,
  trusting the proxy's CA file (``tls_config.ca_file``) while the proxy serves TLS;
* :func:`tracing_config` (pure): the ``tracing`` block for the offered workload receivers;
* :func:`prometheus_layer` (pure): the Pebble layer of the ``prometheus`` service.

Configuration changes are applied with ``SIGHUP`` (Prometheus re-reads its file and keeps running
with the old one if the new one is invalid), so ``--web.enable-lifecycle`` is not needed: it would
expose ``/-/quit`` to every peer that may reach port 9090. Remote write re-reads a changed CA file
by itself; the tracer reads it when the configuration is applied, so the text names the CA's
digest and a new CA reloads (Prometheus 2.42 ``tracing/tracing.go``, prometheus/common 0.39
``config/http_config.go``; see ``docs/explanation/worker.md#the-reference-worker-prometheus``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import ops
import yaml
from coordinated_mesh import Worker, WorkerContext, parse_http_url, push_and_reload

logger = logging.getLogger(__name__)

CONTAINER = "prometheus"
SERVICE = "prometheus"
PORT = 9090
"""Where Prometheus serves its API and its own ``/metrics``."""
CONFIG_PATH = "/etc/prometheus/prometheus.yml"
STORAGE_PATH = "/prometheus"
SELF_SCRAPE_JOB = "prometheus"
TRACING_SAMPLING_FRACTION = 1.0
"""Prometheus traces only its own queries and rule evaluations: keep them all."""
OWNED_KEYS = ("remote_write", "scrape_configs", "tracing")
"""Top-level keys this charm decides; the coordinator's base configuration supplies the rest."""


class MeshWorkerCharm(ops.CharmBase):
    """The mesh worker: a :class:`Worker` and its Prometheus workload."""

    labels_backend_factory: ClassVar[Callable[..., Any] | None] = None
    """The Kubernetes labels seam: ``None`` is the cluster the charm runs in; tests set a fake on
    a subclass."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.worker = Worker(
            self,
            container_name=CONTAINER,
            metrics_port=PORT,
            role=lambda: str(self.config.get("role", "all")),
            configure_workload=self.configure_prometheus,
            labels_backend_factory=self.labels_backend_factory,
        )

    def configure_prometheus(self, context: WorkerContext) -> list[str]:
        """Push ``prometheus.yml`` and keep the service running; reload only on change.

        Returns:
            Notes for the status (what could not be configured, and why).
        """
        telemetry = context.telemetry
        tracing, notes = tracing_config(
            telemetry.workload_tracing_receivers, ca_file=context.ca_path
        )
        text, base_notes = render_prometheus_config(
            base=context.worker_config,
            remote_write_urls=telemetry.remote_write_urls,
            tracing=tracing,
            external_labels=context.juju_labels,
            ca_file=context.ca_path,
            ca_cert=telemetry.ca_cert if context.ca_path else None,
        )
        container = context.container

        def reload() -> None:
            container.send_signal("SIGHUP", SERVICE)  # Prometheus re-reads prometheus.yml
            logger.info("sent SIGHUP to prometheus to reload its configuration")

        push_and_reload(
            container,
            path=CONFIG_PATH,
            text=text,
            layer_label=SERVICE,
            layer=prometheus_layer(),
            reload=reload,
        )
        return notes + base_notes


def prometheus_layer() -> ops.pebble.LayerDict:
    """The Pebble layer of the ``prometheus`` service."""
    command = (
        "/bin/prometheus",
        f"--config.file={CONFIG_PATH}",
        f"--storage.tsdb.path={STORAGE_PATH}",
        f"--web.listen-address=:{PORT}",
    )
    return {
        "summary": "prometheus",
        "services": {
            SERVICE: {
                "override": "replace",
                "summary": "Prometheus, configured by the mesh worker charm",
                "command": " ".join(command),
                "startup": "enabled",
            }
        },
    }


def tracing_config(
    receivers: Mapping[str, str], *, ca_file: str | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """Prometheus's ``tracing`` block for the offered workload tracing receivers (pure).

    Prometheus 2 sends OTLP to ``host:port`` only (``client_type`` ``grpc`` or ``http``); over
    HTTP it always posts to ``/v1/traces``, so an ``otlp_http`` URL with a path (as a proxy hands
    out: ``http://coordinator:8080/proxy/workload-tracing/otlp_http``) cannot be used. gRPC is
    preferred; plain OTLP/HTTP is used when its URL has no path.

    Args:
        receivers: the workload tracing receivers, by protocol.
        ca_file: the proxy's CA file while the proxy serves TLS: the gRPC receiver then speaks
            TLS (``insecure: false``) and both clients verify against it (``tls_config``);
            without it gRPC is plain h2c (``insecure: true``).

    Returns:
        The block (``None``: no tracing) and notes saying why traces are not sent, if so.
    """
    grpc = receivers.get("otlp_grpc")
    if grpc:
        return _tracing("grpc", grpc, insecure=ca_file is None, ca_file=ca_file), []
    raw = receivers.get("otlp_http")
    if not raw:
        return None, []
    try:
        url = parse_http_url(raw)
    except ValueError:
        return None, ["no workload traces: invalid otlp_http receiver"]
    if url.path not in ("", "/"):
        return None, ["no workload traces: Prometheus 2 needs otlp_grpc (OTLP/HTTP has a path)"]
    secure = url.scheme == "https"
    return _tracing(
        "http",
        f"{url.host}:{url.port}",
        insecure=not secure,
        ca_file=ca_file if secure else None,
    ), []


def _tracing(
    client_type: str, endpoint: str, *, insecure: bool, ca_file: str | None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "client_type": client_type,
        "endpoint": endpoint,
        "insecure": insecure,
        "sampling_fraction": TRACING_SAMPLING_FRACTION,
    }
    if ca_file is not None:
        block["tls_config"] = {"ca_file": ca_file}
    return block


MAX_BASE_BYTES = 64 * 1024
"""The largest ``worker_config`` accepted (a Prometheus ``global`` block is a few hundred bytes)."""
MAX_BASE_DEPTH = 32
"""The deepest nesting of mappings and sequences accepted in ``worker_config``."""
MAX_BASE_EVENTS = 20_000
"""The most YAML events (scalars, collection starts and ends) accepted in ``worker_config``."""
MAX_BASE_INT_BITS = 64
"""Integers beyond 64 bits are refused: a YAML 1.1 base-60 literal (``1:2:3...``) of a few KB
is an integer of thousands of digits, which ``yaml.safe_dump`` cannot write back."""


def _check_base_events(base: str) -> None:
    """Bound the cost of ``base`` before it is composed: size, depth, events, no aliases.

    PyYAML's event stream is lazy, so a too deep or too long document is refused after at most
    :data:`MAX_BASE_DEPTH` levels or :data:`MAX_BASE_EVENTS` events, never fully parsed; and a
    document that passes can be composed and dumped well within the recursion limit.

    Raises:
        ValueError: the document is refused; the message says why.
    """
    size = len(base.encode("utf-8", errors="surrogatepass"))
    if size > MAX_BASE_BYTES:
        raise ValueError(f"{size} bytes, more than {MAX_BASE_BYTES}")
    depth = 0
    for count, event in enumerate(yaml.parse(base, yaml.SafeLoader), start=1):
        if count > MAX_BASE_EVENTS:
            raise ValueError(f"more than {MAX_BASE_EVENTS} YAML nodes")
        if isinstance(event, yaml.AliasEvent):
            # Aliases let a small text expand into a huge document: refuse them.
            raise ValueError("YAML aliases are not allowed")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_BASE_DEPTH:
                raise ValueError(f"nested more than {MAX_BASE_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_ints(value: Any) -> None:
    """Refuse integers :func:`yaml.safe_dump` cannot write (depth is already bounded)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and value.bit_length() > MAX_BASE_INT_BITS:
        raise ValueError(f"an integer of more than {MAX_BASE_INT_BITS} bits")
    if isinstance(value, dict):
        for key, item in value.items():  # pyright: ignore[reportUnknownVariableType]
            _check_ints(key)
            _check_ints(item)
    elif isinstance(value, list):
        for item in value:  # pyright: ignore[reportUnknownVariableType]
            _check_ints(item)


def _load_base(base: str) -> Any:
    """The YAML document in ``base``, its cost bounded before it is composed.

    Raises:
        ValueError: it cannot be used; the message says why.
    """
    try:
        _check_base_events(base)
        loaded = yaml.safe_load(base)
    except yaml.YAMLError as e:
        raise ValueError(f"invalid YAML ({type(e).__name__})") from None
    except RecursionError:  # not expected after the depth bound; never out of a hook
        raise ValueError("nested too deeply") from None
    _check_ints(loaded)
    return loaded


def _parse_base(base: str | None) -> tuple[dict[str, Any], list[str]]:
    try:
        parsed = _load_base(base) if base else None
    except ValueError as e:
        return {}, [f"worker_config ignored: {e}"]
    if parsed is None:
        return {}, []
    if not isinstance(parsed, dict) or not all(isinstance(k, str) for k in parsed):
        return {}, ["worker_config ignored: not a YAML mapping"]
    return {k: v for k, v in parsed.items() if k not in OWNED_KEYS}, []


def _with_external_labels(
    config: dict[str, Any], labels: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """``config`` with ``labels`` set in ``global.external_labels`` (they win over the base's)."""
    notes: list[str] = []
    base_global = config.get("global")
    if base_global is None:
        base_global = {}
    if not isinstance(base_global, dict):
        notes.append("worker_config global ignored: not a YAML mapping")
        base_global = {}
    merged_global: dict[str, Any] = dict(cast(dict[str, Any], base_global))
    base_labels = merged_global.get("external_labels")
    if base_labels is None:
        base_labels = {}
    if not isinstance(base_labels, dict):
        notes.append("worker_config external_labels ignored: not a YAML mapping")
        base_labels = {}
    merged = {str(k): v for k, v in cast(dict[Any, Any], base_labels).items()}
    merged.update(labels)
    merged_global["external_labels"] = dict(sorted(merged.items()))
    return {**config, "global": merged_global}, notes


def render_prometheus_config(
    *,
    base: str | None,
    remote_write_urls: Sequence[str],
    tracing: Mapping[str, Any] | None,
    external_labels: Mapping[str, str] | None = None,
    ca_file: str | None = None,
    ca_cert: str | None = None,
) -> tuple[str, list[str]]:
    """The ``prometheus.yml`` text (pure, deterministic: keys and URLs sorted).

    Args:
        base: the coordinator's workload configuration (``global`` and the like); its
            ``scrape_configs``, ``remote_write`` and ``tracing`` are replaced by this charm's.
        remote_write_urls: where to remote-write every sample.
        tracing: the ``tracing`` block (see :func:`tracing_config`), or ``None``.
        external_labels: labels every remote-written series carries (this unit's Juju topology,
            :attr:`WorkerContext.juju_labels`), set in ``global.external_labels`` over those of
            ``base``. Without them, every unit's self-scrape is ``{job="prometheus",
            instance="localhost:9090"}`` and the units' series collide at the receiver.
        ca_file: the proxy's CA file: every ``https`` remote-write URL verifies against it
            (``tls_config.ca_file``); ``http`` ones stay plain.
        ca_cert: the CA text in ``ca_file``: its SHA-256 heads the text as a comment, so a new
            CA changes the text and reloads Prometheus (its tracer reads the file on reload).

    Returns:
        The text and notes (why ``base`` was ignored, if it was).
    """
    config, notes = _parse_base(base)
    if external_labels:
        config, label_notes = _with_external_labels(config, external_labels)
        notes += label_notes
    config["scrape_configs"] = [
        {"job_name": SELF_SCRAPE_JOB, "static_configs": [{"targets": [f"localhost:{PORT}"]}]}
    ]
    if remote_write_urls:
        config["remote_write"] = [
            _remote_write(url, ca_file) for url in sorted(set(remote_write_urls))
        ]
    if tracing:
        config["tracing"] = dict(tracing)
    text = yaml.safe_dump(config, sort_keys=True, default_flow_style=False)
    if ca_cert is not None:
        digest = hashlib.sha256(ca_cert.encode("utf-8", "surrogatepass")).hexdigest()
        text = f"# proxy CA sha256:{digest}\n{text}"
    return text, notes


def _remote_write(url: str, ca_file: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": url}
    if ca_file is not None and url.startswith("https://"):
        entry["tls_config"] = {"ca_file": ca_file}
    return entry


if __name__ == "__main__":  # pragma: nocover
    ops.main(MeshWorkerCharm)
