"""reconcile_charm_labels against a real API server: what it writes, and only when needed."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import pytest
from coordinated_mesh.k8s.client import ForbiddenError
from coordinated_mesh.k8s.labels import managed_charm_labels, memory_name, reconcile_charm_labels
from lightkube import Client
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap, Service
from lightkube.types import PatchType

from tests.support.envtest import JujuApp, RequestLog

JUJU = {"app.kubernetes.io/name": "coord"}
MESH = {
    "app.kubernetes.io/part-of": "coord",
    "istio.io/dataplane-mode": "ambient",
    "istio.io/use-waypoint": "model-istio-beacon-k8s-waypoint",
}


@pytest.fixture
def app(juju_app: Callable[[str, str], JujuApp], namespace: str) -> JujuApp:
    return juju_app("coord", namespace)


def reconcile(client: Client, app: JujuApp, labels: dict[str, str]) -> bool:
    return reconcile_charm_labels(client, app_name=app.name, namespace=app.namespace, labels=labels)


def add_labels_out_of_band(client: Client, app: JujuApp, labels: dict[str, str | None]) -> None:
    client.patch(
        StatefulSet,
        app.name,
        {"spec": {"template": {"metadata": {"labels": labels}}}},
        namespace=app.namespace,
        patch_type=PatchType.MERGE,
    )
    client.patch(
        Service,
        app.name,
        {"metadata": {"labels": labels}},
        namespace=app.namespace,
        patch_type=PatchType.MERGE,
    )


def test_labels_go_on_the_pod_template_and_the_service(k8s_client: Client, app: JujuApp):
    assert reconcile(k8s_client, app, MESH) is True

    assert app.template_labels() == {**JUJU, **MESH}
    assert app.service_labels() == {**JUJU, "app.kubernetes.io/managed-by": "juju", **MESH}
    assert managed_charm_labels(k8s_client, app_name="coord", namespace=app.namespace) == MESH
    memory = k8s_client.get(ConfigMap, memory_name("coord"), namespace=app.namespace)
    assert json.loads((memory.data or {})["labels"]) == MESH


def test_second_call_only_reads(k8s_client: Client, app: JujuApp, request_log: RequestLog):
    reconcile(k8s_client, app, MESH)
    request_log.clear()

    assert reconcile(k8s_client, app, MESH) is False

    assert request_log.writes() == []
    assert request_log.methods() == {"GET": 3}


def test_first_call_writes_each_object_once(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    request_log.clear()
    reconcile(k8s_client, app, MESH)
    writes = [(r.method, r.resource) for r in request_log.writes()]
    assert writes == [("POST", "configmaps"), ("PATCH", "statefulsets"), ("PATCH", "services")]


def test_others_labels_survive_and_removed_labels_are_removed(k8s_client: Client, app: JujuApp):
    reconcile(k8s_client, app, MESH)
    add_labels_out_of_band(k8s_client, app, {"team": "observability"})

    wanted = {"app.kubernetes.io/part-of": "coord"}
    assert reconcile(k8s_client, app, wanted) is True

    assert app.template_labels() == {**JUJU, **wanted, "team": "observability"}
    assert app.service_labels() == {
        **JUJU,
        "app.kubernetes.io/managed-by": "juju",
        **wanted,
        "team": "observability",
    }
    assert managed_charm_labels(k8s_client, app_name="coord", namespace=app.namespace) == wanted

    assert reconcile(k8s_client, app, {}) is True
    assert app.template_labels() == {**JUJU, "team": "observability"}
    assert managed_charm_labels(k8s_client, app_name="coord", namespace=app.namespace) == {}


def test_juju_reset_is_repaired_patching_only_the_statefulset(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    reconcile(k8s_client, app, MESH)
    app.juju_reset()
    assert app.template_labels() == JUJU
    request_log.clear()

    assert reconcile(k8s_client, app, MESH) is True

    assert app.template_labels() == {**JUJU, **MESH}
    assert [(r.method, r.resource) for r in request_log.writes()] == [("PATCH", "statefulsets")]


def test_service_label_removed_out_of_band_leaves_pods_alone(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    reconcile(k8s_client, app, MESH)
    generation = app.statefulset().metadata.generation  # type: ignore[union-attr]
    k8s_client.patch(
        Service,
        app.name,
        {"metadata": {"labels": {"istio.io/use-waypoint": None}}},
        namespace=app.namespace,
        patch_type=PatchType.MERGE,
    )
    request_log.clear()

    assert reconcile(k8s_client, app, MESH) is True

    assert app.service_labels()["istio.io/use-waypoint"] == MESH["istio.io/use-waypoint"]
    assert [(r.method, r.resource) for r in request_log.writes()] == [("PATCH", "services")]
    assert app.statefulset().metadata.generation == generation  # type: ignore[union-attr]


def test_selector_label_is_never_removed(k8s_client: Client, app: JujuApp):
    reconcile(k8s_client, app, {**JUJU, **MESH})
    reconcile(k8s_client, app, MESH)
    assert app.template_labels() == {**JUJU, **MESH}
    assert app.service_labels()["app.kubernetes.io/name"] == "coord"


def test_invalid_label_is_rejected_before_any_request(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    request_log.clear()
    with pytest.raises(ValueError, match="not a valid Kubernetes label"):
        reconcile(k8s_client, app, {"app.kubernetes.io/part-of": "x" * 64})
    with pytest.raises(ValueError, match="not a valid Kubernetes label"):
        reconcile(k8s_client, app, {"bad key!": "x"})
    assert request_log.requests == []


def test_untrusted_app_gets_a_forbidden_error(untrusted_client: Client, app: JujuApp):
    with pytest.raises(ForbiddenError, match=r"juju trust coord --scope=cluster"):
        reconcile(untrusted_client, app, MESH)
    with pytest.raises(ForbiddenError):
        managed_charm_labels(untrusted_client, app_name="coord", namespace=app.namespace)


def test_unreadable_memory_is_replaced(k8s_client: Client, app: JujuApp):
    reconcile(k8s_client, app, MESH)
    k8s_client.patch(
        ConfigMap,
        memory_name("coord"),
        {"data": {"labels": "not json"}},
        namespace=app.namespace,
        patch_type=PatchType.MERGE,
    )
    assert managed_charm_labels(k8s_client, app_name="coord", namespace=app.namespace) == {}

    assert reconcile(k8s_client, app, MESH) is True

    assert managed_charm_labels(k8s_client, app_name="coord", namespace=app.namespace) == MESH
    assert app.template_labels() == {**JUJU, **MESH}


# --- The leader's cache of the label memory ---------------------------------------------------


class DictCache:
    """A ``LabelCache`` in memory (the charms keep theirs in ``ops``' unit state).

    ``periodic``: whether the hook is one of the periodic check (``update-status``).
    """

    def __init__(self, *, periodic: bool = True) -> None:
        self.labels: dict[str, str] | None = None
        self.periodic = periodic

    def recall(self) -> dict[str, str] | None:
        return None if self.labels is None else dict(self.labels)

    def remember(self, labels: Mapping[str, str]) -> None:
        self.labels = dict(labels)

    def service_check_due(self) -> bool:
        return self.periodic


def reconcile_cached(client: Client, app: JujuApp, labels: dict[str, str], cache: DictCache):
    return reconcile_charm_labels(
        client, app_name=app.name, namespace=app.namespace, labels=labels, cache=cache
    )


def test_with_the_cache_a_periodic_hook_reads_both_objects(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    cache = DictCache()
    assert reconcile_cached(k8s_client, app, MESH, cache) is True
    assert cache.labels == MESH
    request_log.clear()

    assert reconcile_cached(k8s_client, app, MESH, cache) is False

    assert request_log.writes() == []
    assert sorted(r.resource for r in request_log.requests) == ["services", "statefulsets"]


def test_with_the_cache_a_juju_reset_is_still_repaired(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    cache = DictCache()
    reconcile_cached(k8s_client, app, MESH, cache)
    app.juju_reset()
    request_log.clear()

    assert reconcile_cached(k8s_client, app, MESH, cache) is True

    assert app.template_labels() == {**JUJU, **MESH}
    assert [(r.method, r.resource) for r in request_log.writes()] == [("PATCH", "statefulsets")]


def test_a_change_is_planned_from_the_configmap_and_the_cache(k8s_client: Client, app: JujuApp):
    cache = DictCache()
    reconcile_cached(k8s_client, app, MESH, cache)
    # The memory is deleted out of band: the cache still knows what we applied.
    k8s_client.delete(ConfigMap, memory_name("coord"), namespace=app.namespace)
    without_mesh = {"app.kubernetes.io/part-of": "coord"}

    assert reconcile_cached(k8s_client, app, without_mesh, cache) is True

    assert app.template_labels() == {**JUJU, **without_mesh}  # the mesh labels are gone
    assert managed_charm_labels(k8s_client, app_name="coord", namespace=app.namespace) == (
        without_mesh
    )
    assert cache.labels == without_mesh


def test_a_stale_cache_does_not_skip_a_write(k8s_client: Client, app: JujuApp):
    cache = DictCache()
    reconcile_cached(k8s_client, app, MESH, cache)
    cache.labels = {"app.kubernetes.io/part-of": "coord"}  # as another leader left it

    assert reconcile_cached(k8s_client, app, MESH, cache) is False  # in place: nothing to write
    assert cache.labels == MESH


# --- When each object is read (docs/explanation/labels-and-policies.md) -------------------------


def settled(client: Client, app: JujuApp, request_log: RequestLog) -> DictCache:
    """The labels applied on a first hook; a cache of a hook between periodic ones."""
    cache = DictCache()
    assert reconcile_cached(client, app, MESH, cache) is True
    cache.periodic = False
    request_log.clear()
    return cache


def test_between_periodic_hooks_the_steady_state_reads_only_the_statefulset(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    cache = settled(k8s_client, app, request_log)

    assert reconcile_cached(k8s_client, app, MESH, cache) is False

    assert [(r.method, r.resource) for r in request_log.requests] == [("GET", "statefulsets")]


def test_statefulset_drift_between_periodic_hooks_checks_the_service_too(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    cache = settled(k8s_client, app, request_log)
    app.juju_reset()
    request_log.clear()

    assert reconcile_cached(k8s_client, app, MESH, cache) is True

    assert app.template_labels() == {**JUJU, **MESH}
    assert {r.resource for r in request_log.requests} >= {"statefulsets", "services"}
    assert [(r.method, r.resource) for r in request_log.writes()] == [("PATCH", "statefulsets")]


def strip_service_labels(client: Client, app: JujuApp) -> None:
    """Replace the Service with only Juju's labels (``kubectl replace`` of an older manifest)."""
    service = app.service()
    assert service.metadata is not None
    service.metadata.labels = {JUJU_NAME: app.name, "app.kubernetes.io/managed-by": "juju"}
    client.replace(service)


JUJU_NAME = "app.kubernetes.io/name"


def test_a_service_reset_is_repaired_on_the_next_periodic_hook(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    cache = settled(k8s_client, app, request_log)
    strip_service_labels(k8s_client, app)
    request_log.clear()

    # Between periodic hooks the Service is not read: nothing says it changed.
    assert reconcile_cached(k8s_client, app, MESH, cache) is False
    assert [(r.method, r.resource) for r in request_log.requests] == [("GET", "statefulsets")]
    assert not MESH.items() <= app.service_labels().items()

    cache.periodic = True  # update-status
    request_log.clear()
    assert reconcile_cached(k8s_client, app, MESH, cache) is True

    assert MESH.items() <= app.service_labels().items()
    assert [(r.method, r.resource) for r in request_log.writes()] == [("PATCH", "services")]
    assert app.template_labels() == {**JUJU, **MESH}


def test_a_change_between_periodic_hooks_is_written_to_both_objects(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    cache = settled(k8s_client, app, request_log)
    without_mesh = {"app.kubernetes.io/part-of": "coord"}

    assert reconcile_cached(k8s_client, app, without_mesh, cache) is True

    assert app.template_labels() == {**JUJU, **without_mesh}
    assert app.service_labels() == {
        **JUJU,
        "app.kubernetes.io/managed-by": "juju",
        **without_mesh,
    }
    assert cache.labels == without_mesh
