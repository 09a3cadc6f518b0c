"""coordinated_mesh.testing's fakes answer as the real backends do, on a real API server.

The same sequence of calls goes to a fake and to the real backend (the worker's labels, the
coordinator's legacy take-over); their answers and the state they leave must agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from coordinated_mesh.coordinator.kubernetes import LightkubeBackend
from coordinated_mesh.k8s.labels import memory_name
from coordinated_mesh.k8s.migration import legacy_memory_names
from coordinated_mesh.testing import FakeKubernetes, FakeLabels
from coordinated_mesh.worker.kubernetes import LegacyLabels, make_labels_backend
from lightkube import Client
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType

from tests.support.envtest import JujuApp

MakeApp = Callable[[str, str], JujuApp]
SEQUENCE: list[dict[str, str]] = [
    {"app.kubernetes.io/part-of": "coord"},
    {"app.kubernetes.io/part-of": "coord"},  # unchanged: no write
    {"app.kubernetes.io/part-of": "coord", "istio.io/dataplane-mode": "ambient"},
    {"app.kubernetes.io/part-of": "coord"},  # a label taken back
    {},
]


def _client_factory(client: Client) -> Callable[..., Any]:
    return lambda **_: client


def test_fake_labels_answers_like_the_worker_backend(
    k8s_client: Client, namespace: str, juju_app: MakeApp
):
    juju_app("w1", namespace)
    real = make_labels_backend(
        app_name="w1", namespace=namespace, client_factory=_client_factory(k8s_client)
    )
    fake = FakeLabels()
    for labels in SEQUENCE:
        assert fake.reconcile_labels(labels) == real.reconcile_labels(labels), labels
        assert fake.managed_labels() == real.managed_labels(), labels


@pytest.mark.usefixtures("authorization_policy_crd")
def test_fake_kubernetes_takes_over_legacy_labels_like_the_real_backend(
    k8s_client: Client, namespace: str, juju_app: MakeApp
):
    app = juju_app("coord", namespace)
    legacy = {"app.kubernetes.io/part-of": "coord", "istio.io/dataplane-mode": "ambient"}
    k8s_client.patch(
        StatefulSet,
        "coord",
        {"spec": {"template": {"metadata": {"labels": legacy}}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    k8s_client.create(
        ConfigMap(
            metadata=ObjectMeta(name=legacy_memory_names("coord")[0], namespace=namespace),
            data={"labels": json.dumps(legacy)},
        )
    )
    real = LightkubeBackend(
        app_name="coord", namespace=namespace, client_factory=_client_factory(k8s_client)
    )
    fake = FakeKubernetes(legacy_labels=dict(legacy), labels=dict(legacy))
    for step in (
        lambda b: b.adopt_legacy_labels(),
        lambda b: b.adopt_legacy_labels(),  # nothing left the second time
        lambda b: b.managed_labels(),
        lambda b: b.reconcile_labels({"app.kubernetes.io/part-of": "coord"}),
        lambda b: b.managed_labels(),
        lambda b: b.delete_legacy_policies(),
    ):
        assert step(fake) == step(real)
    assert "istio.io/dataplane-mode" not in app.template_labels()
    memory = k8s_client.get(ConfigMap, memory_name("coord"), namespace=namespace)
    assert json.loads((memory.data or {})["labels"]) == fake.labels


def test_fake_kubernetes_deletes_legacy_policies_like_the_real_backend(
    k8s_client: Client,
    namespace: str,
    juju_app: MakeApp,
    authorization_policy_crd: type[GenericNamespacedResource],
):
    from coordinated_mesh.k8s.migration import legacy_policy_selector

    juju_app("coord", namespace)
    names = ["coord-a", "coord-b"]
    for name in names:
        k8s_client.create(
            authorization_policy_crd.from_dict(
                {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "AuthorizationPolicy",
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": legacy_policy_selector("coord", namespace),
                    },
                    "spec": {"action": "ALLOW", "rules": [{}]},
                }
            )
        )
    real = LightkubeBackend(
        app_name="coord", namespace=namespace, client_factory=_client_factory(k8s_client)
    )
    fake = FakeKubernetes(legacy_policies=list(reversed(names)))
    assert fake.legacy_policy_names() == real.legacy_policy_names() == names
    assert fake.delete_legacy_policies() == real.delete_legacy_policies() == names
    assert fake.legacy_policy_names() == real.legacy_policy_names() == []
    assert fake.delete_legacy_policies() == real.delete_legacy_policies() == []


def test_fake_labels_takes_over_legacy_labels_like_the_worker_backend(
    k8s_client: Client, namespace: str, juju_app: MakeApp
):
    juju_app("w1", namespace)
    legacy = {"app.kubernetes.io/part-of": "coord", "istio.io/dataplane-mode": "ambient"}
    k8s_client.patch(
        StatefulSet,
        "w1",
        {"spec": {"template": {"metadata": {"labels": legacy}}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    k8s_client.create(
        ConfigMap(
            metadata=ObjectMeta(name=legacy_memory_names("w1")[0], namespace=namespace),
            data={"labels": json.dumps(legacy)},
        )
    )
    real = make_labels_backend(
        app_name="w1", namespace=namespace, client_factory=_client_factory(k8s_client)
    )
    assert isinstance(real, LegacyLabels)
    fake = FakeLabels(labels=dict(legacy), legacy_labels=dict(legacy))
    assert fake.adopt_legacy_labels() == real.adopt_legacy_labels() is True
    assert fake.adopt_legacy_labels() == real.adopt_legacy_labels() is False
    assert fake.managed_labels() == real.managed_labels() == legacy
    wanted = {"app.kubernetes.io/part-of": "coord"}
    assert fake.reconcile_labels(wanted) == real.reconcile_labels(wanted) is True
    assert fake.managed_labels() == real.managed_labels() == wanted
