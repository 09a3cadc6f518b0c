"""What the integration tests read from (and, once, write to) Kubernetes, through lightkube.

Istio ``AuthorizationPolicy`` objects are turned into :class:`PolicyView`, a small comparable view
(principals, targets, operations), so tests compare *what a policy allows* rather than how an
implementation happens to name or label it. The object shapes are those of
``../shared/spec/service-mesh-relation.md`` (fixtures: ``it_fixtures.py``). Targets are strings:

* ``selector:<k>=<v>[,<k>=<v>...]`` for a pod selector (L4, enforced by ztunnel);
* ``service:<name>`` for a ``targetRefs`` Service (L7, enforced by the waypoint).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from coordinated_mesh.mesh.policies import MeshPolicy, PolicyTargetType
from lightkube import ApiError, Client, ConfigError, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Namespace, Pod, Service

AuthorizationPolicy = create_namespaced_resource(
    "security.istio.io", "v1", "AuthorizationPolicy", "authorizationpolicies"
)

PART_OF = "app.kubernetes.io/part-of"
APP_NAME_LABEL = "app.kubernetes.io/name"
AMBIENT_LABEL = "istio.io/dataplane-mode"
FIELD_MANAGER = "mesh-integration-tests"


def load_kube_client() -> tuple[Client | None, str]:
    """A lightkube client for the cluster, and where its configuration came from.

    Tries, in order: in-cluster service account, ``$KUBECONFIG``, ``~/.kube/config``, then
    ``microk8s config``. Returns ``(None, reason)`` when there is no configuration at all.

    Raises:
        RuntimeError: a configuration exists but the API server does not answer with it.
    """
    try:
        config = KubeConfig.from_env()
        source = os.environ.get("KUBECONFIG") or "~/.kube/config"
    except ConfigError as e:
        microk8s = shutil.which("microk8s")
        if microk8s is None:
            return None, f"no Kubernetes client configuration ({e}) and no microk8s command"
        result = subprocess.run(
            [microk8s, "config"], capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode != 0:
            return None, (
                f"no Kubernetes client configuration ({e}) and `microk8s config` failed: "
                f"{result.stderr.strip()} (add yourself to the microk8s group, or write "
                "~/.kube/config)"
            )
        config = KubeConfig.from_dict(yaml.safe_load(result.stdout))
        source = "`microk8s config`"
    client = Client(config=config, field_manager=FIELD_MANAGER)
    try:
        client.get(Namespace, "default")
    except ApiError as e:
        if e.status.code not in (401, 403):
            raise RuntimeError(f"the Kubernetes API configured by {source} answers: {e}") from None
        raise RuntimeError(f"the credentials from {source} are refused: {e}") from None
    except Exception as e:  # transport errors (httpx) do not all derive from OSError
        raise RuntimeError(
            f"the Kubernetes API configured by {source} does not answer: {e}"
        ) from None
    return client, source


def principal(namespace: str, app: str) -> str:
    """The Istio principal of a Juju application's pods (Juju names the service account after it)."""
    return f"cluster.local/ns/{namespace}/sa/{app}"


def selector_target(labels: Mapping[str, str]) -> str:
    """The target string of a pod selector."""
    return "selector:" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def service_target(name: str) -> str:
    """The target string of a ``targetRefs`` Service."""
    return f"service:{name}"


def _strings(values: Iterable[Any] | None) -> tuple[str, ...]:
    return tuple(sorted({str(v) for v in values or ()}))


@dataclasses.dataclass(frozen=True, order=True)
class Operation:
    """One ``rules[].to[].operation``: what it allows. An empty field does not restrict."""

    ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def from_resource(cls, operation: Mapping[str, Any]) -> Operation:
        """From the ``operation`` object of an AuthorizationPolicy (ports are strings there)."""
        return cls(
            ports=_strings(operation.get("ports")),
            methods=_strings(operation.get("methods")),
            paths=_strings(operation.get("paths")),
            hosts=_strings(operation.get("hosts")),
        )

    def __str__(self) -> str:
        fields = [
            f"{name}={','.join(values)}"
            for name, values in (
                ("ports", self.ports),
                ("methods", self.methods),
                ("paths", self.paths),
                ("hosts", self.hosts),
            )
            if values
        ]
        return " ".join(fields) or "anything"


@dataclasses.dataclass(frozen=True)
class PolicyView:
    """What one AuthorizationPolicy allows, reduced to what the tests compare."""

    name: str
    labels: Mapping[str, str]
    action: str
    principals: tuple[str, ...]
    targets: tuple[str, ...]
    ports: tuple[str, ...]
    operations: tuple[Operation, ...] = ()
    """Every operation of every rule, sorted; empty means any request (of the principals)."""

    @classmethod
    def from_resource(cls, obj: Mapping[str, Any]) -> PolicyView:
        """Build the view from an AuthorizationPolicy as a dict (``apiVersion``, ``spec``...)."""
        metadata: Mapping[str, Any] = obj.get("metadata") or {}
        spec: Mapping[str, Any] = obj.get("spec") or {}
        rules: list[Mapping[str, Any]] = spec.get("rules") or []
        principals = {
            p
            for rule in rules
            for source in rule.get("from") or []
            for p in (source.get("source") or {}).get("principals") or []
        }
        operations = {
            Operation.from_resource(to.get("operation") or {})
            for rule in rules
            for to in rule.get("to") or []
        }
        ports = {port for operation in operations for port in operation.ports}
        targets: set[str] = set()
        selector: Mapping[str, str] | None = (spec.get("selector") or {}).get("matchLabels")
        if selector:
            targets.add(selector_target(selector))
        refs: list[Mapping[str, Any]] = list(spec.get("targetRefs") or [])
        if spec.get("targetRef"):
            refs.append(spec["targetRef"])
        targets.update(service_target(r["name"]) for r in refs if r.get("kind") == "Service")
        return cls(
            name=str(metadata.get("name", "")),
            labels=dict(metadata.get("labels") or {}),
            action=str(spec.get("action") or "ALLOW"),
            principals=tuple(sorted(principals)),
            targets=tuple(sorted(targets)),
            ports=tuple(sorted(ports)),
            operations=tuple(sorted(operations)),
        )

    def pairs(self) -> set[tuple[str, str]]:
        """Every (target, principal) this policy allows."""
        return {(t, p) for t in self.targets for p in self.principals}

    def __str__(self) -> str:
        ports = ",".join(self.ports) or "any"
        operations = "; ".join(str(o) for o in self.operations) or "anything"
        return (
            f"{self.name}: {'|'.join(self.principals) or '-'} -> "
            f"{'|'.join(self.targets) or '-'} ports {ports} ({operations})"
        )


def list_policies(client: Client, namespace: str) -> list[PolicyView]:
    """Every AuthorizationPolicy in ``namespace``, as views sorted by name."""
    found = [
        PolicyView.from_resource(obj.to_dict())
        for obj in client.list(AuthorizationPolicy, namespace=namespace)
    ]
    return sorted(found, key=lambda p: p.name)


def describe(policies: Iterable[PolicyView]) -> str:
    """A multi-line listing of policies for failure messages."""
    lines = [f"  {p}" for p in policies]
    return "\n".join(lines) if lines else "  (none)"


def expected_cluster_internal(
    *, namespace: str, coordinator: str, workers: Iterable[str]
) -> set[tuple[str, str]]:
    """The (target, principal) pairs of the cluster-internal policies the design asks for.

    Coordinator -> every cluster pod; each worker application -> every cluster pod; each worker
    application -> the coordinator's Service.
    """
    cluster_pods = selector_target({PART_OF: coordinator})
    wanted = {(cluster_pods, principal(namespace, coordinator))}
    for worker in workers:
        wanted.add((cluster_pods, principal(namespace, worker)))
        wanted.add((service_target(coordinator), principal(namespace, worker)))
    return wanted


def cluster_internal_policies(
    policies: Iterable[PolicyView], *, namespace: str, coordinator: str, cluster_apps: Iterable[str]
) -> list[PolicyView]:
    """The policies that grant cluster members access to the cluster.

    A policy counts when every principal it names is a cluster member (``cluster_apps``, which
    should include applications that *used to be* members, so leftovers are caught) and it targets
    the cluster's pods (``part-of`` selector) or the coordinator's Service.
    """
    members = {principal(namespace, app) for app in cluster_apps}
    cluster_targets = {selector_target({PART_OF: coordinator}), service_target(coordinator)}
    return [
        p
        for p in policies
        if p.principals and set(p.principals) <= members and set(p.targets) & cluster_targets
    ]


def mesh_policy_target(policy: MeshPolicy) -> str:
    """The target string an AuthorizationPolicy made from ``policy`` must carry."""
    if policy.target_type is PolicyTargetType.app:
        return service_target(policy.target_service or policy.target_app_name or "")
    labels = policy.target_selector_labels or {APP_NAME_LABEL: policy.target_app_name or ""}
    return selector_target(labels)


def mesh_policy_ports(policy: MeshPolicy) -> tuple[str, ...]:
    """The ports (as strings) an AuthorizationPolicy made from ``policy`` must list."""
    return tuple(sorted({str(port) for e in policy.endpoints for port in e.ports or []}))


def mesh_policy_operations(policy: MeshPolicy) -> tuple[Operation, ...]:
    """The operations an AuthorizationPolicy made from ``policy`` must hold (one per endpoint).

    Integer ports become strings, methods their names; a field left unset restricts nothing.
    """
    return tuple(
        sorted(
            {
                Operation(
                    ports=_strings(e.ports),
                    methods=_strings(m.value for m in e.methods or ()),
                    paths=_strings(e.paths),
                    hosts=_strings(e.hosts),
                )
                for e in policy.endpoints
            }
        )
    )


def find_policy_for(policy: MeshPolicy, policies: Iterable[PolicyView]) -> PolicyView | None:
    """The AuthorizationPolicy that implements ``policy``.

    Same principal and target, and exactly the operations of its endpoints (ports, methods,
    paths, hosts): a policy that allows more, or less, is not it.
    """
    want_principal = principal(policy.source_namespace, policy.source_app_name)
    want_target = mesh_policy_target(policy)
    want_operations = mesh_policy_operations(policy)
    for view in policies:
        if (
            want_principal in view.principals
            and want_target in view.targets
            and view.operations == want_operations
        ):
            return view
    return None


def live_pod_labels(client: Client, namespace: str, app: str) -> dict[str, dict[str, str]]:
    """Labels of every pod of Juju application ``app`` that is not being deleted, by pod name."""
    pods = client.list(Pod, namespace=namespace, labels={APP_NAME_LABEL: app})
    return {
        pod.metadata.name or "": dict(pod.metadata.labels or {})
        for pod in pods
        if pod.metadata is not None and pod.metadata.deletionTimestamp is None
    }


def service_labels(client: Client, namespace: str, app: str) -> dict[str, str]:
    """Labels of the Kubernetes Service Juju created for ``app``."""
    service = client.get(Service, app, namespace=namespace)
    return dict((service.metadata.labels if service.metadata else None) or {})


def label_problems(
    where: str,
    actual: Mapping[str, str],
    *,
    required: Mapping[str, str],
    absent: Iterable[str] = (),
) -> list[str]:
    """What is wrong with ``actual`` labels: missing or different required ones, unwanted keys."""
    problems = [
        f"{where}: {key}={actual.get(key)!r}, want {value!r}"
        for key, value in sorted(required.items())
        if actual.get(key) != value
    ]
    problems.extend(
        f"{where}: has {key}={actual[key]!r}, want it gone"
        for key in sorted(absent)
        if key in actual
    )
    return problems


def enrol_in_ambient_mesh(client: Client, namespace: str, app: str) -> None:
    """Put an application's pods on the ambient mesh by labelling its StatefulSet's pod template.

    Only for charms without a ``service-mesh`` endpoint; it re-creates the application's pods.
    """
    patch = {"spec": {"template": {"metadata": {"labels": {AMBIENT_LABEL: "ambient"}}}}}
    client.patch(StatefulSet, app, patch, namespace=namespace)
