"""The real provider side of ``tls-certificates`` (v4), as the self-signed-certificates charm runs it.

:class:`ProviderCharm` is the real ``charmlibs.interfaces.tls_certificates.TLSCertificatesProvidesV4``
in a small charm that signs as the self-signed-certificates charm does
(canonical/self-signed-certificates-operator ``src/charm.py``, ``_generate_root_certificate`` and
``_generate_self_signed_certificate`` at df04ad3: ``generate_private_key``, ``generate_ca``,
``generate_certificate`` for each outstanding request, published with ``set_relation_certificate``
and ``chain=[certificate, ca]``). :func:`issue` runs it in an ``ops.testing`` context on the unit
databag a requirer wrote and returns the application databag it publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import ops
from charmlibs.interfaces import tls_certificates as tls
from ops import testing

PROVIDER = "self-signed-certificates"
PROVIDER_META: dict[str, Any] = {
    "name": PROVIDER,
    "provides": {"certificates": {"interface": "tls-certificates"}},
}


class Issuer:
    """The CA, as the self-signed-certificates charm makes it (``_generate_root_certificate``)."""

    def __init__(self) -> None:
        self.key = tls.PrivateKey.generate()
        self.ca = tls.Certificate.generate_self_signed_ca(
            tls.CertificateRequestAttributes(common_name="test-ca", is_ca=True),
            self.key,
            timedelta(days=365),
        )
        self.override: Callable[[tls.CertificateSigningRequest], tls.Certificate] | None = None

    def sign(self, csr: tls.CertificateSigningRequest, is_ca: bool) -> tls.Certificate:
        if self.override is not None:
            return self.override(csr)
        return tls.Certificate.generate(
            csr=csr, ca=self.ca, ca_private_key=self.key, validity=timedelta(days=90), is_ca=is_ca
        )


ISSUER = Issuer()


class ProviderCharm(ops.CharmBase):
    """The real provider class; signs each outstanding request (``_process_outstanding_...``)."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.tls = tls.TLSCertificatesProvidesV4(self, "certificates")
        framework.observe(self.on["certificates"].relation_changed, self._issue)

    def _issue(self, _: ops.EventBase) -> None:
        for request in self.tls.get_outstanding_certificate_requests():
            certificate = ISSUER.sign(request.certificate_signing_request, request.is_ca)
            self.tls.set_relation_certificate(
                tls.ProviderCertificate(
                    relation_id=request.relation_id,
                    certificate=certificate,
                    certificate_signing_request=request.certificate_signing_request,
                    ca=ISSUER.ca,
                    chain=[certificate, ISSUER.ca],
                )
            )


def provider_context() -> testing.Context[ProviderCharm]:
    return testing.Context(ProviderCharm, meta=PROVIDER_META, app_name=PROVIDER, unit_id=0)


def issue(our_unit_data: dict[str, str], requirer_app: str = "coord") -> dict[str, str]:
    """The provider's leader sees the requirer unit's CSR and publishes the certificate."""
    relation = testing.Relation(
        "certificates",
        interface="tls-certificates",
        remote_app_name=requirer_app,
        id=7,
        remote_units_data={0: our_unit_data},
    )
    ctx = provider_context()
    out = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=0),
        testing.State(leader=True, relations={relation}),
    )
    return dict(out.get_relation(7).local_app_data)
