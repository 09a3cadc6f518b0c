"""Mesh authorization policies: what a charm declares, and the resolved wire form.

:class:`AppPolicy` and :class:`UnitPolicy` are declarations ("whoever is related over R may reach
these endpoints of my Service / these ports of my pods"); :class:`MeshPolicy` is one resolved
source -> target allowance, the ``service_mesh`` relation's wire form (a contract with
``istio-beacon-k8s``: every key present, in declared order); :func:`build_mesh_policies` resolves.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import pydantic

__all__ = [
    "AppPolicy",
    "Endpoint",
    "MeshPolicy",
    "Method",
    "PolicyTargetType",
    "RelationPeer",
    "UnitPolicy",
    "build_mesh_policies",
    "policies_to_json",
]

_MAX_PORT = 65535

_L7_FIELDS = ("hosts", "methods", "paths", "endpoints")
"""Fields a :class:`UnitPolicy` is sometimes mistakenly given: it is enforced at L4 (ports only)."""

Port = Annotated[int, pydantic.Strict()]
"""A TCP port: an integer (booleans, floats and numeric strings are rejected), checked to 1-65535."""


class Method(str, enum.Enum):
    """HTTP methods an L7 (app) policy may allow."""

    connect = "CONNECT"
    delete = "DELETE"
    get = "GET"
    head = "HEAD"
    options = "OPTIONS"
    patch = "PATCH"
    post = "POST"
    put = "PUT"
    trace = "TRACE"


class PolicyTargetType(str, enum.Enum):
    """What a policy protects: an application's Service (L7) or its pods (L4)."""

    app = "app"
    """The target is a Kubernetes Service; enforced by the waypoint, may restrict paths and methods."""
    unit = "unit"
    """The target is a set of pods; enforced by ztunnel at L4, may restrict ports only."""


def _check_ports(ports: Sequence[int] | None) -> None:
    for port in ports or ():
        if not 1 <= port <= _MAX_PORT:
            raise ValueError(f"port {port} is outside 1-{_MAX_PORT}")


class Endpoint(pydantic.BaseModel):
    """Where traffic may go: any combination of hosts, ports, methods and paths.

    A field left ``None`` does not restrict. An endpoint with every field ``None`` allows anything.
    Unknown fields are rejected (``Endpoint(port=[80])`` is a typo that would otherwise allow
    every port and path); reading a :class:`MeshPolicy` from the wire ignores them instead.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    hosts: list[str] | None = None
    ports: list[Port] | None = None
    methods: list[Method] | None = None
    paths: list[str] | None = None

    @pydantic.field_validator("ports")
    @classmethod
    def _valid_ports(cls, ports: list[int] | None) -> list[int] | None:
        _check_ports(ports)
        return ports

    @property
    def is_l4_only(self) -> bool:
        """Whether this endpoint restricts nothing but ports (so it can be enforced at L4)."""
        return self.hosts is None and self.methods is None and self.paths is None


class AppPolicy(pydantic.BaseModel):
    """Allow applications related over ``relation`` to reach ``endpoints`` of our Service.

    ``service`` names the Kubernetes Service to protect when it is not the one Juju creates for the
    application (the default, named after the application). Unknown fields are rejected, so a typo
    in a declaration fails loudly instead of silently allowing more (or less) than meant.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    relation: str
    endpoints: list[Endpoint]
    service: str | None = None


class UnitPolicy(pydantic.BaseModel):
    """Allow applications related over ``relation`` to reach ``ports`` on every one of our pods.

    ``ports=None`` (or empty) allows any port. Unit policies are enforced at L4: they cannot restrict
    hosts, methods or paths; use an :class:`AppPolicy` for that. Declaring one of those (or any
    other unknown field) is a ``ValueError`` that says so, rather than a policy silently wider than
    meant.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    relation: str
    ports: list[Port] | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _no_l7_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            l7 = sorted(str(k) for k in data if k in _L7_FIELDS)
            if l7:
                raise ValueError(
                    f"a UnitPolicy is enforced at L4 and can only restrict ports; "
                    f"{', '.join(l7)} cannot be expressed there: use an AppPolicy "
                    f"for relation {data.get('relation')!r} instead"
                )
        return data

    @pydantic.field_validator("ports")
    @classmethod
    def _valid_ports(cls, ports: list[int] | None) -> list[int] | None:
        _check_ports(ports)
        return ports


class MeshPolicy(pydantic.BaseModel):
    """One source application allowed to reach one target, as the beacon and Kubernetes see it.

    Validation follows the ``service_mesh`` contract:

    * ``app`` policies need ``target_app_name`` or ``target_service``, and cannot select by labels;
    * ``unit`` policies cannot name a ``target_service``, cannot have both ``target_app_name`` and
      ``target_selector_labels``, need one of them, and cannot carry L7 fields (hosts, methods, paths).
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")

    source_namespace: str
    source_app_name: str
    target_namespace: str
    target_app_name: str | None = None
    target_selector_labels: dict[str, str] | None = None
    target_service: str | None = None
    target_type: PolicyTargetType = PolicyTargetType.app
    endpoints: list[Endpoint] = pydantic.Field(default_factory=list[Endpoint])

    @pydantic.field_validator("endpoints", mode="before")
    @classmethod
    def _ignore_unknown_endpoint_keys(cls, endpoints: Any) -> Any:
        """On the wire, keys a newer peer adds to an endpoint are ignored, not an error."""
        if not isinstance(endpoints, list):
            return endpoints
        known = Endpoint.model_fields.keys()
        return [
            {k: v for k, v in e.items() if k in known} if isinstance(e, Mapping) else e
            for e in endpoints
        ]

    @pydantic.model_validator(mode="after")
    def _check_target(self) -> MeshPolicy:
        if self.target_type is PolicyTargetType.app:
            if not (self.target_app_name or self.target_service):
                raise ValueError("an app policy needs target_app_name or target_service")
            if self.target_selector_labels:
                raise ValueError("an app policy cannot select pods by label; use a unit policy")
            return self
        if self.target_service:
            raise ValueError("a unit policy targets pods, not a Service: drop target_service")
        if self.target_app_name and self.target_selector_labels:
            raise ValueError(
                "a unit policy takes target_app_name or target_selector_labels, not both"
            )
        if not (self.target_app_name or self.target_selector_labels):
            raise ValueError("a unit policy needs target_app_name or target_selector_labels")
        l7 = [e for e in self.endpoints if not e.is_l4_only]
        if l7:
            raise ValueError(
                "a unit policy is enforced at L4 and can only restrict ports; "
                f"hosts, methods and paths are not allowed (got {l7[0].model_dump(mode='json')})"
            )
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict of this policy, every key present, in contract order."""
        return self.model_dump(mode="json")

    def sort_key(self) -> str:
        """A total, stable order for policies (their canonical JSON)."""
        return json.dumps(self.to_wire(), sort_keys=True)


class RelationPeer(pydantic.BaseModel):
    """A remote application on one of our relations, and the namespace (Juju model) it lives in."""

    model_config = pydantic.ConfigDict(frozen=True)

    app_name: str
    namespace: str


def build_mesh_policies(
    policies: Iterable[AppPolicy | UnitPolicy],
    peers: Mapping[str, Sequence[RelationPeer]],
    *,
    app_name: str,
    namespace: str,
) -> list[MeshPolicy]:
    """Resolve declared policies into one :class:`MeshPolicy` per (declaration, remote application).

    Args:
        policies: what the charm declares.
        peers: for each relation endpoint name, the remote applications currently related over it.
        app_name: our application (the target).
        namespace: our model (the target namespace).

    Returns:
        The mesh policies, deduplicated and sorted, so equal inputs give equal output.
    """
    resolved: dict[str, MeshPolicy] = {}
    for declared in policies:
        for peer in peers.get(declared.relation, ()):
            if isinstance(declared, AppPolicy):
                policy = MeshPolicy(
                    source_namespace=peer.namespace,
                    source_app_name=peer.app_name,
                    target_namespace=namespace,
                    target_app_name=app_name,
                    target_service=declared.service,
                    target_type=PolicyTargetType.app,
                    endpoints=list(declared.endpoints),
                )
            else:
                policy = MeshPolicy(
                    source_namespace=peer.namespace,
                    source_app_name=peer.app_name,
                    target_namespace=namespace,
                    target_app_name=app_name,
                    target_type=PolicyTargetType.unit,
                    endpoints=[Endpoint(ports=list(declared.ports))] if declared.ports else [],
                )
            resolved[policy.sort_key()] = policy
    return [resolved[key] for key in sorted(resolved)]


def policies_to_json(policies: Iterable[MeshPolicy]) -> str:
    """The ``policies`` databag value: a JSON array of policies in a stable order."""
    ordered = sorted(policies, key=MeshPolicy.sort_key)
    return json.dumps([p.to_wire() for p in ordered])
