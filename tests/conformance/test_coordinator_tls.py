"""The coordinator charm with the real ``tls-certificates`` provider: TLS on, renewed, refused, off.

Our coordinator (the reference charm, under ``ops.testing``) requests its certificate; the real
provider library (:mod:`tests.support.certificates_provider`) issues it; the coordinator then
serves it: the key (0600), chain and CA land in the nginx container, nginx (the real one, ``nginx
-t`` on the very files) serves TLS on 8443 beside plain 8080, every URL handed to the workers and
to Prometheus is ``https`` with the CA, and one reload applies it. A pending renewal keeps what
is served; a certificate not covering the Service name is refused with a status; removing the
relation switches everything back to plain HTTP in one hook and removes the key.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ops
import pytest
import yaml
from charmlibs.interfaces import tls_certificates as tls
from coordinated_mesh.proxy.nginx import NginxSettings
from coordinated_mesh.relations.cluster import CoordinatorAppData
from coordinated_mesh.worker.trust import CA_PATH
from ops import testing

from tests.support.certificates_provider import ISSUER, PROVIDER, issue
from tests.support.coordinator import (
    APP,
    MODEL,
    FakeKubernetes,
    check_nginx,
    loki_relation,
    make_context,
    metrics_relation,
    nginx_config,
    remote_write_relation,
    running_containers,
    worker_relation,
)
from tests.support.worker import FakeLabels, worker_context

Ctx = testing.Context[Any]
SERVICE = f"{APP}.{MODEL.name}.svc.cluster.local"
SETTINGS = NginxSettings()


def certificates_relation(**changes: Any) -> testing.Relation:
    return testing.Relation(
        "certificates", interface="tls-certificates", remote_app_name=PROVIDER, **changes
    )


@pytest.fixture
def ctx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Ctx]:
    yield make_context(monkeypatch, tmp_path, kubernetes=FakeKubernetes())


@pytest.fixture
def etc_nginx(tmp_path: Path) -> Path:
    return tmp_path / "etc-nginx"


def base(etc_nginx: Path, *relations: testing.RelationBase, **changes: Any) -> testing.State:
    return testing.State(
        leader=True,
        model=MODEL,
        relations=[
            worker_relation("worker"),
            loki_relation(),
            remote_write_relation(),
            metrics_relation(),
            *relations,
        ],
        containers=running_containers(etc_nginx),
        **changes,
    )


def tls_file(etc_nginx: Path, path: str) -> Path:
    return etc_nginx / Path(path).relative_to("/etc/nginx")


def reloads(ctx: Ctx) -> int:
    return sum(
        1 for e in ctx.exec_history.get("nginx", []) if e.command == ["nginx", "-s", "reload"]
    )


def serve_tls(ctx: Ctx, etc_nginx: Path) -> tuple[testing.State, testing.Relation]:
    """Join, request, get issued: the state after the hook that takes the certificate."""
    relation = certificates_relation()
    out = ctx.run(ctx.on.relation_created(relation), base(etc_nginx, relation))
    requested = out.get_relation(relation.id)
    provider_data = issue(dict(requested.local_unit_data), requirer_app=APP)
    issued = certificates_relation(
        id=relation.id,
        local_unit_data=dict(requested.local_unit_data),
        remote_app_data=provider_data,
    )
    state = base(etc_nginx, issued, secrets=out.secrets)
    return ctx.run(ctx.on.relation_changed(issued, remote_unit=0), state), issued


def cluster_data(out: testing.State) -> CoordinatorAppData:
    (relation,) = [r for r in out.relations if r.endpoint == "cluster"]
    return CoordinatorAppData.load(relation.local_app_data)


def scrape_jobs(out: testing.State) -> list[dict[str, Any]]:
    (relation,) = [r for r in out.relations if r.endpoint == "metrics-endpoint"]
    return json.loads(relation.local_app_data["scrape_jobs"])


def test_without_the_relation_nothing_is_tls(ctx: Ctx, etc_nginx: Path):
    out = ctx.run(ctx.on.config_changed(), base(etc_nginx))
    config = nginx_config(ctx, out)
    assert config is not None and " ssl" not in config
    assert cluster_data(out).ca_cert is None
    assert not tls_file(etc_nginx, SETTINGS.server_key_path).exists()
    # No TLS backend either: no trust file to write (nginx would not read it).
    assert not tls_file(etc_nginx, SETTINGS.upstream_ca_path).exists()
    assert "TLS" not in out.unit_status.message


def test_waiting_for_the_certificate_says_so_and_stays_plain(ctx: Ctx, etc_nginx: Path):
    relation = certificates_relation()
    out = ctx.run(ctx.on.relation_created(relation), base(etc_nginx, relation))
    assert out.unit_status == ops.WaitingStatus(
        "waiting for a certificate on certificates (serving plain HTTP meanwhile)"
    )
    assert cluster_data(out).ca_cert is None
    assert "PRIVATE KEY" not in json.dumps([dict(r.local_unit_data) for r in out.relations])


def test_the_issued_certificate_is_served_and_every_url_switches(ctx: Ctx, etc_nginx: Path):
    before = reloads(ctx)
    out, _ = serve_tls(ctx, etc_nginx)
    key = tls_file(etc_nginx, SETTINGS.server_key_path)
    chain = tls_file(etc_nginx, SETTINGS.server_cert_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key.read_text()
    assert tls.Certificate.from_string(chain.read_text()).sans_dns == {
        SERVICE,
        f"{APP}-0.{APP}-endpoints.{MODEL.name}.svc.cluster.local",
    }
    config = nginx_config(ctx, out)
    assert config is not None and "listen 8443 ssl;" in config and "listen 8080;" in config
    tls_dir = tls_file(etc_nginx, SETTINGS.server_key_path).parent
    check_nginx(config, tls_files=tls_dir)
    # The real nginx loads the very key and chain the charm wrote, and they match.
    assert "PRIVATE KEY" in (tls_dir / Path(SETTINGS.server_key_path).name).read_text()
    data = cluster_data(out)
    assert data.ca_cert == str(ISSUER.ca).strip() + "\n"
    assert data.loki_endpoints and all(
        url.startswith(f"https://{SERVICE}:8443/") for url in data.loki_endpoints.values()
    )
    (job,) = [j for j in scrape_jobs(out) if j["job_name"].startswith("workers-")]
    assert job["scheme"] == "https" and job["tls_config"] == {"ca_file": data.ca_cert}
    assert isinstance(out.unit_status, ops.ActiveStatus) and "TLS until" in out.unit_status.message
    assert {p.port for p in out.opened_ports} == {4317, 8080, 8443, 9113}
    assert reloads(ctx) - before >= 1
    # The key is nowhere but in the nginx container (and the unit's own secret).
    assert "PRIVATE KEY" not in json.dumps([dict(r.local_unit_data) for r in out.relations])
    assert "PRIVATE KEY" not in json.dumps([dict(r.local_app_data) for r in out.relations])
    assert not any("PRIVATE KEY" in log.message for log in ctx.juju_log)


def test_an_unchanged_certificate_writes_and_reloads_nothing(ctx: Ctx, etc_nginx: Path):
    out, _ = serve_tls(ctx, etc_nginx)
    files = {p: p.stat().st_mtime_ns for p in etc_nginx.rglob("*") if p.is_file()}
    before = reloads(ctx)
    again = ctx.run(ctx.on.update_status(), out)
    assert {p: p.stat().st_mtime_ns for p in etc_nginx.rglob("*") if p.is_file()} == files
    assert reloads(ctx) == before
    assert cluster_data(again) == cluster_data(out)


def test_a_pending_renewal_keeps_serving_the_certificate(ctx: Ctx, etc_nginx: Path):
    out, issued = serve_tls(ctx, etc_nginx)
    served = tls_file(etc_nginx, SETTINGS.server_cert_path).read_text()
    # The library asked for a renewal: the provider no longer lists a certificate for us yet.
    pending = certificates_relation(
        id=issued.id,
        local_unit_data=dict(out.get_relation(issued.id).local_unit_data),
        remote_app_data={"certificates": "[]"},
    )
    state = base(etc_nginx, pending, secrets=out.secrets)
    renewing = ctx.run(ctx.on.relation_changed(pending, remote_unit=0), state)
    assert tls_file(etc_nginx, SETTINGS.server_cert_path).read_text() == served
    assert cluster_data(renewing).ca_cert == cluster_data(out).ca_cert
    config = nginx_config(ctx, renewing)
    assert config is not None and "listen 8443 ssl;" in config


def test_removing_the_relation_switches_back_in_one_hook(ctx: Ctx, etc_nginx: Path):
    out, issued = serve_tls(ctx, etc_nginx)
    gone = ctx.run(ctx.on.relation_broken(issued), base(etc_nginx, issued, secrets=out.secrets))
    config = nginx_config(ctx, gone)
    assert config is not None and " ssl" not in config
    data = cluster_data(gone)
    assert data.ca_cert is None
    assert data.loki_endpoints and all(
        url.startswith(f"http://{SERVICE}:8080/") for url in data.loki_endpoints.values()
    )
    (job,) = [j for j in scrape_jobs(gone) if j["job_name"].startswith("workers-")]
    assert "scheme" not in job and "tls_config" not in job
    assert not tls_file(etc_nginx, SETTINGS.server_key_path).exists()
    assert not tls_file(etc_nginx, SETTINGS.server_cert_path).exists()
    assert {p.port for p in gone.opened_ports} == {4317, 8080, 9113}


def test_a_certificate_for_other_names_is_refused_with_a_status(ctx: Ctx, etc_nginx: Path):
    def other_names(csr: tls.CertificateSigningRequest) -> tls.Certificate:
        elsewhere = tls.CertificateRequestAttributes(
            common_name="elsewhere.example", sans_dns=frozenset({"elsewhere.example"})
        ).generate_csr(tls.PrivateKey.generate())
        signed = tls.Certificate.generate(
            csr=elsewhere, ca=ISSUER.ca, ca_private_key=ISSUER.key, validity=_days(30)
        )
        return signed

    ISSUER.override = other_names
    try:
        out, _ = serve_tls(ctx, etc_nginx)
    finally:
        ISSUER.override = None
    assert isinstance(out.unit_status, ops.BlockedStatus)
    assert "certificates" in out.unit_status.message
    assert cluster_data(out).ca_cert is None
    assert not tls_file(etc_nginx, SETTINGS.server_key_path).exists()


def _days(n: int) -> Any:
    from datetime import timedelta

    return timedelta(days=n)


def https_loki() -> testing.Relation:
    url = "https://loki-0.loki-endpoints.cos.svc.cluster.local:3100/loki/api/v1/push"
    return testing.Relation(
        "logging",
        remote_app_name="loki",
        remote_units_data={0: {"endpoint": json.dumps({"url": url})}},
    )


def test_a_tls_backend_failing_verification_is_named_checked_on_change_and_update_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    calls: list[tuple[str, int, str | None]] = []
    verdict: list[str | None] = ["certificate not accepted: unable to get local issuer certificate"]

    def check(host: str, port: int, *, server_name: str, trusted_pem: str | None, **_: Any):
        calls.append((host, port, server_name))
        assert trusted_pem  # the same trust nginx gets (here: the test system bundle)
        return f"{host}:{port}: {verdict[0]}" if verdict[0] else None

    ctx = make_context(monkeypatch, tmp_path, kubernetes=FakeKubernetes(), tls_backend_check=check)
    st = testing.State(
        leader=True,
        model=MODEL,
        relations=[worker_relation("worker"), https_loki()],
        containers=running_containers(tmp_path / "etc-nginx"),
    )
    out = ctx.run(ctx.on.config_changed(), st)
    host = "loki-0.loki-endpoints.cos.svc.cluster.local"
    assert calls == [(host, 3100, host)]
    trust_file = tmp_path / "etc-nginx" / Path(SETTINGS.upstream_ca_path).relative_to("/etc/nginx")
    assert "BEGIN CERTIFICATE" in trust_file.read_text()  # what nginx verifies Loki with
    assert isinstance(out.unit_status, ops.BlockedStatus)
    assert out.unit_status.message.startswith(
        f"telemetry proxy: TLS backend refused, its requests get 502: {host}:3100: "
    )
    # Nothing changed: not checked again, the verdict is shown again.
    out = ctx.run(ctx.on.config_changed(), out)
    assert len(calls) == 1 and isinstance(out.unit_status, ops.BlockedStatus)
    # The periodic check looks again; the backend was fixed meanwhile.
    verdict[0] = None
    out = ctx.run(ctx.on.update_status(), out)
    assert len(calls) == 2
    assert isinstance(out.unit_status, ops.ActiveStatus)


def test_the_worker_trusts_what_the_coordinator_serves(ctx: Ctx, etc_nginx: Path, tmp_path: Path):
    """Coordinator data with TLS, fed to the real worker charm: CA trusted, https everywhere."""
    out, _ = serve_tls(ctx, etc_nginx)
    (cluster,) = [r for r in out.relations if r.endpoint == "cluster"]
    for_workers = dict(cluster.local_app_data)
    etc = tmp_path / "etc-prometheus"
    etc.mkdir()
    worker_ctx = worker_context(FakeLabels(), app_name="worker")
    worker = worker_ctx.run(
        worker_ctx.on.config_changed(),
        testing.State(
            leader=True,
            model=MODEL,
            config={"role": "all"},
            relations=[
                testing.Relation("cluster", remote_app_name=APP, remote_app_data=for_workers)
            ],
            containers=[
                testing.Container(
                    "prometheus",
                    can_connect=True,
                    mounts={"config": testing.Mount(location="/etc/prometheus", source=etc)},
                )
            ],
        ),
    )
    assert worker.unit_status.name == "active", worker.unit_status
    root = worker.get_container("prometheus").get_filesystem(worker_ctx)
    trusted = root / CA_PATH.lstrip("/")
    assert trusted.read_text() == str(ISSUER.ca).strip() + "\n"
    layer = worker.get_container("prometheus").layers
    targets = [t for lay in layer.values() for t in lay.to_dict().get("log-targets", {}).values()]
    assert targets and all(
        str(t.get("location")).startswith(f"https://{SERVICE}:8443/") for t in targets
    )
    prometheus_yml = yaml.safe_load((etc / "prometheus.yml").read_text())
    (remote_write,) = prometheus_yml["remote_write"]
    assert remote_write["url"].startswith(f"https://{SERVICE}:8443/proxy/remote-write/")
    assert remote_write["tls_config"] == {"ca_file": CA_PATH}


def test_show_mesh_says_which_names_the_certificate_covers_and_until_when(
    ctx: Ctx, etc_nginx: Path
):
    out, _ = serve_tls(ctx, etc_nginx)
    ctx.run(ctx.on.action("show-mesh"), out)
    assert ctx.action_results is not None
    tls_info = json.loads(ctx.action_results["tls"])
    chain = tls.Certificate.from_string(tls_file(etc_nginx, SETTINGS.server_cert_path).read_text())
    assert tls_info == {
        "related": True,
        "served": True,
        "names": sorted(chain.sans_dns or ()),
        "expiry": chain.expiry_time.isoformat(),
        "renewal-pending": False,
        "trusted-cas": 0,
    }
    assert any(line.startswith("tls: ") for line in ctx.action_logs)


def test_a_refused_renewal_keeps_serving_the_valid_certificate(ctx: Ctx, etc_nginx: Path):
    """Nothing applied is lost: a bad new certificate is refused, the served one stays."""
    out, issued = serve_tls(ctx, etc_nginx)
    served = tls_file(etc_nginx, SETTINGS.server_cert_path).read_text()
    ca_before = cluster_data(out).ca_cert

    def other_names(csr: tls.CertificateSigningRequest) -> tls.Certificate:
        elsewhere = tls.CertificateRequestAttributes(
            common_name="elsewhere.example", sans_dns=frozenset({"elsewhere.example"})
        ).generate_csr(tls.PrivateKey.generate())
        return tls.Certificate.generate(
            csr=elsewhere, ca=ISSUER.ca, ca_private_key=ISSUER.key, validity=_days(30)
        )

    ISSUER.override = other_names
    try:
        provider_data = issue(dict(out.get_relation(issued.id).local_unit_data), requirer_app=APP)
    finally:
        ISSUER.override = None
    renewed = certificates_relation(
        id=issued.id,
        local_unit_data=dict(out.get_relation(issued.id).local_unit_data),
        remote_app_data=provider_data,
    )
    after = ctx.run(
        ctx.on.relation_changed(renewed, remote_unit=0),
        base(etc_nginx, renewed, secrets=out.secrets),
    )
    assert isinstance(after.unit_status, ops.BlockedStatus)
    assert "certificates" in after.unit_status.message
    assert tls_file(etc_nginx, SETTINGS.server_cert_path).read_text() == served
    assert cluster_data(after).ca_cert == ca_before
    config = nginx_config(ctx, after)
    assert config is not None and "listen 8443 ssl;" in config
