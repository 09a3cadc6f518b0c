"""Our TrustedCas against the real provider side of ``certificate_transfer``.

The provider is the real ``charmlibs.interfaces.certificate_transfer.CertificateTransferProvides``
(what self-signed-certificates sends its CA with, ``_send_ca_cert``), in a small charm that
publishes a CA when related. Each side runs in its own ``ops.testing`` context; the databag one
side writes is what the other side reads.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import ops
import pytest
from charmlibs.interfaces import tls_certificates as tls
from charmlibs.interfaces.certificate_transfer import CertificateTransferProvides
from coordinated_mesh.parse import Problem, parse_pem_certificates
from coordinated_mesh.relations.certificate_transfer import (
    MAX_TRUSTED_CAS,
    TrustedCas,
    parse_trusted_cas,
)
from ops import testing

APP = "coord"
PROVIDER = "ca-provider"
META: dict[str, Any] = {
    "name": APP,
    "requires": {"receive-ca-cert": {"interface": "certificate_transfer"}},
}
PROVIDER_META: dict[str, Any] = {
    "name": PROVIDER,
    "provides": {"send-ca-cert": {"interface": "certificate_transfer"}},
}


def _ca(name: str) -> str:
    certificate = tls.Certificate.generate_self_signed_ca(
        tls.CertificateRequestAttributes(common_name=name, is_ca=True),
        tls.PrivateKey.generate(),
        timedelta(days=30),
    )
    return str(certificate)


CA_1 = _ca("ca-one")
CA_2 = _ca("ca-two")


class OurCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.cas = TrustedCas(self)


class ProviderCharm(ops.CharmBase):
    """Publishes ``cas`` to every requirer, as a CA-sending charm does on relation-joined."""

    cas: frozenset[str] = frozenset({CA_1})

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.transfer = CertificateTransferProvides(self, "send-ca-cert")
        framework.observe(self.on["send-ca-cert"].relation_joined, self._send)

    def _send(self, event: ops.RelationJoinedEvent) -> None:
        self.transfer.add_certificates(set(type(self).cas), relation_id=event.relation.id)


def our_context() -> testing.Context[OurCharm]:
    return testing.Context(OurCharm, meta=META, app_name=APP)


def provide(our_app_data: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The provider joins; returns its application and unit databags."""
    relation = testing.Relation(
        "send-ca-cert", remote_app_name=APP, id=5, remote_app_data=our_app_data
    )
    ctx = testing.Context(ProviderCharm, meta=PROVIDER_META, app_name=PROVIDER)
    out = ctx.run(
        ctx.on.relation_joined(relation, remote_unit=0),
        testing.State(leader=True, relations={relation}),
    )
    published = out.get_relation(5)
    return dict(published.local_app_data), dict(published.local_unit_data)


def read(*relations: testing.Relation) -> tuple[tuple[str, ...], list[Problem]]:
    ctx = our_context()
    with ctx(
        ctx.on.relation_changed(relations[0], remote_unit=0),
        testing.State(leader=True, relations=set(relations)),
    ) as manager:
        manager.run()
        return manager.charm.cas.read()


def test_we_ask_for_v1_and_take_the_ca_the_real_provider_sends():
    relation = testing.Relation("receive-ca-cert", remote_app_name=PROVIDER, id=1)
    ctx = our_context()
    created = ctx.run(
        ctx.on.relation_created(relation), testing.State(leader=True, relations={relation})
    )
    our_app_data = dict(created.get_relation(1).local_app_data)
    assert our_app_data == {"version": "1"}
    app_data, unit_data = provide(our_app_data)
    assert "chain" not in unit_data  # v1: the application databag only
    cas, problems = read(
        testing.Relation(
            "receive-ca-cert", remote_app_name=PROVIDER, id=1, remote_app_data=app_data
        )
    )
    assert problems == []
    assert cas == (parse_pem_certificates(CA_1),)


def test_a_v0_provider_is_read_too():
    app_data, unit_data = provide({})  # a requirer that did not say v1
    assert "chain" in unit_data  # v0: the unit databag holds the chain
    relation = testing.Relation(
        "receive-ca-cert",
        remote_app_name=PROVIDER,
        id=1,
        remote_app_data=app_data,
        remote_units_data={0: unit_data},
    )
    cas, problems = read(relation)
    assert (cas, problems) == ((parse_pem_certificates(CA_1),), [])


def test_cas_are_deduplicated_sorted_and_malformed_ones_dropped(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ProviderCharm, "cas", frozenset({CA_1, CA_2, "not a certificate"}))
    app_data, _ = provide({"version": "1"})
    monkeypatch.setattr(ProviderCharm, "cas", frozenset({CA_2}))
    other_data, _ = provide({"version": "1"})
    cas, problems = read(
        testing.Relation(
            "receive-ca-cert", remote_app_name=PROVIDER, id=1, remote_app_data=app_data
        ),
        testing.Relation(
            "receive-ca-cert", remote_app_name="other", id=2, remote_app_data=other_data
        ),
    )
    assert cas == tuple(sorted({parse_pem_certificates(CA_1), parse_pem_certificates(CA_2)}))
    assert [(p.endpoint, p.item) for p in problems] == [("receive-ca-cert", PROVIDER)]
    assert problems[0].reason.startswith("a CA was dropped")


def test_a_malformed_databag_is_a_problem_not_a_crash():
    relation = testing.Relation(
        "receive-ca-cert",
        remote_app_name=PROVIDER,
        id=1,
        remote_app_data={"certificates": "{bad", "version": "1"},
    )
    assert read(relation) == (
        (),
        [Problem("receive-ca-cert", PROVIDER, "the certificates are malformed")],
    )


def test_the_relation_removed_leaves_nothing_to_trust():
    app_data, _ = provide({"version": "1"})
    relation = testing.Relation(
        "receive-ca-cert", remote_app_name=PROVIDER, id=1, remote_app_data=app_data
    )
    ctx = our_context()
    with ctx(
        ctx.on.relation_broken(relation), testing.State(leader=True, relations={relation})
    ) as manager:
        manager.run()
        assert manager.charm.cas.requirer is not None
        assert manager.charm.cas.read() == ((), [])


def test_a_bundle_entry_counts_each_certificate_and_the_cap_is_a_problem():
    bundle = CA_1 + "\n" + CA_2
    cas, problems = parse_trusted_cas({"p": [bundle, CA_1]}, endpoint="receive-ca-cert", limit=1)
    assert cas == (min(parse_pem_certificates(CA_1), parse_pem_certificates(CA_2)),)
    assert problems == [
        Problem(
            "receive-ca-cert", "certificates", "2 CA certificates, only the first 1 are trusted"
        )
    ]
    assert MAX_TRUSTED_CAS >= 16
    single = parse_trusted_cas({"p": [bundle]}, endpoint="e")[0]
    assert all(
        c.count("BEGIN CERTIFICATE") == 1 and c.endswith("-----END CERTIFICATE-----\n")
        for c in single
    )
    assert all(parse_pem_certificates(c) == c for c in single)  # each in the canonical form
