"""The machinery behind the envtest fixtures: a real kube-apiserver, Juju's objects, request logs.

Import it as ``from tests.support.envtest import JujuApp, RequestLog``; the fixtures themselves
are in ``tests/envtest/conftest.py``.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from lightkube import ApiError, Client, KubeConfig
from lightkube.config import client_adapter
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.apps_v1 import StatefulSetSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec, ServicePort, ServiceSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap, Service, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

httpx = client_adapter.httpx  # pyright: ignore[reportPrivateImportUsage]
"""The HTTP client module this lightkube uses (``httpx2`` for lightkube 1.x, else ``httpx``)."""

ENVTEST_DIR = Path.home() / ".cache" / "envtest" / "1.20.2"
"""Where ``tools/envtest.sh`` builds and caches the binaries."""
START_TIMEOUT = 60.0
USERS = ("admin", "untrusted")

CRD_NAME = "authorizationpolicies.security.istio.io"
AuthorizationPolicy = create_namespaced_resource(
    "security.istio.io", "v1", "AuthorizationPolicy", "authorizationpolicies"
)


class EnvtestError(RuntimeError):
    """The API server could not be started."""


# --- finding and running the server ------------------------------------------------------------


def find_binaries() -> tuple[Path, Path] | None:
    """``(kube-apiserver, etcd)`` from ``KUBEBUILDER_ASSETS``, else the envtest cache; or ``None``.

    A directory without ``etcd`` is completed with the ``etcd`` on ``PATH`` (Debian's
    ``etcd-server``).
    """
    candidates = [Path(p) for p in [os.environ.get("KUBEBUILDER_ASSETS", "")] if p]
    candidates.append(ENVTEST_DIR)
    for directory in candidates:
        apiserver = directory / "kube-apiserver"
        if not os.access(apiserver, os.X_OK):
            continue
        etcd = directory / "etcd"
        if not os.access(etcd, os.X_OK):
            found = shutil.which("etcd")
            if found is None:
                continue
            etcd = Path(found)
        return apiserver, etcd
    return None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # Linux: the child gets SIGTERM if the test process dies without running its teardown.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _kubeconfig(server: str, user: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "envtest", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": f"envtest-{user}",
                "context": {"cluster": "envtest", "user": user, "namespace": "default"},
            }
        ],
        "current-context": f"envtest-{user}",
    }


@dataclasses.dataclass(frozen=True)
class Envtest:
    """A running envtest API server and how to reach it as each identity."""

    server: str
    """The API server URL (``https://127.0.0.1:<port>``)."""
    tokens: dict[str, str]
    """Bearer token of each identity (``admin``, ``untrusted``)."""
    kubeconfigs: dict[str, Path]
    """Kubeconfig file of each identity."""

    @property
    def kubeconfig(self) -> Path:
        """Kubeconfig of the ``admin`` identity (``system:masters``: a trusted charm)."""
        return self.kubeconfigs["admin"]

    @property
    def untrusted_kubeconfig(self) -> Path:
        """Kubeconfig of the ``untrusted`` identity (no rights: every request is a 403)."""
        return self.kubeconfigs["untrusted"]

    def client(self, *, user: str = "admin", field_manager: str | None = None) -> Client:
        """A new lightkube client acting as ``user``; close it when done."""
        return Client(KubeConfig.from_file(self.kubeconfigs[user]), field_manager=field_manager)

    def user_of(self, token: str) -> str | None:
        """The identity owning bearer ``token``."""
        return next((user for user, known in self.tokens.items() if known == token), None)


def _make_service_account_key(work: Path) -> None:
    key, pub = work / "sa.key", work / "sa.pub"
    for args in (
        ["openssl", "genrsa", "-out", str(key), "2048"],
        ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
    ):
        subprocess.run(args, check=True, capture_output=True)


def _wait_ready(
    server: str, token: str, processes: dict[Path, subprocess.Popen[bytes]], api_log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(verify=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            for log, process in processes.items():
                if process.poll() is not None:
                    raise EnvtestError(f"{log.stem} exited ({process.returncode}):\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{server}/readyz", headers=headers).status_code == 200:
                    return
            time.sleep(0.2)
    raise EnvtestError(f"kube-apiserver not ready after {START_TIMEOUT}s:\n{_tail(api_log)}")


@contextlib.contextmanager
def run_envtest(apiserver: Path, etcd: Path, work: Path) -> Generator[Envtest, None, None]:
    """Run etcd and kube-apiserver on free loopback ports (state and logs in ``work``).

    Both processes are stopped on exit (and, on Linux, if this process dies).

    Raises:
        EnvtestError: a process exited or the server did not become ready.
    """
    _make_service_account_key(work)
    tokens = {user: secrets.token_hex(16) for user in USERS}
    (work / "tokens.csv").write_text(
        f'{tokens["admin"]},admin,admin-uid,"system:masters"\n'
        f"{tokens['untrusted']},untrusted,untrusted-uid\n"
    )
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd_log, api_log = work / "etcd.log", work / "kube-apiserver.log"
    processes: dict[Path, subprocess.Popen[bytes]] = {}
    try:
        processes[etcd_log] = _start(
            [
                str(etcd),
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            ],
            etcd_log,
        )
        processes[api_log] = _start(
            [
                str(apiserver),
                f"--etcd-servers={etcd_url}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--insecure-port=0",
                f"--cert-dir={work / 'certs'}",
                f"--token-auth-file={work / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={work / 'sa.pub'}",
                f"--service-account-signing-key-file={work / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--disable-admission-plugins=ServiceAccount",
            ],
            api_log,
        )
        server = f"https://127.0.0.1:{api_port}"
        _wait_ready(server, tokens["admin"], processes, api_log)
        kubeconfigs: dict[str, Path] = {}
        for user, token in tokens.items():
            kubeconfigs[user] = work / f"kubeconfig-{user}.yaml"
            kubeconfigs[user].write_text(yaml.safe_dump(_kubeconfig(server, user, token)))
        yield Envtest(server=server, tokens=tokens, kubeconfigs=kubeconfigs)
    finally:
        for process in reversed(processes.values()):
            _stop(process)


# --- what Juju creates ---------------------------------------------------------------------------

JUJU_NAME_LABEL = "app.kubernetes.io/name"


@dataclasses.dataclass(frozen=True)
class JujuApp:
    """The Kubernetes objects of one Juju application (all named after it)."""

    client: Client
    name: str
    namespace: str

    def statefulset(self) -> StatefulSet:
        """The application's StatefulSet as it is now."""
        return self.client.get(StatefulSet, self.name, namespace=self.namespace)

    def service(self) -> Service:
        """The application's Service as it is now."""
        return self.client.get(Service, self.name, namespace=self.namespace)

    def template_labels(self) -> dict[str, str]:
        """The StatefulSet's pod template labels (what every new pod gets)."""
        spec = self.statefulset().spec
        meta = spec.template.metadata if spec else None
        return dict((meta.labels if meta else None) or {})

    def service_labels(self) -> dict[str, str]:
        """The Service's labels."""
        meta = self.service().metadata
        return dict((meta.labels if meta else None) or {})

    def juju_reset(self) -> None:
        """Rewrite the pod template labels to Juju's own, as Juju does when it updates the app."""
        statefulset = self.statefulset()
        assert statefulset.spec is not None and statefulset.spec.template.metadata is not None
        statefulset.spec.template.metadata.labels = {JUJU_NAME_LABEL: self.name}
        self.client.replace(statefulset)


def create_juju_app(client: Client, name: str, namespace: str) -> JujuApp:
    """Create the ServiceAccount, StatefulSet and Service Juju creates for application ``name``."""
    juju_labels = {JUJU_NAME_LABEL: name, "app.kubernetes.io/managed-by": "juju"}
    selector = {JUJU_NAME_LABEL: name}
    client.create(ServiceAccount(metadata=ObjectMeta(name=name, namespace=namespace)))
    client.create(
        StatefulSet(
            metadata=ObjectMeta(
                name=name,
                namespace=namespace,
                labels=juju_labels,
                annotations={"juju.is/version": "3.6.0"},
            ),
            spec=StatefulSetSpec(
                replicas=1,
                serviceName=f"{name}-endpoints",
                selector=LabelSelector(matchLabels=selector),
                template=PodTemplateSpec(
                    metadata=ObjectMeta(labels=dict(selector)),
                    spec=PodSpec(
                        serviceAccountName=name,
                        containers=[Container(name="charm", image="ubuntu:22.04")],
                    ),
                ),
            ),
        )
    )
    client.create(
        Service(
            metadata=ObjectMeta(name=name, namespace=namespace, labels=juju_labels),
            spec=ServiceSpec(
                selector=dict(selector), ports=[ServicePort(name="placeholder", port=65535)]
            ),
        )
    )
    return JujuApp(client=client, name=name, namespace=namespace)


# --- Istio's AuthorizationPolicy CRD -------------------------------------------------------------

AUTHORIZATION_POLICY_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": "security.istio.io",
        "names": {
            "kind": "AuthorizationPolicy",
            "listKind": "AuthorizationPolicyList",
            "plural": "authorizationpolicies",
            "singular": "authorizationpolicy",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
                "subresources": {"status": {}},
            }
        ],
    },
}


CHARM_RIGHTS = {
    "": ["configmaps", "pods", "services"],
    "apps": ["statefulsets"],
    "security.istio.io": ["authorizationpolicies"],
}
"""What a charm of this repository reads and writes in its namespace (every verb), by API group."""


def grant_namespace_rights(
    client: Client,
    untrusted: Client,
    namespace: str,
    *,
    rights: Mapping[str, Sequence[str]] = CHARM_RIGHTS,
    withheld: str | None = None,
) -> None:
    """Give the ``untrusted`` identity ``rights`` in ``namespace`` only (a Role), but ``withheld``.

    As a Kubernetes charm has whose rights an operator limited to its model's namespace; waits
    until the grant is in force.
    """
    rules = [
        PolicyRule(
            apiGroups=[group], resources=[r for r in resources if r != withheld], verbs=["*"]
        )
        for group, resources in rights.items()
    ]
    client.create(Role(metadata=ObjectMeta(name="charm", namespace=namespace), rules=rules))
    client.create(
        RoleBinding(
            metadata=ObjectMeta(name="charm", namespace=namespace),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="charm"),
            subjects=[Subject(kind="User", name="untrusted", apiGroup="rbac.authorization.k8s.io")],
        )
    )

    def granted() -> bool:
        try:
            list(untrusted.list(ConfigMap, namespace=namespace))
        except ApiError as error:
            if error.status.code == 403:
                return False
            raise
        return True

    wait_until(granted, "the grant is in force")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        time.sleep(0.05)


def authorization_policy_served(client: Client) -> bool:
    """Whether the API server serves ``AuthorizationPolicy`` (its CRD is installed)."""
    try:
        list(client.list(AuthorizationPolicy, namespace="default"))
    except ApiError as error:
        if error.status.code == 404:
            return False
        raise
    except httpx.HTTPStatusError as error:  # plain-text 404 for an unknown API group
        if error.response.status_code == 404:
            return False
        raise
    return True


def _crd(client: Client) -> CustomResourceDefinition | None:
    try:
        return client.get(CustomResourceDefinition, CRD_NAME)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise


def _deleting(crd: CustomResourceDefinition) -> bool:
    return bool(crd.metadata and crd.metadata.deletionTimestamp)


def install_authorization_policy_crd(client: Client) -> None:
    """Install the CRD (if needed) and wait until the kind is served."""
    crd = _crd(client)
    if crd is not None and _deleting(crd):
        wait_until(lambda: _crd(client) is None, "the previous CRD is deleted")
        crd = None
    if crd is None:
        crd = cast(
            CustomResourceDefinition, CustomResourceDefinition.from_dict(AUTHORIZATION_POLICY_CRD)
        )
        client.create(crd)
    wait_until(lambda: authorization_policy_served(client), "AuthorizationPolicy is served")


def remove_authorization_policy_crd(client: Client) -> None:
    """Delete the CRD (and so every AuthorizationPolicy) and wait until the kind is not served."""
    crd = _crd(client)
    if crd is not None:
        if not _deleting(crd):
            client.delete(CustomResourceDefinition, CRD_NAME)
        wait_until(lambda: _crd(client) is None, "the CRD is deleted")
    wait_until(lambda: not authorization_policy_served(client), "AuthorizationPolicy is gone")


# --- counting requests ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """One HTTP request sent to the envtest server."""

    method: str
    path: str
    query: str
    user: str | None
    """The identity that sent it (``admin``, ``untrusted``), from its bearer token."""

    @property
    def resource(self) -> str:
        """The resource type (plural) the request is about, e.g. ``statefulsets``."""
        parts = self.path.strip("/").split("/")
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        if len(rest) > 2 and rest[0] == "namespaces":
            rest = rest[2:]
        return rest[0] if rest else ""


class RequestLog:
    """Every request sent to the envtest server while recording, in order."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.requests.clear()

    def _of(self, user: str | None) -> list[Request]:
        return [r for r in self.requests if user is None or r.user == user]

    def methods(self, user: str | None = None) -> collections.Counter[str]:
        """How many requests of each method (sent by ``user``, or by anyone)."""
        return collections.Counter(r.method for r in self._of(user))

    def writes(self, user: str | None = None) -> list[Request]:
        """The requests that are not GETs (POST, PUT, PATCH, DELETE)."""
        return [r for r in self._of(user) if r.method != "GET"]


def recording_handler(envtest: Envtest, log: RequestLog) -> Callable[[Any, Any], Any]:
    """A replacement for ``HTTPTransport.handle_request`` that logs requests to ``envtest``.

    Patched on the transport class, it sees the requests of every client in the process,
    including those a charm creates itself with ``lightkube.Client()``.
    """
    original = httpx.HTTPTransport.handle_request
    origin = httpx.URL(envtest.server)

    def handle_request(transport: Any, request: Any) -> Any:
        url = request.url
        if (url.host, url.port) == (origin.host, origin.port):
            token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            query = url.query
            log.requests.append(
                Request(
                    method=request.method,
                    path=url.path,
                    query=query.decode() if isinstance(query, bytes) else str(query),
                    user=envtest.user_of(token),
                )
            )
        return original(transport, request)

    return handle_request
