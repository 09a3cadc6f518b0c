"""Fakes and builders shared by the coordinator's ``ops.testing`` tests and benchmarks.

* :class:`FakeKubernetes`: the library's in-memory Kubernetes (:mod:`coordinated_mesh.testing`),
  re-exported; it writes only on a difference, records its writes, and fails like Kubernetes does
  (403, CRD missing, API error) on demand.
* builders for the relations the coordinator speaks, with realistic databags;
* :func:`check_nginx`: ``nginx -t`` with the real nginx on a rendered configuration.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import coordinated_mesh.coordinator.decide as decide_module
import ops
import pytest
from coordinated_mesh import testing as cluster_data
from coordinated_mesh.k8s.client import CRDMissingError, ForbiddenError, KubernetesError
from coordinated_mesh.proxy.nginx import NginxSettings
from coordinated_mesh.proxy.pebble import NGINX_CONFIG_PATH, exporter_layer, nginx_layer
from coordinated_mesh.testing import FakeKubernetes
from ops import testing

from tests.support.binaries import require_binary, require_nginx_with_upstream_resolve
from tests.support.charm_loader import load_charm_module
from tests.support.tls import issue, make_ca

APP = "coord"
MODEL = testing.Model(name="mymodel", uuid="00000000-0000-4000-8000-000000000001")
CHARM = load_charm_module("coordinator")
CharmType = CHARM.MeshCoordinatorCharm

# --- Kubernetes ------------------------------------------------------------------------------


def verified_tls_backend(host: str, port: int, **_: Any) -> str | None:
    """The stand-in TLS backend check of unit tests: every backend verifies (no network)."""
    return None


def coordinator_charm_type(
    *,
    kubernetes: FakeKubernetes | None,
    resolv_conf: str,
    system_ca_bundle: str | None = None,
    tls_backend_check: Any = None,
) -> type[Any]:
    """The coordinator charm with its seams set: a Kubernetes (the real one when ``None``), the
    file its DNS resolvers are read from, its system CA bundle (``None``: this machine's) and how
    it verifies TLS backends (default: :func:`verified_tls_backend`, no network)."""
    # The subclass keeps the charm's module, where ops.testing finds its charmcraft.yaml.
    attributes: dict[str, Any] = {
        "__module__": CharmType.__module__,
        "resolv_conf": resolv_conf,
        "system_ca_bundle": system_ca_bundle,
        "tls_backend_check": staticmethod(tls_backend_check or verified_tls_backend),
    }
    if kubernetes is not None:
        fake = kubernetes
        attributes["kubernetes_backend_factory"] = staticmethod(lambda **_: fake)
    return type("TestCoordinatorCharm", (CharmType,), attributes)


def make_context(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    kubernetes: FakeKubernetes | None = None,
    rendered: list[str] | None = None,
    tls_backend_check: Any = None,
) -> testing.Context[Any]:
    """An ``ops.testing`` context for the coordinator charm, with a fixed DNS resolver.

    The charm's Kubernetes backend is ``kubernetes`` (through the charm's constructor seam), or the
    real one (``KUBECONFIG``) when ``None``. Every nginx configuration the coordinator renders (in
    any hook or action) is appended to ``rendered``, for :func:`check_all_nginx`.
    """
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("search mymodel.svc.cluster.local\nnameserver 10.152.183.10\n")
    if rendered is not None:
        render = decide_module.render_nginx_config

        def recording_render(*args: Any, **kwargs: Any) -> str:
            text = render(*args, **kwargs)
            rendered.append(text)
            return text

        monkeypatch.setattr(decide_module, "render_nginx_config", recording_render)
    system_ca_bundle = tmp_path / "ca-certificates.crt"
    system_ca_bundle.write_text(_stand_in_tls_files()[Path(NginxSettings().upstream_ca_path).name])
    charm_type = coordinator_charm_type(
        kubernetes=kubernetes,
        resolv_conf=str(resolv_conf),
        system_ca_bundle=str(system_ca_bundle),
        tls_backend_check=tls_backend_check,
    )
    return testing.Context(charm_type, app_name=APP)


def context_checking_nginx(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kubernetes: FakeKubernetes | None = None
) -> Iterator[testing.Context[Any]]:
    """The body of a ``ctx`` fixture: a context, then ``nginx -t`` on all it rendered."""
    rendered: list[str] = []
    yield make_context(monkeypatch, tmp_path, kubernetes=kubernetes, rendered=rendered)
    check_all_nginx(rendered)


def check_all_nginx(rendered: Sequence[str]) -> None:
    """``nginx -t`` on every distinct configuration in ``rendered``."""
    for config in dict.fromkeys(rendered):
        check_nginx(config)


# --- Relations -------------------------------------------------------------------------------


def worker_unit_data(app: str, unit: int, *, port: int = 9090) -> dict[str, str]:
    return cluster_data.worker_unit_data(app, unit, model=MODEL.name, metrics_port=port)


def worker_app_data(*, port: int = 9090, charm: str = "mesh-worker-k8s") -> dict[str, str]:
    """A worker application databag of this protocol version (role, charm, metrics endpoint)."""
    return {
        "role": json.dumps("all"),
        "charm_name": json.dumps(charm),
        "metrics_endpoint": json.dumps({"path": "/metrics", "port": port}),
    }


def worker_relation(app: str, units: int = 1, **kwargs: Any) -> testing.Relation:
    """A current worker: application facts, and unit databags (kept for older coordinators)."""
    return testing.Relation(
        "cluster",
        remote_app_name=app,
        remote_app_data=worker_app_data(),
        remote_units_data={i: worker_unit_data(app, i) for i in range(units)},
        **kwargs,
    )


def outdated_worker_relation(app: str, units: int = 1, **kwargs: Any) -> testing.Relation:
    """An older worker: its role in the application databag, the rest only in unit databags."""
    return testing.Relation(
        "cluster",
        remote_app_name=app,
        remote_app_data=cluster_data.worker_app_data("all"),
        remote_units_data={i: worker_unit_data(app, i) for i in range(units)},
        **kwargs,
    )


MESH_LABELS = {
    "istio.io/dataplane-mode": "ambient",
    "istio.io/use-waypoint": f"{MODEL.name}-istio-beacon-k8s-waypoint",
    "istio.io/use-waypoint-namespace": MODEL.name,
}


def mesh_relation(
    *, ready: bool = True, labels: Mapping[str, str] = MESH_LABELS
) -> testing.Relation:
    data = {"labels": json.dumps(dict(labels)), "mesh_type": json.dumps("istio")} if ready else {}
    return testing.Relation("service-mesh", remote_app_name="istio-beacon", remote_app_data=data)


def loki_relation(units: int = 1) -> testing.Relation:
    return testing.Relation(
        "logging",
        remote_app_name="loki",
        remote_units_data={
            i: {
                "endpoint": json.dumps(
                    {
                        "url": f"http://loki-{i}.loki-endpoints.cos.svc.cluster.local:3100/loki/api/v1/push"
                    }
                )
            }
            for i in range(units)
        },
    )


def remote_write_relation() -> testing.Relation:
    return testing.Relation(
        "send-remote-write",
        remote_app_name="prometheus",
        remote_units_data={
            0: {
                "remote_write": json.dumps(
                    {
                        "url": "http://prometheus-0.prometheus-endpoints.cos.svc.cluster.local:9090/api/v1/write"
                    }
                )
            }
        },
    )


def tracing_relation(endpoint: str) -> testing.Relation:
    receivers = [
        {
            "protocol": {"name": "otlp_http", "type": "http"},
            "url": "http://tempo.cos.svc.cluster.local:4318",
        },
        {
            "protocol": {"name": "otlp_grpc", "type": "grpc"},
            "url": "tempo.cos.svc.cluster.local:4317",
        },
    ]
    return testing.Relation(
        endpoint, remote_app_name="tempo", remote_app_data={"receivers": json.dumps(receivers)}
    )


def metrics_relation() -> testing.Relation:
    return testing.Relation("metrics-endpoint", remote_app_name="prometheus")


def containers(*, can_connect: bool = True, nginx_running: bool = False) -> list[testing.Container]:
    return [
        testing.Container(
            "nginx",
            can_connect=can_connect,
            execs={testing.Exec(["nginx"], return_code=0)},
        ),
        testing.Container("nginx-prometheus-exporter", can_connect=can_connect),
    ]


def running_containers(etc_nginx: Path, config: str | None = None) -> list[testing.Container]:
    """Containers where nginx and the exporter already run.

    ``/etc/nginx`` is mounted from ``etc_nginx`` (created if needed), so the configuration persists
    across runs as it does in a real container; ``config``, if given, is the one already there.
    """
    etc_nginx.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (etc_nginx / "nginx.conf").write_text(config)
    return [
        testing.Container(
            "nginx",
            can_connect=True,
            layers={"nginx": ops.pebble.Layer(nginx_layer())},
            service_statuses={"nginx": ops.pebble.ServiceStatus.ACTIVE},
            mounts={"etc": testing.Mount(location="/etc/nginx", source=etc_nginx)},
            execs={testing.Exec(["nginx", "-s", "reload"])},
        ),
        testing.Container(
            "nginx-prometheus-exporter",
            can_connect=True,
            layers={"exporter": ops.pebble.Layer(exporter_layer(8081))},
            service_statuses={"nginx-prometheus-exporter": ops.pebble.ServiceStatus.ACTIVE},
        ),
    ]


def state(
    *relations: testing.RelationBase,
    leader: bool = True,
    can_connect: bool = True,
    planned_units: int = 1,
) -> testing.State:
    return testing.State(
        leader=leader,
        model=MODEL,
        relations=list(relations),
        containers=containers(can_connect=can_connect),
        planned_units=planned_units,
    )


def running_state(
    namespace: str,
    tmp_path: Path,
    *relations: testing.RelationBase,
    uuid: str = "00000000-0000-4000-8000-0000000000aa",
) -> testing.State:
    """A leader with nginx and the exporter running, in the model ``namespace`` (envtest)."""
    return testing.State(
        leader=True,
        model=testing.Model(name=namespace, uuid=uuid),
        relations=list(relations),
        containers=running_containers(tmp_path / "etc-nginx", None),
    )


def nginx_config(ctx: testing.Context[Any], out: testing.State) -> str | None:
    """The nginx configuration in the nginx container after a run, if any."""
    root = out.get_container("nginx").get_filesystem(ctx)
    path = root / NGINX_CONFIG_PATH.lstrip("/")
    return path.read_text() if path.exists() else None


def app_data(out: testing.State, endpoint: str = "cluster") -> list[dict[str, str]]:
    return [dict(r.local_app_data) for r in out.relations if r.endpoint == endpoint]


def relation(out: testing.State, endpoint: str) -> testing.RelationBase:
    (found,) = [r for r in out.relations if r.endpoint == endpoint]
    return found


# --- nginx -t --------------------------------------------------------------------------------

_CHECKED: set[str] = set()
_STAND_INS: dict[str, str] = {}
_POOLED_RE = re.compile(r"^ *(?:upstream \S+ \{|http2 on;)$", re.MULTILINE)


def _stand_in_tls_files() -> dict[str, str]:
    """A server certificate, its key and a CA made by the real openssl, once per session."""
    if not _STAND_INS:
        where = Path(tempfile.mkdtemp(prefix="tls-stand-ins-"))
        ca = make_ca(where)
        leaf = issue(ca, where, ["coordinator.test"])
        settings = NginxSettings()
        _STAND_INS.update(
            {
                Path(settings.server_cert_path).name: leaf.chain.read_text(),
                Path(settings.server_key_path).name: leaf.key.read_text(),
                Path(settings.upstream_ca_path).name: ca.pem,
            }
        )
    return _STAND_INS


def _materialize_tls_files(local: Path, tls_files: Path | None) -> None:
    """The TLS files under ``local``: the charm's (in ``tls_files``) or stand-ins."""
    local.mkdir()
    for name, stand_in in _stand_in_tls_files().items():
        written = tls_files / name if tls_files is not None else None
        text = written.read_text() if written is not None and written.exists() else stand_in
        (local / name).write_text(text)


def check_nginx(config: str, tls_files: Path | None = None) -> None:
    """Assert the real nginx accepts ``config`` (``nginx -t``); skip cleanly without nginx.

    The TLS files it names are those the charm wrote, in ``tls_files`` (the host directory of
    the nginx container's ``NginxSettings.tls_dir`` in ops.testing), or else stand-ins made by
    openssl: ``nginx -t`` loads them (and checks that the key matches the certificate).

    A pooled rendering (``NginxSettings.upstream_resolve``, what the reference coordinator
    renders for its nginx 1.28 image) is checked by nginx >= 1.27.3, the others by Debian's 1.22.
    """
    digest = hashlib.sha256(config.encode()).hexdigest()
    if digest in _CHECKED and tls_files is None:
        return
    pooled = _POOLED_RE.search(config) is not None
    nginx = require_nginx_with_upstream_resolve() if pooled else require_binary("nginx")
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp)
        path = prefix / "nginx.conf"
        tls_dir = NginxSettings().tls_dir.rstrip("/")
        if f"{tls_dir}/" in config:
            # The files the charm wrote (from the container's filesystem), else stand-ins.
            local = prefix / "tls"
            _materialize_tls_files(local, tls_files)
            config = config.replace(f"{tls_dir}/", f"{local}/")
        path.write_text(config)
        result = subprocess.run(
            [nginx, "-t", "-q", "-e", "stderr", "-p", f"{prefix}/", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 0, (
        f"nginx -t rejected the configuration:\n{result.stderr}\n{config}"
    )
    _CHECKED.add(digest)


def iter_errors() -> Iterator[KubernetesError]:
    yield ForbiddenError(
        "Kubernetes API access denied for coord: run `juju trust coord --scope=cluster`", status=403
    )
    yield CRDMissingError("the Kubernetes API does not serve AuthorizationPolicy", status=404)
    yield KubernetesError("Kubernetes API error 500: boom", status=500)
