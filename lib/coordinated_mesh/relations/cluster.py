"""The ``cluster`` relation between a coordinator (provider) and its workers (requirers).

Coordinator application databag: :class:`CoordinatorAppData` (labels, workload configuration,
:class:`ProxiedTelemetry`); worker application databag: :class:`WorkerAppData` (role, charm,
metrics endpoint: what the coordinator reads); worker unit databag: :class:`WorkerUnitData`
(topology, address, metrics endpoint: kept for older coordinators, read only from older workers).
Values are JSON in strings; unknown keys are ignored. Every key: ``docs/reference/relations.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pydantic

from coordinated_mesh.parse import (
    APP_NAME_PATTERN,
    HOSTNAME_PATTERN,
    UNIT_NAME_PATTERN,
    Problem,
    parse_grpc_address,
    parse_http_url,
    parse_pem_certificates,
    show,
    validate_labels,
)
from coordinated_mesh.relations.databag import DatabagModel
from coordinated_mesh.relations.tracing import GRPC_TRACING_PROTOCOLS, HTTP_TRACING_PROTOCOLS

__all__ = [
    "DEFAULT_ROLE",
    "MAX_TARGETS",
    "CoordinatorAppData",
    "JujuTopology",
    "MetricsEndpoint",
    "ProxiedTelemetry",
    "RemoteWriteEndpoint",
    "WorkerAppData",
    "WorkerUnitData",
    "juju_topology_labels",
    "parse_proxied_telemetry",
]

DEFAULT_ROLE = "all"
MAX_TARGETS = 64
"""The most Loki URLs, remote-write URLs or tracing receivers a worker takes from the coordinator."""


@dataclass(frozen=True)
class ProxiedTelemetry:
    """The proxied telemetry URLs: what the coordinator hands out and what a worker sends to.

    Every URL points at the coordinator's proxy. Empty means "none of this kind": the worker stops
    sending it. The coordinator builds one (``plan.proxied_telemetry``) and writes it with
    :meth:`CoordinatorAppData.compose`; the worker reads it back with
    :func:`parse_proxied_telemetry`.

    Attributes:
        loki_urls: Loki push URLs, keyed by the Loki unit they reach (``{"loki/0": "http://..."}``).
        remote_write_urls: Prometheus remote-write URLs, sorted.
        charm_tracing_receivers: receivers of the charm's own traces, by protocol.
        workload_tracing_receivers: receivers of the workload's traces, by protocol (HTTP
            protocols: a URL; gRPC ones: ``host:port``).
        ca_cert: the PEM CA bundle that signed the proxy's certificate when the proxy serves
            TLS, else ``None``. With it, every URL here is ``https`` and every gRPC receiver
            speaks TLS: the worker trusts this CA for all of them.
    """

    loki_urls: Mapping[str, str] = field(default_factory=dict[str, str])
    remote_write_urls: tuple[str, ...] = ()
    charm_tracing_receivers: Mapping[str, str] = field(default_factory=dict[str, str])
    workload_tracing_receivers: Mapping[str, str] = field(default_factory=dict[str, str])
    ca_cert: str | None = None


class RemoteWriteEndpoint(pydantic.BaseModel):
    """A Prometheus remote-write URL."""

    model_config = pydantic.ConfigDict(frozen=True)

    url: str


class CoordinatorAppData(DatabagModel):
    """What the coordinator leader publishes to every worker application.

    A key that is absent means "the coordinator has not decided this yet"; a worker keeps what it
    had for absent ``worker_labels`` rather than dropping its labels.
    """

    worker_labels: dict[str, str] | None = None
    """Labels every worker pod must carry: cluster membership, plus mesh enrolment when meshed."""
    worker_config: str | None = None
    """The workload configuration text the workers run with."""
    loki_endpoints: dict[str, str] | None = None
    """Proxied Loki push URLs, keyed by the Loki unit they reach (``"loki/0"``)."""
    charm_tracing_receivers: dict[str, str] | None = None
    """Proxied tracing receivers for charm traces, keyed by protocol (``"otlp_http"``)."""
    workload_tracing_receivers: dict[str, str] | None = None
    """Proxied tracing receivers for workload traces, keyed by protocol."""
    remote_write_endpoints: list[RemoteWriteEndpoint] | None = None
    """Proxied Prometheus remote-write endpoints."""
    ca_cert: str | None = None
    """The PEM CA of the proxy's certificate while it serves TLS (absent: plain HTTP)."""

    @pydantic.field_validator("worker_labels")
    @classmethod
    def _labels_valid(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        return None if labels is None else validate_labels(labels)

    @classmethod
    def compose(
        cls,
        *,
        worker_labels: Mapping[str, str] | None,
        worker_config: str | None,
        telemetry: ProxiedTelemetry,
    ) -> CoordinatorAppData:
        """The databag content for these labels, configuration and proxied URLs."""
        return cls(
            worker_labels=None if worker_labels is None else dict(worker_labels),
            worker_config=worker_config,
            loki_endpoints=dict(telemetry.loki_urls),
            charm_tracing_receivers=dict(telemetry.charm_tracing_receivers),
            workload_tracing_receivers=dict(telemetry.workload_tracing_receivers),
            remote_write_endpoints=[
                RemoteWriteEndpoint(url=url) for url in telemetry.remote_write_urls
            ],
            ca_cert=telemetry.ca_cert,
        )


class JujuTopology(pydantic.BaseModel):
    """Where a unit sits in Juju: its application, unit name and charm."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")

    application: str = pydantic.Field(pattern=APP_NAME_PATTERN, max_length=63)
    unit: str = pydantic.Field(pattern=UNIT_NAME_PATTERN, max_length=74)
    charm_name: str = pydantic.Field(pattern=APP_NAME_PATTERN, max_length=63)


def juju_topology_labels(
    topology: JujuTopology, *, model_name: str, model_uuid: str
) -> dict[str, str]:
    """A unit's Juju topology as Prometheus labels, sorted by name.

    ``juju_application``, ``juju_charm``, ``juju_model``, ``juju_model_uuid``, ``juju_unit``: the
    labels the coordinator's scrape jobs give a worker's metrics, and those a worker attaches to
    what it remote-writes itself.
    """
    return {
        "juju_application": topology.application,
        "juju_charm": topology.charm_name,
        "juju_model": model_name,
        "juju_model_uuid": model_uuid,
        "juju_unit": topology.unit,
    }


class MetricsEndpoint(pydantic.BaseModel):
    """Where a worker unit serves its Prometheus metrics (on its own address)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")

    port: int = pydantic.Field(ge=1, le=65535)
    path: str = pydantic.Field(default="/metrics", pattern=r"^/[A-Za-z0-9._~/-]*$", max_length=256)


class WorkerUnitData(DatabagModel):
    """What every worker unit publishes about itself.

    A coordinator of this version derives all of it from the unit's name and its application's
    :class:`WorkerAppData`; it reads a unit databag only from an older worker whose application
    databag has no ``charm_name`` (one valid unit databag per application).
    """

    juju_topology: JujuTopology
    address: str = pydantic.Field(pattern=HOSTNAME_PATTERN, max_length=253)
    metrics_endpoint: MetricsEndpoint | None = None


class WorkerAppData(DatabagModel):
    """What the worker leader publishes about its application: the same for every unit.

    ``charm_name`` absent means an older worker, which publishes its charm and metrics endpoint
    only in its unit databags (:class:`WorkerUnitData`).
    """

    role: str = pydantic.Field(default=DEFAULT_ROLE, pattern=r"^[a-z][a-z0-9-]{0,62}$")
    charm_name: str | None = pydantic.Field(default=None, pattern=APP_NAME_PATTERN, max_length=63)
    """The worker's charm (its units' ``juju_charm`` label)."""
    metrics_endpoint: MetricsEndpoint | None = None
    """Where every unit serves its metrics, on its own address (``None``: no metrics)."""

    @property
    def current(self) -> bool:
        """Whether the worker publishes per-application facts (this protocol version)."""
        return self.charm_name is not None


def _parse_receivers(
    receivers: Mapping[str, str] | None, *, key: str, problems: list[Problem]
) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for protocol in sorted(receivers or {})[:MAX_TARGETS]:
        raw = (receivers or {})[protocol]
        try:
            if protocol in HTTP_TRACING_PROTOCOLS:
                parsed[protocol] = str(parse_http_url(raw))
            elif protocol in GRPC_TRACING_PROTOCOLS:
                parsed[protocol] = str(parse_grpc_address(raw))
        except ValueError as e:
            problems.append(Problem.of("", f"{key}[{show(protocol)}]", str(e)))
    return parsed


def parse_proxied_telemetry(data: CoordinatorAppData) -> tuple[ProxiedTelemetry, list[Problem]]:
    """The proxied telemetry URLs of the coordinator's data, parsed (pure).

    Returns:
        The valid URLs (an absent key counts as "none"), the CA to trust for them (``None``
        when absent or malformed: a malformed one is a problem, and TLS URLs then fail
        verification rather than being trusted blindly) and one problem per dropped item, naming
        the databag key and the item (``endpoint`` is ``""``: the caller knows the relation).
        Unknown tracing protocols are ignored without a problem: a newer coordinator may offer
        protocols this worker does not know.
    """
    problems: list[Problem] = []
    loki: dict[str, str] = {}
    endpoints = data.loki_endpoints or {}
    if len(endpoints) > MAX_TARGETS:
        problems.append(
            Problem("", "loki_endpoints", f"{len(endpoints)} URLs, only {MAX_TARGETS} used")
        )
    for key in sorted(endpoints)[:MAX_TARGETS]:
        try:
            loki[key] = str(parse_http_url(endpoints[key]))
        except ValueError as e:
            problems.append(Problem.of("", f"loki_endpoints[{show(key)}]", str(e)))
    remote_write: set[str] = set()
    entries = data.remote_write_endpoints or []
    if len(entries) > MAX_TARGETS:
        problems.append(
            Problem("", "remote_write_endpoints", f"{len(entries)} URLs, only {MAX_TARGETS} used")
        )
    for entry in entries[:MAX_TARGETS]:
        try:
            remote_write.add(str(parse_http_url(entry.url)))
        except ValueError as e:
            problems.append(Problem.of("", "remote_write_endpoints", str(e)))
    ca_cert: str | None = None
    if data.ca_cert is not None:
        try:
            ca_cert = parse_pem_certificates(data.ca_cert)
        except ValueError as e:
            problems.append(Problem.of("", "ca_cert", str(e)))
    telemetry = ProxiedTelemetry(
        loki_urls=loki,
        remote_write_urls=tuple(sorted(remote_write)),
        charm_tracing_receivers=_parse_receivers(
            data.charm_tracing_receivers, key="charm_tracing_receivers", problems=problems
        ),
        workload_tracing_receivers=_parse_receivers(
            data.workload_tracing_receivers, key="workload_tracing_receivers", problems=problems
        ),
        ca_cert=ca_cert,
    )
    return telemetry, problems
