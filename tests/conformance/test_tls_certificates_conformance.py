"""Our ServerCertificates against the real provider side of ``tls-certificates`` (v4).

The provider is the real ``TLSCertificatesProvidesV4`` signing as the self-signed-certificates
charm does (:mod:`tests.support.certificates_provider`). Each side runs in its own
``ops.testing`` context; the databag one side writes is what the other side reads. Real
``openssl verify`` checks what we read.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ops
import pytest
from charmlibs.interfaces import tls_certificates as tls
from coordinated_mesh.parse import Problem
from coordinated_mesh.relations.certificates import (
    WAITING,
    ServerCertificate,
    ServerCertificates,
    certificate_common_name,
    certificate_covers,
    is_waiting,
    request_names,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from ops import testing
from scenario import mocking

from tests.support.binaries import require_binary
from tests.support.certificates_provider import ISSUER, PROVIDER, issue

APP = "coord"
MODEL = "mymodel"
SERVICE = f"{APP}.{MODEL}.svc.cluster.local"
UNIT_FQDN = f"{APP}-0.{APP}-endpoints.{MODEL}.svc.cluster.local"

REQUIRER_META: dict[str, Any] = {
    "name": APP,
    "requires": {"certificates": {"interface": "tls-certificates", "limit": 1}},
}


class RequirerCharm(ops.CharmBase):
    """A minimal charm with our wrapper (the coordinator passes its names the same way)."""

    names: tuple[str, ...] = (SERVICE, UNIT_FQDN)

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.certificates = ServerCertificates(self, names=lambda: type(self).names)


def requirer_context() -> testing.Context[RequirerCharm]:
    return testing.Context(RequirerCharm, meta=REQUIRER_META, app_name=APP, unit_id=0)


def our_relation(state: testing.State | None = None, **changes: Any) -> testing.Relation:
    if state is not None:
        changes = {"local_unit_data": dict(state.get_relation(1).local_unit_data), **changes}
    return testing.Relation(
        "certificates",
        interface="tls-certificates",
        remote_app_name=PROVIDER,
        id=1,
        **changes,
    )


def request_csr(leader: bool = True) -> testing.State:
    """Our unit joins: the library generates the key (a unit secret) and writes the CSR."""
    state = testing.State(leader=leader, relations={our_relation()}, model=testing.Model(MODEL))
    return requirer_context().run(requirer_context().on.relation_created(our_relation()), state)


def take(
    requested: testing.State, provider_data: dict[str, str], event: str = "changed"
) -> tuple[ServerCertificate | None, list[Problem], testing.State, list[str]]:
    """Our unit sees the provider's answer; returns what ``read`` gives, the state, the logs."""
    relation = our_relation(requested, remote_app_data=provider_data)
    state = testing.State(
        leader=requested.leader,
        relations={relation},
        secrets=requested.secrets,
        model=testing.Model(MODEL),
    )
    ctx = requirer_context()
    hook = (
        ctx.on.relation_changed(relation, remote_unit=0)
        if event == "changed"
        else ctx.on.update_status()
    )
    with ctx(hook, state) as manager:
        out = manager.run()
        certificate, problems = manager.charm.certificates.read(SERVICE)
    return certificate, problems, out, [log.message for log in ctx.juju_log]


@pytest.fixture
def requested() -> testing.State:
    return request_csr()


def _csr_of(state: testing.State) -> tls.CertificateSigningRequest:
    requests = json.loads(state.get_relation(1).local_unit_data["certificate_signing_requests"])
    assert len(requests) == 1
    return tls.CertificateSigningRequest.from_string(requests[0]["certificate_signing_request"])


def test_our_csr_asks_for_our_names_with_a_key_in_a_unit_secret(requested: testing.State):
    csr = _csr_of(requested)
    assert csr.sans_dns == {SERVICE, UNIT_FQDN}
    assert csr.common_name == SERVICE
    assert csr.has_unique_identifier
    (secret,) = requested.secrets
    assert secret.owner == "unit"
    key = tls.PrivateKey.from_string(secret.tracked_content["private-key"])
    assert csr.matches_private_key(key)
    # The private key is in the unit's secret only: not in any databag.
    for relation in requested.relations:
        assert "PRIVATE KEY" not in json.dumps(
            [dict(relation.local_unit_data), dict(relation.local_app_data)]
        )


def test_the_real_provider_issues_our_request_and_we_take_it(
    requested: testing.State, tmp_path: Path
):
    certificate, problems, out, logs = take(
        requested, issue(dict(requested.get_relation(1).local_unit_data))
    )
    assert problems == []
    assert certificate is not None
    assert certificate.dns_names == tuple(sorted([SERVICE, UNIT_FQDN]))
    assert certificate.ca == str(ISSUER.ca).strip() + "\n"
    assert certificate.chain == certificate.certificate  # the CA is not in the chain
    leaf = x509.load_pem_x509_certificate(certificate.certificate.encode())
    key = serialization.load_pem_private_key(certificate.private_key.encode(), password=None)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    assert certificate.expiry == leaf.not_valid_after_utc
    # Never shown: not by repr, not in a log line, not in relation data.
    assert "PRIVATE" not in repr(certificate) and "PRIVATE" not in str(certificate)
    assert not any("PRIVATE KEY" in line for line in logs)
    for relation in out.relations:
        assert "PRIVATE KEY" not in json.dumps(dict(relation.local_unit_data))
    # Real OpenSSL agrees: the chain verifies against the CA for the Service name.
    openssl = require_binary("openssl")
    (tmp_path / "ca.pem").write_text(certificate.ca)
    (tmp_path / "chain.pem").write_text(certificate.chain)
    for name, ok in [
        (SERVICE, True),
        (UNIT_FQDN, True),
        (f"other.{MODEL}.svc.cluster.local", False),
    ]:
        result = subprocess.run(
            [
                openssl,
                "verify",
                "-CAfile",
                tmp_path / "ca.pem",
                "-verify_hostname",
                name,
                tmp_path / "chain.pem",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (result.returncode == 0) is ok, result.stdout + result.stderr


def test_before_the_provider_answers_we_wait(requested: testing.State):
    certificate, problems, _, _ = take(requested, {}, event="update-status")
    assert certificate is None
    assert problems == [Problem("certificates", f"{APP}/0", WAITING)]
    assert all(is_waiting(p) for p in problems)


def test_a_certificate_not_covering_the_service_name_is_refused(requested: testing.State):
    def other_names(csr: tls.CertificateSigningRequest) -> tls.Certificate:
        # A provider that ignores our SANs: our public key, someone else's name.
        now = datetime.now(UTC)
        ca_key: Any = serialization.load_pem_private_key(str(ISSUER.key).encode(), password=None)
        built = (
            x509.CertificateBuilder()
            .subject_name(csr._csr.subject)
            .issuer_name(ISSUER.ca._cert.subject)
            .public_key(csr._csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("elsewhere.example")]), False)
            .sign(ca_key, hashes.SHA256())
        )
        return tls.Certificate(x509_object=built)

    ISSUER.override = other_names
    try:
        certificate, problems, _, _ = take(
            requested, issue(dict(requested.get_relation(1).local_unit_data))
        )
    finally:
        ISSUER.override = None
    assert certificate is None
    assert problems == [
        Problem(
            "certificates", PROVIDER, f"the certificate covers elsewhere.example, not {SERVICE}"
        )
    ]
    assert not is_waiting(problems[0])


def test_a_name_we_did_not_request_is_refused(requested: testing.State):
    provider_data = issue(dict(requested.get_relation(1).local_unit_data))
    relation = our_relation(requested, remote_app_data=provider_data)
    state = testing.State(
        relations={relation}, secrets=requested.secrets, model=testing.Model(MODEL)
    )
    ctx = requirer_context()
    with ctx(ctx.on.update_status(), state) as manager:
        manager.run()
        certificate, problems = manager.charm.certificates.read(
            f"renamed.{MODEL}.svc.cluster.local"
        )
    assert certificate is None
    assert [p.reason for p in problems] == [
        f"the certificate covers {', '.join(sorted([SERVICE, UNIT_FQDN]))}, "
        f"not renamed.{MODEL}.svc.cluster.local"
    ]


def test_an_expired_certificate_is_refused(requested: testing.State):
    provider_data = issue(dict(requested.get_relation(1).local_unit_data))
    relation = our_relation(requested, remote_app_data=provider_data)
    state = testing.State(
        relations={relation}, secrets=requested.secrets, model=testing.Model(MODEL)
    )
    ctx = requirer_context()
    with ctx(ctx.on.update_status(), state) as manager:
        manager.run()
        wrapper = manager.charm.certificates
        wrapper._now = lambda: datetime.now(UTC) + timedelta(days=91)
        certificate, problems = wrapper.read(SERVICE)
    assert certificate is None
    assert len(problems) == 1
    assert problems[0].reason.startswith("the certificate is valid from ")
    assert problems[0].reason.endswith(", not now")


def test_a_refused_request_is_a_problem_naming_the_provider(requested: testing.State):
    csr = _csr_of(requested)
    error = {"csr": str(csr), "error": {"code": 101, "name": "IP_NOT_ALLOWED", "message": "no"}}
    _, problems, _, _ = take(
        requested, {"request_errors": json.dumps([error])}, event="update-status"
    )
    assert problems == [Problem("certificates", PROVIDER, "the provider refused our request: no")]


@pytest.mark.parametrize(
    "provider_data",
    [
        {"certificates": "not json"},
        {
            "certificates": json.dumps(
                [{"certificate": "junk", "ca": "junk", "certificate_signing_request": "junk"}]
            )
        },
        {"certificates": json.dumps([{"certificate": 1}])},
    ],
)
def test_malformed_provider_data_is_waiting_not_a_crash(
    requested: testing.State, provider_data: dict[str, str]
):
    # In relation-changed (the library's own handler runs) and on any other hook.
    for event in ("changed", "update-status"):
        certificate, problems, _, _ = take(requested, provider_data, event=event)
        assert certificate is None
        assert problems == [Problem("certificates", f"{APP}/0", WAITING)]


def test_relation_removed_gives_none_and_cleans_the_secrets(requested: testing.State):
    provider_data = issue(dict(requested.get_relation(1).local_unit_data))
    _, _, taken, _ = take(requested, provider_data)
    assert len(taken.secrets) == 2  # the private key and the certificate
    relation = our_relation(taken, remote_app_data=provider_data)
    state = testing.State(relations={relation}, secrets=taken.secrets, model=testing.Model(MODEL))
    ctx = requirer_context()
    with ctx(ctx.on.relation_broken(relation), state) as manager:
        out = manager.run()
        assert manager.charm.certificates.requirer is not None  # built for the library's clean-up
        assert manager.charm.certificates.read(SERVICE) == (None, [])
    assert {s.label for s in out.secrets} <= {s.label for s in taken.secrets}
    assert not any("private-key" in (s.label or "") for s in out.secrets)
    # The next hook, without the relation: nothing built, nothing read.
    with ctx(ctx.on.update_status(), testing.State(model=testing.Model(MODEL))) as manager:
        manager.run()
        assert manager.charm.certificates.requirer is None
        assert manager.charm.certificates.related is False
        assert manager.charm.certificates.read(SERVICE) == (None, [])


# --- Pure parts -------------------------------------------------------------------------------


def test_common_name_fits_64_characters():
    assert certificate_common_name([SERVICE, UNIT_FQDN], APP) == SERVICE
    long_app = "a" * 40
    names = request_names([f"{long_app}.{'m' * 30}.svc.cluster.local"])
    assert certificate_common_name(names, long_app) == long_app
    # The library builds the CSR with it (a longer common name would fail).
    attributes = tls.CertificateRequestAttributes(common_name=long_app, sans_dns=names)
    assert attributes.generate_csr(tls.PrivateKey.generate()).sans_dns == set(names)


def test_request_names_refuses_what_is_not_a_dns_name():
    assert request_names([SERVICE, SERVICE, UNIT_FQDN]) == (SERVICE, UNIT_FQDN)
    for bad in [[], ["Upper.example"], ["a..b"], ["x" * 254]]:
        with pytest.raises(ValueError):
            request_names(bad)


def test_covers_matches_exactly_or_one_wildcard_label():
    assert certificate_covers([SERVICE], SERVICE.upper())
    assert certificate_covers([f"*.{MODEL}.svc.cluster.local"], SERVICE)
    assert not certificate_covers(
        [f"*.{MODEL}.svc.cluster.local"], UNIT_FQDN.replace("-endpoints", ".x")
    )
    assert not certificate_covers(["*.svc.cluster.local"], SERVICE)
    assert not certificate_covers([], SERVICE)


# --- Hook-tool calls ----------------------------------------------------------------------------


@pytest.fixture
def hook_tool_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every call ops makes to the model backend: one hook-tool run each under Juju."""
    calls: list[str] = []
    backend: Any = mocking._MockModelBackend
    for name in dir(backend):
        method = getattr(backend, name)
        if name.startswith("_") or not callable(method) or name in {"_run", "_prepare_model"}:
            continue

        def counted(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(backend, name, counted)
    yield calls


def test_hook_tool_calls_with_the_relation(requested: testing.State, hook_tool_calls: list[str]):
    provider_data = issue(dict(requested.get_relation(1).local_unit_data))
    hook_tool_calls.clear()
    _, _, taken, _ = take(requested, provider_data)
    changed = list(hook_tool_calls)
    hook_tool_calls.clear()
    certificate, _, _, _ = take(taken, provider_data, event="update-status")
    steady = list(hook_tool_calls)
    assert certificate is not None
    print(f"relation-changed: {len(changed)} {sorted(changed)}")
    print(f"update-status: {len(steady)} {sorted(steady)}")
    # Figures measured with charmlibs-interfaces-tls-certificates 1.12.0 (docs/reference).
    assert len(steady) <= 12
    assert len(changed) <= 30
