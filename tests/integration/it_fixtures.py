"""Recorded shapes of what the integration helpers parse, one per shape.

No Juju or Kubernetes runs here, so these stand in for their output. Each builder emits the
documented keys of one command's output and says where they are documented; the offline tests
feed them through the same parsers the live code uses (``jubilant.UnitInfo._from_dict`` for
``juju show-unit``, ``ModelList.from_json``
for ``juju models``, ``PolicyView.from_resource`` for AuthorizationPolicies), so a wrong key fails
here rather than on a cluster.

Sources:

* ``juju models --format json``: Juju 3.6 ``cmd/juju/controller/listmodels.go``
  (``ModelSummarySet``, ``ModelSummary``) and ``../shared/spec/juju-and-istio-facts.md``.
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
