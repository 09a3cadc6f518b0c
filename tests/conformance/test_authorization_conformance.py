"""Our AuthorizationPolicies are exactly the ones the service_mesh contract describes.

Each expected object below is written by hand from the spec text
(``/work/shared/spec/service-mesh-relation.md``, "AuthorizationPolicy (what a policy becomes in
Kubernetes)"): ``security.istio.io/v1``, no ``action``, one rule with the principal
``cluster.local/ns/<source_namespace>/sa/<source_app_name>``; app targets by ``targetRefs`` to the
Service with one ``to`` operation per endpoint; unit targets by ``selector.matchLabels`` with ports
only; ports as strings; ``to: []`` for "anything".
"""

from __future__ import annotations

from typing import Any

import pytest
from coordinated_mesh.mesh.authorization import render_authorization_policy
from coordinated_mesh.mesh.policies import (
    AppPolicy,
    Endpoint,
    MeshPolicy,
    Method,
    PolicyTargetType,
    RelationPeer,
    UnitPolicy,
    build_mesh_policies,
)

# The MeshPolicy example of the spec, verbatim.
SPEC_EXAMPLE = """
{"source_namespace": "mymodel", "source_app_name": "prometheus",
 "target_namespace": "mymodel", "target_app_name": "coord",
 "target_selector_labels": null, "target_service": null,
 "target_type": "app",
 "endpoints": [{"hosts": null, "ports": [8080], "methods": ["GET"],
                "paths": ["/proxy/worker/{*}/metrics"]}]}
"""


def from_prometheus(namespace: str = "mymodel") -> list[dict[str, Any]]:
    return [{"source": {"principals": [f"cluster.local/ns/{namespace}/sa/prometheus"]}}]


def resolve(declared: AppPolicy | UnitPolicy, *, source_namespace: str = "mymodel") -> MeshPolicy:
    """How the coordinator fills a policy for a relation with one remote application."""
    (policy,) = build_mesh_policies(
        [declared],
        {"metrics": [RelationPeer(app_name="prometheus", namespace=source_namespace)]},
        app_name="coord",
        namespace="mymodel",
    )
    return policy


CASES: dict[str, tuple[MeshPolicy, dict[str, Any]]] = {
    "the spec's example: app, port + method + path": (
        MeshPolicy.model_validate_json(SPEC_EXAMPLE),
        {
            "targetRefs": [{"group": "", "kind": "Service", "name": "coord"}],
            "rules": [
                {
                    "from": from_prometheus(),
                    "to": [
                        {
                            "operation": {
                                "ports": ["8080"],
                                "methods": ["GET"],
                                "paths": ["/proxy/worker/{*}/metrics"],
                            }
                        }
                    ],
                }
            ],
        },
    ),
    "app, two endpoints, one with hosts": (
        resolve(
            AppPolicy(
                relation="metrics",
                endpoints=[
                    Endpoint(ports=[8080], methods=[Method.get, Method.post], paths=["/api/*"]),
                    Endpoint(ports=[9090], hosts=["coord.mymodel.svc.cluster.local"]),
                ],
            ),
            source_namespace="cos",
        ),
        {
            "targetRefs": [{"group": "", "kind": "Service", "name": "coord"}],
            "rules": [
                {
                    "from": from_prometheus("cos"),
                    "to": [
                        {
                            "operation": {
                                "ports": ["8080"],
                                "methods": ["GET", "POST"],
                                "paths": ["/api/*"],
                            }
                        },
                        {
                            "operation": {
                                "ports": ["9090"],
                                "hosts": ["coord.mymodel.svc.cluster.local"],
                            }
                        },
                    ],
                }
            ],
        },
    ),
    "app, target_service overrides the Service": (
        resolve(
            AppPolicy(
                relation="metrics", endpoints=[Endpoint(ports=[443])], service="coord-external"
            )
        ),
        {
            "targetRefs": [{"group": "", "kind": "Service", "name": "coord-external"}],
            "rules": [{"from": from_prometheus(), "to": [{"operation": {"ports": ["443"]}}]}],
        },
    ),
    "app, no endpoints: anything": (
        resolve(AppPolicy(relation="metrics", endpoints=[])),
        {
            "targetRefs": [{"group": "", "kind": "Service", "name": "coord"}],
            "rules": [{"from": from_prometheus(), "to": []}],
        },
    ),
    "unit with ports: pods of the app": (
        resolve(UnitPolicy(relation="metrics", ports=[9090, 9091])),
        {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "coord"}},
            "rules": [
                {"from": from_prometheus(), "to": [{"operation": {"ports": ["9090", "9091"]}}]}
            ],
        },
    ),
    "unit without ports: any port": (
        resolve(UnitPolicy(relation="metrics")),
        {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "coord"}},
            "rules": [{"from": from_prometheus(), "to": []}],
        },
    ),
    "unit by selector labels (cluster-internal)": (
        MeshPolicy(
            source_namespace="mymodel",
            source_app_name="prometheus",
            target_namespace="mymodel",
            target_selector_labels={"app.kubernetes.io/part-of": "coord"},
            target_type=PolicyTargetType.unit,
        ),
        {
            "selector": {"matchLabels": {"app.kubernetes.io/part-of": "coord"}},
            "rules": [{"from": from_prometheus(), "to": []}],
        },
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendering_matches_the_spec(case: str):
    policy, expected_spec = CASES[case]

    obj = render_authorization_policy(policy, name="p", labels={"owner": "x"})

    assert obj == {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "mymodel", "labels": {"owner": "x"}},
        "spec": expected_spec,
    }
