"""Juju's own writes to an application's StatefulSet and Service keep our labels (real API server).

A model of how Juju 3.6 writes the two objects, read from its source
(github.com/juju/juju, branch 3.6, commit 183fb941628a19d21aaa77bb785321a9347b716c):

- ``caas/kubernetes/provider/application/application.go`` ``Ensure`` (deploy, refresh, scale,
  trust, a controller restart: whenever the provisioner's application config changes) applies
  the Service through ``configureDefaultService`` and the StatefulSet through the applier;
  ``UpdatePorts`` (the charm's ``open-port``/``set_ports``) rewrites the Service's ports;
- ``caas/kubernetes/provider/resources/service.go`` ``Service.Apply``: a strategic merge patch
  of the object Juju built (``UpdatePorts``: the Service as read, as a JSON merge patch), field
  manager ``juju``;
- ``caas/kubernetes/provider/resources/statefulset.go`` ``StatefulSet.Apply``: GET, replace the
  whole ``spec.template`` with Juju's (its labels: the selector's only), then a strategic merge
  patch of the whole object, field manager ``juju``.

Patches merge ``metadata.labels``: these tests show, against kube-apiserver, that none of these
writes removes a label someone else set, and that the leader's label check then stays at one
read (the StatefulSet) between periodic hooks. Facts and the rule:
``docs/explanation/labels-and-policies.md#when-each-object-is-read``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from coordinated_mesh.k8s.labels import reconcile_charm_labels
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType

from tests.envtest.test_envtest_labels import MESH, DictCache
from tests.support.envtest import JUJU_NAME_LABEL, JujuApp, RequestLog

JUJU_FIELD_MANAGER = "juju"
"""``resources.JujuFieldManager`` (``caas/kubernetes/provider/resources/interface.go``)."""
PLACEHOLDER_PORT = {"name": "placeholder", "port": 65535}
"""``configureDefaultService``'s port before the charm opens any."""


def juju_labels(app: JujuApp) -> dict[str, str]:
    """``utils.LabelsForApp``: what Juju puts on the objects' metadata."""
    return {JUJU_NAME_LABEL: app.name, "app.kubernetes.io/managed-by": "juju"}


def juju_ensure_service(client: Client, app: JujuApp) -> None:
    """``configureDefaultService``: a strategic merge patch of the Service Juju builds."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app.name, "namespace": app.namespace, "labels": juju_labels(app)},
        "spec": {
            "selector": {JUJU_NAME_LABEL: app.name},
            "type": "ClusterIP",
            "ports": [PLACEHOLDER_PORT],
        },
    }
    client.patch(
        Service,
        app.name,
        service,
        namespace=app.namespace,
        patch_type=PatchType.STRATEGIC,
        field_manager=JUJU_FIELD_MANAGER,
    )


def juju_ensure_statefulset(client: Client, app: JujuApp) -> None:
    """``StatefulSet.Apply``: the object as read, Juju's template in place, strategic-merged."""
    statefulset = app.statefulset()
    assert statefulset.spec is not None
    template = statefulset.spec.template
    template.metadata = ObjectMeta(
        labels={JUJU_NAME_LABEL: app.name}, annotations={"juju.is/version": "3.6.1"}
    )
    client.patch(
        StatefulSet,
        app.name,
        statefulset.to_dict(),
        namespace=app.namespace,
        patch_type=PatchType.STRATEGIC,
        field_manager=JUJU_FIELD_MANAGER,
    )


def juju_ensure(client: Client, app: JujuApp) -> None:
    """``Ensure``'s writes to the two objects, in its order: the Service, then the StatefulSet."""
    juju_ensure_service(client, app)
    juju_ensure_statefulset(client, app)


def juju_update_ports(client: Client, app: JujuApp, ports: list[tuple[str, int]]) -> None:
    """``UpdatePorts``: the Service as read, its ``juju-`` ports replaced, as a JSON merge patch."""
    service = app.service()
    assert service.spec is not None
    kept = [
        port.to_dict()
        for port in service.spec.ports or []
        if port.name != PLACEHOLDER_PORT["name"] and not (port.name or "").startswith("juju-")
    ]
    opened = [
        {"name": f"juju-{name}", "port": port, "targetPort": port, "protocol": "TCP"}
        for name, port in ports
    ]
    body = service.to_dict()
    body["spec"]["ports"] = [*kept, *opened]
    client.patch(
        Service,
        app.name,
        body,
        namespace=app.namespace,
        patch_type=PatchType.MERGE,
        field_manager=JUJU_FIELD_MANAGER,
    )


@pytest.fixture
def app(juju_app: Callable[[str, str], JujuApp], namespace: str) -> JujuApp:
    return juju_app("coord", namespace)


def reconcile(client: Client, app: JujuApp, cache: DictCache) -> bool:
    return reconcile_charm_labels(
        client, app_name=app.name, namespace=app.namespace, labels=MESH, cache=cache
    )


def test_juju_ensure_keeps_our_labels_on_both_objects(k8s_client: Client, app: JujuApp):
    reconcile(k8s_client, app, DictCache())
    juju_ensure_service(k8s_client, app)
    juju_ensure_statefulset(k8s_client, app)

    # Juju's writes landed (its annotation on the template, its own labels)...
    template = app.statefulset().spec.template.metadata  # type: ignore[union-attr]
    assert template is not None and template.annotations == {"juju.is/version": "3.6.1"}
    # ... and ours are still there.
    assert app.template_labels() == {JUJU_NAME_LABEL: app.name, **MESH}
    assert app.service_labels() == {**juju_labels(app), **MESH}


def test_juju_update_ports_keeps_our_service_labels(k8s_client: Client, app: JujuApp):
    reconcile(k8s_client, app, DictCache())

    juju_update_ports(k8s_client, app, [("8080", 8080)])

    service = app.service()
    assert [p.name for p in service.spec.ports or []] == ["juju-8080"]  # type: ignore[union-attr]
    assert app.service_labels() == {**juju_labels(app), **MESH}


def test_after_juju_writes_a_hook_reads_only_the_statefulset_and_writes_nothing(
    k8s_client: Client, app: JujuApp, request_log: RequestLog
):
    cache = DictCache()
    reconcile(k8s_client, app, cache)
    juju_ensure(k8s_client, app)
    juju_update_ports(k8s_client, app, [("8080", 8080)])
    cache.periodic = False  # a hook between update-status hooks
    request_log.clear()

    assert reconcile(k8s_client, app, cache) is False
    assert [(r.method, r.resource) for r in request_log.requests] == [("GET", "statefulsets")]

    cache.periodic = True  # update-status: the Service is read too, and is in place
    request_log.clear()
    assert reconcile(k8s_client, app, cache) is False
    assert sorted(r.resource for r in request_log.requests) == ["services", "statefulsets"]
