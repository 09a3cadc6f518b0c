"""A real Kubernetes API server (etcd + kube-apiserver, "envtest") for the tests in this folder.

One server is started per test session, on free loopback ports, and stopped at the end. It stores,
validates, patches, lists and RBAC-checks objects and serves CRDs; nothing runs (no kubelet, no
controllers: namespaces are never deleted, pods never start). Every test in ``tests/envtest`` is
marked ``envtest``.

Where the programs come from: ``KUBEBUILDER_ASSETS`` (a directory holding ``kube-apiserver`` and
``etcd``), else ``~/.cache/envtest/1.20.2`` (made by ``tools/envtest.sh``). When they are missing
the tests skip with the reason, unless ``ENVTEST_REQUIRED=1`` (CI sets it): then they fail.

Identities (bearer tokens): ``admin`` (group ``system:masters``: a trusted charm) and
``untrusted`` (no rights at all: every request gets 403, like a Juju app deployed without trust).

Fixtures:

``envtest`` (session)
    The running server: ``tests.support.envtest.Envtest`` (``.server``, ``.kubeconfig``,
    ``.untrusted_kubeconfig``, ``.client(user="admin", field_manager=None)``).
``kubeconfig_path``, ``untrusted_kubeconfig_path`` (session)
    Kubeconfig files for each identity.
``kubeconfig_env`` / ``untrusted_kubeconfig_env``
    Point ``KUBECONFIG`` at that kubeconfig for the test (and hide any in-cluster settings), so
    code calling ``lightkube.Client()`` itself (a charm under ``ops.testing``) talks to envtest.
``k8s_client``, ``untrusted_client``
    lightkube clients for each identity (closed after the test).
``namespace``
    A fresh namespace for the test (its name).
``juju_app``
    Factory ``juju_app(name, namespace) -> JujuApp``: creates what Juju creates for a Kubernetes
    application (ServiceAccount, StatefulSet whose pod template is labelled
    ``app.kubernetes.io/name: <name>``, Service ``<name>``). ``JujuApp`` reads back
    ``template_labels()`` / ``service_labels()`` and can ``juju_reset()`` the pod template labels
    to Juju's own, as Juju does when it rewrites the StatefulSet.
``authorization_policy_crd`` / ``no_authorization_policy_crd``
    Make sure Istio's ``AuthorizationPolicy`` CRD is installed and served (returns the lightkube
    resource class) / is absent (as in a cluster without Istio). Either order works.
``request_log``
    A ``RequestLog`` of every HTTP request any lightkube client in this process sends to the
    server during the test, with the identity that sent it: ``methods()`` counts by method,
    ``writes()`` lists everything that is not a GET, ``clear()`` forgets what was recorded; each
    ``Request`` has ``method``, ``path``, ``resource`` (``"statefulsets"``) and ``user``.

Types for annotations: ``from tests.support.envtest import Envtest, JujuApp, RequestLog``.

Usage from a charm test (``tests/envtest/test_<something>.py``)::

    from ops import testing

    def test_labels_applied(kubeconfig_env, k8s_client, namespace, juju_app, request_log):
        app = juju_app("mesh-worker-k8s", namespace)
        ctx = testing.Context(WorkerCharm)
        state = testing.State(leader=True, model=testing.Model(name=namespace), ...)
        ctx.run(ctx.on.config_changed(), state)           # the charm's Client() reaches envtest
        assert app.template_labels()["app.kubernetes.io/part-of"] == "coordinator"
        request_log.clear()
        ctx.run(ctx.on.update_status(), state)
        assert request_log.writes() == []                 # nothing changed: no write
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from ops import testing

from tests.support.binaries import unavailable
from tests.support.coordinator import context_checking_nginx
from tests.support.envtest import (
    ENVTEST_DIR,
    AuthorizationPolicy,
    Envtest,
    EnvtestError,
    JujuApp,
    RequestLog,
    create_juju_app,
    find_binaries,
    httpx,
    install_authorization_policy_crd,
    recording_handler,
    remove_authorization_policy_crd,
    run_envtest,
)

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.envtest)


@pytest.fixture(scope="session")
def envtest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envtest]:
    binaries = find_binaries()
    if binaries is None:
        unavailable(
            "no envtest binaries (kube-apiserver, etcd): set KUBEBUILDER_ASSETS or run "
            f"tools/envtest.sh to build them into {ENVTEST_DIR}",
            required_by="ENVTEST_REQUIRED",
        )
    if shutil.which("openssl") is None:
        unavailable(
            "openssl is needed to make the service-account key for kube-apiserver",
            required_by="ENVTEST_REQUIRED",
        )
    try:
        with run_envtest(*binaries, tmp_path_factory.mktemp("envtest")) as server:
            yield server
    except EnvtestError as error:
        pytest.fail(f"envtest did not start: {error}", pytrace=False)


# --- identities and clients ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def kubeconfig_path(envtest: Envtest) -> Path:
    return envtest.kubeconfig


@pytest.fixture(scope="session")
def untrusted_kubeconfig_path(envtest: Envtest) -> Path:
    return envtest.untrusted_kubeconfig


def _point_env_at(monkeypatch: pytest.MonkeyPatch, path: Path) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(path))
    # lightkube prefers in-cluster settings; make sure there are none.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    return path


@pytest.fixture
def kubeconfig_env(monkeypatch: pytest.MonkeyPatch, kubeconfig_path: Path) -> Path:
    return _point_env_at(monkeypatch, kubeconfig_path)


@pytest.fixture
def untrusted_kubeconfig_env(
    monkeypatch: pytest.MonkeyPatch, untrusted_kubeconfig_path: Path
) -> Path:
    return _point_env_at(monkeypatch, untrusted_kubeconfig_path)


@pytest.fixture
def k8s_client(envtest: Envtest) -> Iterator[Client]:
    with envtest.client() as client:
        yield client


@pytest.fixture
def untrusted_client(envtest: Envtest) -> Iterator[Client]:
    with envtest.client(user="untrusted") as client:
        yield client


@pytest.fixture
def namespace(k8s_client: Client) -> str:
    """A new namespace (never deleted: with no namespace controller it would stay Terminating)."""
    name = f"test-{secrets.token_hex(4)}"
    k8s_client.create(Namespace(metadata=ObjectMeta(name=name)))
    return name


@pytest.fixture
def juju_app(k8s_client: Client) -> Callable[[str, str], JujuApp]:
    return lambda name, namespace: create_juju_app(k8s_client, name, namespace)


@pytest.fixture
def authorization_policy_crd(k8s_client: Client) -> type[GenericNamespacedResource]:
    install_authorization_policy_crd(k8s_client)
    return AuthorizationPolicy


@pytest.fixture
def no_authorization_policy_crd(k8s_client: Client) -> None:
    remove_authorization_policy_crd(k8s_client)


@pytest.fixture
def request_log(envtest: Envtest, monkeypatch: pytest.MonkeyPatch) -> RequestLog:
    log = RequestLog()
    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", recording_handler(envtest, log))
    return log


@pytest.fixture
def ctx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[testing.Context[Any]]:
    """The coordinator charm on the real API server (``KUBECONFIG``), checking its nginx configs.

    The worker's suite defines its own ``ctx``.
    """
    yield from context_checking_nginx(monkeypatch, tmp_path)
