"""Recorded shapes of what the integration helpers and ``tools/deploy.py`` parse, one per shape.

No Juju or Kubernetes runs here, so these stand in for their output. Each builder emits the
documented keys of one command's output and says where they are documented; the offline tests
feed them through the same parsers the live code uses (``jubilant.Status._from_dict`` for
``juju status``, ``jubilant.UnitInfo._from_dict`` for ``juju show-unit``, ``ModelList.from_json``
for ``juju models``, ``PolicyView.from_resource`` for AuthorizationPolicies), so a wrong key fails
here rather than on a cluster.

Sources:

* ``juju models --format json``: Juju 3.6 ``cmd/juju/controller/listmodels.go``
  (``ModelSummarySet``, ``ModelSummary``) and ``../shared/spec/juju-and-istio-facts.md``.
* ``juju status --format json``: Juju 3.6 ``cmd/juju/status/formatted.go``, as mirrored by
  jubilant 1.14 ``statustypes.py`` (generated from those Go structs).
* ``juju show-unit --format json``: Juju 3.6 ``cmd/juju/application/showunit.go`` (``UnitInfo``,
  ``RelationData``, ``UnitRelationData``), as mirrored by jubilant 1.14 ``unittypes.py``.
* AuthorizationPolicy: ``../shared/spec/service-mesh-relation.md`` (what the beacon and our
  coordinator create; ``security.istio.io/v1``).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

CONTROLLER = "dev"
AGENT_VERSION = "3.6.8"
CONTROLLER_UUID = "5a1c2d3e-0000-4000-8000-00000000c0de"


# --- juju models --format json -------------------------------------------------------------------


def model_summary(
    short_name: str,
    *,
    model_type: str = "caas",
    provider_type: str = "kubernetes",
    cloud: str = "microk8s",
    region: str = "localhost",
    owner: str = "admin",
) -> dict[str, Any]:
    """One entry of ``models`` (Juju 3.6 ``ModelSummary``).

    ``model-type`` is ``caas``/``iaas``; ``type`` is the *provider* type, ``kubernetes`` on
    microk8s, ``lxd`` on LXD, and is omitted when empty (``omitempty``).
    """
    entry: dict[str, Any] = {
        "name": f"{owner}/{short_name}",
        "short-name": short_name,
        "model-uuid": f"00000000-0000-4000-8000-{zlib.crc32(short_name.encode()):012d}",
        "model-type": model_type,
        "controller-uuid": CONTROLLER_UUID,
        "controller-name": CONTROLLER,
        "is-controller": short_name == "controller",
        "owner": owner,
        "cloud": cloud,
        "region": region,
        "type": provider_type,
        "life": "alive",
        "status": {"current": "available", "since": "1 minute ago"},
        "access": "admin",
        "last-connection": "just now",
        "agent-version": AGENT_VERSION,
    }
    if not provider_type:
        del entry["type"]
    return entry


def models_json(*models: Mapping[str, Any], current: str | None = None) -> str:
    """The whole ``juju models --format json`` document (``current-model`` omitted if None)."""
    doc: dict[str, Any] = {"models": list(models)}
    if current is not None:
        doc["current-model"] = current
    return json.dumps(doc)


def models_after_bootstrap_microk8s() -> str:
    """Right after ``juju bootstrap microk8s dev``: only ``controller``, current (Juju 3)."""
    return models_json(model_summary("controller"), current="controller")


def models_on_lxd_controller() -> str:
    """A controller bootstrapped on LXD: a machine (``iaas``) controller model."""
    return models_json(
        model_summary("controller", model_type="iaas", provider_type="lxd", cloud="localhost"),
        current="controller",
    )


# --- juju status --format json -------------------------------------------------------------------


def unit_json(
    workload: str = "active",
    message: str = "",
    *,
    agent: str = "idle",
    leader: bool = False,
    address: str = "10.1.0.10",
    provider_id: str = "",
) -> dict[str, Any]:
    """One entry of an application's ``units`` (Juju ``unitStatus``)."""
    unit: dict[str, Any] = {
        "workload-status": {"current": workload, "since": "01 Jan 2026 00:00:00Z"},
        "juju-status": {
            "current": agent,
            "since": "01 Jan 2026 00:00:00Z",
            "version": AGENT_VERSION,
        },
        "address": address,
        "provider-id": provider_id,
    }
    if message:
        unit["workload-status"]["message"] = message
    if leader:
        unit["leader"] = True
    return unit


def app_json(
    charm_name: str,
    *,
    units: Mapping[str, Mapping[str, Any]],
    relations: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    channel: str | None = None,
    status: str | None = None,
    message: str = "",
) -> dict[str, Any]:
    """One entry of ``applications`` (Juju ``applicationStatus``).

    ``relations`` maps an endpoint to ``(related application, interface)`` pairs; Juju 3 writes
    each as ``{"related-application", "interface", "scope"}``. ``charm`` is the charm's name for
    Charmhub charms and ``local:<name>-<rev>`` for local ones (nothing here reads it; jubilant
    requires it). ``charm-channel`` is absent for local charms.
    """
    local = channel is None
    workloads = [u["workload-status"]["current"] for u in units.values()]
    app: dict[str, Any] = {
        "charm": f"local:{charm_name}-0" if local else charm_name,
        "base": {"name": "ubuntu", "channel": "24.04"},
        "charm-origin": "local" if local else "charmhub",
        "charm-name": charm_name,
        "charm-rev": 0 if local else 42,
        "exposed": False,
        "scale": len(units),
        "provider-id": f"{charm_name}-provider-id",
        "address": "10.152.183.20",
        "application-status": {
            "current": status or (workloads[0] if workloads else "waiting"),
            "message": message,
            "since": "01 Jan 2026 00:00:00Z",
        },
        "relations": {
            endpoint: [
                {"related-application": other, "interface": interface, "scope": "global"}
                for other, interface in related
            ]
            for endpoint, related in (relations or {}).items()
        },
        "units": {name: dict(u) for name, u in units.items()},
        "endpoint-bindings": {"": "alpha", **dict.fromkeys(relations or {}, "alpha")},
    }
    if not local:
        app["charm-channel"] = channel
    if not app["relations"]:
        del app["relations"]
    return app


def status_json(model: str, apps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A whole ``juju status --format json`` document of a Kubernetes model.

    Here ``model.type`` *is* the model type (``caas``), unlike ``juju models``' ``type``.
    """
    return {
        "model": {
            "name": model,
            "type": "caas",
            "controller": CONTROLLER,
            "cloud": "microk8s",
            "region": "localhost",
            "version": AGENT_VERSION,
            "model-status": {"current": "available", "since": "01 Jan 2026 00:00:00Z"},
            "sla": "unsupported",
        },
        "machines": {},
        "applications": {name: dict(app) for name, app in apps.items()},
        "controller": {"timestamp": "00:00:00Z"},
    }


def istio_model_status(app: str = "istio-k8s", workload: str = "active") -> dict[str, Any]:
    """The model istio-k8s runs in."""
    return status_json(
        "istio-system",
        {app: app_json("istio-k8s", channel="2/edge", units={f"{app}/0": unit_json(workload)})},
    )


def mesh_model_status(
    *,
    coordinator: str = "active",
    worker: str = "active",
    beacon: str = "active",
    beacon_message: str = "",
    related: bool = True,
) -> dict[str, Any]:
    """The deploy command's model with the pair and the beacon (related unless ``related=False``)."""
    cluster = {"cluster": [("worker", "mesh_cluster")]} if related else {}
    mesh = {"service-mesh": [("istio-beacon", "service_mesh")]} if related else {}
    return status_json(
        "mesh",
        {
            "coordinator": app_json(
                "mesh-coordinator-k8s",
                units={"coordinator/0": unit_json(coordinator, leader=True)},
                relations={**cluster, **mesh},
            ),
            "worker": app_json(
                "mesh-worker-k8s",
                units={"worker/0": unit_json(worker, leader=True)},
                relations={"cluster": [("coordinator", "mesh_cluster")]} if related else {},
            ),
            "istio-beacon": app_json(
                "istio-beacon-k8s",
                channel="2/edge",
                units={"istio-beacon/0": unit_json(beacon, beacon_message, leader=True)},
                relations={"service-mesh": [("coordinator", "service_mesh")]} if related else {},
            ),
        },
    )


# --- juju show-unit --format json ----------------------------------------------------------------


def relation_info(
    endpoint: str,
    *,
    app_data: Mapping[str, str],
    related_units: Mapping[str, Mapping[str, str]],
    relation_id: int = 7,
    local_data: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One entry of ``relation-info`` (Juju ``RelationData``).

    ``application-data`` is the *related* application's databag; ``related-units`` holds the
    other side's units (the unit itself is under ``local-unit``). Databag values are strings.
    """
    return {
        "relation-id": relation_id,
        "endpoint": endpoint,
        "related-endpoint": endpoint,
        "application-data": dict(app_data),
        "local-unit": {"in-scope": True, "data": dict(local_data or {})},
        "related-units": {
            unit: {"in-scope": True, "data": dict(data)} for unit, data in related_units.items()
        },
    }


def show_unit_json(unit: str, *relations: Mapping[str, Any], leader: bool = True) -> str:
    """The whole ``juju show-unit UNIT --format json`` document: ``{unit: UnitInfo}``."""
    info = {
        "opened-ports": ["8080/tcp"],
        "charm": "local:mesh-coordinator-k8s-0",
        "leader": leader,
        "life": "alive",
        "relation-info": list(relations),
        "provider-id": unit.replace("/", "-"),
        "address": "10.1.0.11",
    }
    return json.dumps({unit: info})


# --- Kubernetes objects (kubectl get -o json / lightkube to_dict) --------------------------------


def principal(namespace: str, app: str) -> str:
    """Istio's principal of a Juju application: Juju names the service account after the app."""
    return f"cluster.local/ns/{namespace}/sa/{app}"


def l7_policy(
    name: str,
    *,
    namespace: str,
    source_app: str,
    service: str,
    operations: Sequence[Mapping[str, Sequence[str]]],
) -> dict[str, Any]:
    """An AuthorizationPolicy enforced by the waypoint: ``targetRefs`` a Service, L7 rules.

    One ``to`` entry per endpoint; ports are strings; unset fields absent.
    """
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": {"owner": "beacon"}},
        "spec": {
            "targetRefs": [{"group": "", "kind": "Service", "name": service}],
            "rules": [
                {
                    "from": [{"source": {"principals": [principal(namespace, source_app)]}}],
                    "to": [{"operation": dict(op)} for op in operations],
                }
            ],
        },
    }


def l4_policy(
    name: str,
    *,
    namespace: str,
    source_app: str,
    match_labels: Mapping[str, str],
    ports: Sequence[str] = (),
) -> dict[str, Any]:
    """An AuthorizationPolicy enforced by ztunnel: a pod ``selector``, ports only (or none)."""
    rule: dict[str, Any] = {
        "from": [{"source": {"principals": [principal(namespace, source_app)]}}]
    }
    if ports:
        rule["to"] = [{"operation": {"ports": list(ports)}}]
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": {"owner": "coordinator"}},
        "spec": {"selector": {"matchLabels": dict(match_labels)}, "rules": [rule]},
    }
