"""While the policies cannot be written, each cluster relation keeps its own workers' labels.

A worker application that joins then must not get the mesh labels another relation published
before: its pods would enrol with none of their policies.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from coordinated_mesh.k8s.client import KubernetesError
from coordinated_mesh.mesh.cluster_policies import PART_OF_LABEL
from ops import testing

from tests.support.coordinator import (
    APP,
    MESH_LABELS,
    FakeKubernetes,
    mesh_relation,
    state,
    worker_relation,
)

Ctx = testing.Context[Any]


def _labels_by_app(out: testing.State) -> dict[str, Any]:
    return {
        r.remote_app_name: json.loads(r.local_app_data["worker_labels"])
        for r in out.relations
        if isinstance(r, testing.Relation) and r.endpoint == "cluster"
    }


def test_a_worker_app_joining_while_policies_fail_gets_no_mesh_labels(
    ctx: Ctx, kube: FakeKubernetes
):
    out = ctx.run(ctx.on.config_changed(), state(worker_relation("w1"), mesh_relation()))
    meshed = {PART_OF_LABEL: APP, **MESH_LABELS}
    assert _labels_by_app(out) == {"w1": meshed}

    kube.policies_fail_with = KubernetesError("Kubernetes API error 500: etcd timeout", status=500)
    w2 = worker_relation("w2")
    out = ctx.run(
        ctx.on.relation_joined(w2), dataclasses.replace(out, relations=[*out.relations, w2])
    )
    assert isinstance(out.unit_status, testing.WaitingStatus), out.unit_status
    # w1's pods stay enrolled (no restart on a transient failure); w2's do not enrol.
    assert _labels_by_app(out) == {"w1": meshed, "w2": {PART_OF_LABEL: APP}}

    # Once the policies can be written, both relations carry the mesh labels.
    kube.policies_fail_with = None
    out = ctx.run(ctx.on.update_status(), out)
    assert _labels_by_app(out) == {"w1": meshed, "w2": meshed}
