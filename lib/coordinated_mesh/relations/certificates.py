"""``tls-certificates`` (v4), requirer side (``certificates``): the proxy's server certificate.

Each unit requests one certificate (``Mode.UNIT``) for the names the coordinator passes, through
the real ``charmlibs.interfaces.tls_certificates`` requirer (``TLSCertificatesRequiresV4``, the
library the self-signed-certificates charm provides with). The library generates the private key
and keeps it in a Juju secret owned by the unit (label ``<LIBID>-private-key-<unit number>-
<endpoint>``); only the CSR and, back, the certificates travel in relation data, and nothing here
logs or shows the key. The library and ``cryptography`` are imported only when the relation
exists or the hook concerns it. Wire format and behaviour: ``docs/reference/relations.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import ops

from coordinated_mesh.parse import Problem, is_dns_name, parse_pem_certificates

if TYPE_CHECKING:
    from charmlibs.interfaces.tls_certificates import (
        CertificateRequestAttributes,
        PrivateKey,
        ProviderCertificate,
        TLSCertificatesRequiresV4,
    )

__all__ = [
    "DEFAULT_ENDPOINT",
    "MAX_COMMON_NAME_LENGTH",
    "WAITING",
    "ServerCertificate",
    "ServerCertificates",
    "certificate_common_name",
    "certificate_covers",
    "is_waiting",
    "request_names",
]

DEFAULT_ENDPOINT = "certificates"

MAX_COMMON_NAME_LENGTH = 64
"""X.509's upper bound for a common name (RFC 5280, ``ub-common-name``); longer CSRs fail."""

WAITING = "waiting for a certificate"
"""The reason of the one problem :meth:`ServerCertificates.read` returns while the provider has
not answered yet: not an error (:func:`is_waiting`), the status says "waiting"."""

_SECRET_HOOKS = frozenset({"hooks/secret-expired", "hooks/secret-remove"})
"""Secret hooks the library handles (``secret_expired``: renewal of its certificate secrets;
``secret_remove``: pruning revisions nobody tracks), with or without the relation."""


def is_waiting(problem: Problem) -> bool:
    """Whether ``problem`` only says the provider has not answered yet (:data:`WAITING`)."""
    return problem.reason == WAITING


@dataclasses.dataclass(frozen=True)
class ServerCertificate:
    """A server certificate the proxy may serve: valid now, for our key, covering our name.

    Attributes:
        certificate: the leaf, PEM.
        chain: PEM, the leaf then the intermediates (not the CA): nginx's ``ssl_certificate``.
        ca: PEM bundle clients must trust (the :func:`~coordinated_mesh.parse.parse_pem_certificates`
            form).
        private_key: PEM; never shown by ``repr`` or ``str``.
        dns_names: the DNS names the certificate covers, sorted.
        expiry: when it expires (UTC).
    """

    certificate: str
    chain: str
    ca: str
    private_key: str = dataclasses.field(repr=False)
    dns_names: tuple[str, ...]
    expiry: datetime


def request_names(names: Sequence[str]) -> tuple[str, ...]:
    """The DNS names to request: deduplicated, in the order given (pure).

    Raises:
        ValueError: no names, or one is not a lower-case DNS name (the charm's bug, not remote
            data).
    """
    result: list[str] = []
    for name in names:
        if not is_dns_name(name):
            raise ValueError(f"{name!r} is not a lower-case DNS name")
        if name not in result:
            result.append(name)
    if not result:
        raise ValueError("a certificate needs at least one DNS name")
    return tuple(result)


def certificate_common_name(names: Sequence[str], app_name: str) -> str:
    """The CSR's common name: the first name that fits in 64 characters, else the app name (pure).

    A Service FQDN ``<app>.<model>.svc.<domain>`` passes 64 characters for long application and
    model names, and a CSR with a longer common name cannot be built. TLS clients verify the DNS
    SANs, not the common name, when SANs are present (RFC 6125 section 6.4.4; Go ignores the
    common name altogether), so it only has to fit; when it fits, one of the names keeps
    providers that check the common name against the SANs (ACME, Vault roles) content. The
    application name always fits: Juju application names on Kubernetes are at most 63
    characters.
    """
    for name in names:
        if len(name) <= MAX_COMMON_NAME_LENGTH:
            return name
    return app_name[:MAX_COMMON_NAME_LENGTH]


def certificate_covers(dns_names: Sequence[str], name: str) -> bool:
    """Whether a certificate for ``dns_names`` is valid for ``name`` (pure).

    An exact match (case-insensitive), or a wildcard for the whole left-most label
    (``*.mymodel.svc.cluster.local`` covers ``coord.mymodel.svc.cluster.local`` and nothing
    deeper), as clients match them (RFC 6125 section 6.4.3).
    """
    name = name.lower().rstrip(".")
    for pattern in (n.lower().rstrip(".") for n in dns_names):
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _hook_concerns(endpoint: str) -> bool:
    dispatch = os.environ.get("JUJU_DISPATCH_PATH", "")
    return dispatch.startswith(f"hooks/{endpoint}-relation-") or dispatch in _SECRET_HOOKS


def _pem(text: str) -> str:
    return parse_pem_certificates(text)


class ServerCertificates(ops.Object):
    """The unit's server certificate from the ``certificates`` relation, for the proxy.

    Constructed in the charm's ``__init__``. With the relation, or in a hook that concerns it
    (its relation hooks, ``secret-expired``, ``secret-remove``), it builds the real requirer,
    which observes its events itself: it generates the key, writes the CSR, stores the
    certificate and renews it (``secret-expired``). Otherwise it imports nothing.

    Args:
        charm: the charm.
        names: the DNS names to request, evaluated when the library builds its request; the
            coordinator passes its Service FQDN first, then the unit's FQDN. The common name is
            :func:`certificate_common_name`.
        endpoint: the relation endpoint (``limit: 1``).
        refresh_events: further events on which the library re-checks its request (when the
            names can change).
        now: the clock (UTC), for tests.
    """

    def __init__(
        self,
        charm: ops.CharmBase,
        *,
        names: Callable[[], Sequence[str]],
        endpoint: str = DEFAULT_ENDPOINT,
        refresh_events: Sequence[ops.BoundEvent] = (),
        now: Callable[[], datetime] | None = None,
    ):
        super().__init__(charm, f"server-certificates-{endpoint}")
        self._endpoint = endpoint
        self._names = names
        self._now = now or (lambda: datetime.now(UTC))
        self._requirer: TLSCertificatesRequiresV4 | None = None
        if _hook_concerns(endpoint) or self.related:
            self._requirer = self._make_requirer(charm, list(refresh_events))

    @property
    def related(self) -> bool:
        """Whether the ``certificates`` relation exists."""
        return bool(self.model.relations[self._endpoint])

    @property
    def requirer(self) -> TLSCertificatesRequiresV4 | None:
        """The library's requirer, when built (see the class docstring)."""
        return self._requirer

    def _request(self) -> CertificateRequestAttributes:
        from charmlibs.interfaces.tls_certificates import CertificateRequestAttributes

        names = request_names(self._names())
        return CertificateRequestAttributes(
            common_name=certificate_common_name(names, self.model.app.name),
            sans_dns=names,
        )

    def _make_requirer(
        self, charm: ops.CharmBase, refresh_events: list[ops.BoundEvent]
    ) -> TLSCertificatesRequiresV4:
        from charmlibs.interfaces.tls_certificates import Mode

        requirer_class = _robust_requirer_class()
        return requirer_class(
            charm,
            self._endpoint,
            certificate_requests=lambda _capabilities: [self._request()],
            mode=Mode.UNIT,
            refresh_events=refresh_events,
        )

    def read(self, required_name: str) -> tuple[ServerCertificate | None, list[Problem]]:
        """The certificate to serve, or ``None`` and why; never raises on remote data.

        ``None`` with no problem: no relation. ``None`` with the one problem :data:`WAITING`: the
        provider has not issued our request yet (also while a renewal is being issued: the
        caller keeps serving what it has). Otherwise the certificate is returned only when it
        is valid now, matches our private key, is not revoked and covers ``required_name``
        (the Service FQDN); a problem names the reason it is not.
        """
        requirer = self._requirer
        relations = sorted(self.model.relations[self._endpoint], key=lambda r: r.id)
        if requirer is None or not relations:
            return None, []
        provider = relations[0].app.name if relations[0].app else self._endpoint
        from charmlibs.interfaces.tls_certificates import TLSCertificatesError

        try:
            found = self._find(requirer, required_name)
        except (TLSCertificatesError, ValueError, TypeError, ops.ModelError) as e:
            found = f"unusable certificate data: {e}"
        if found is None:
            return None, [Problem(self._endpoint, self.model.unit.name, WAITING)]
        if isinstance(found, str):
            return None, [Problem.of(self._endpoint, provider, found)]
        return found, []

    def _find(
        self, requirer: TLSCertificatesRequiresV4, required_name: str
    ) -> ServerCertificate | str | None:
        """The certificate; or why it is refused; or ``None`` while the provider has not answered."""
        from charmlibs.interfaces.tls_certificates import CertificateRequestAttributes

        request = self._request()
        private_key = requirer.private_key
        csrs = [
            r.certificate_signing_request
            for r in requirer.get_csrs_from_requirer_relation_data()
            if CertificateRequestAttributes.from_csr(r.certificate_signing_request, r.is_ca)
            == request
        ]
        if private_key is None or not csrs:
            return None
        error = requirer.get_request_error(csrs[-1])
        if error is not None:
            return f"the provider refused our request: {error.error.message}"
        issued = [
            c
            for c in requirer.get_provider_certificates()
            if c.certificate_signing_request == csrs[-1]
        ]
        if not issued:
            return None
        refusal = _refusal(issued[-1], private_key, required_name, self._now())
        return refusal or _server_certificate(issued[-1], private_key)


def _refusal(
    issued: ProviderCertificate, private_key: PrivateKey, required_name: str, now: datetime
) -> str | None:
    """Why the issued certificate cannot be served, if it cannot."""
    certificate = issued.certificate
    names = sorted(certificate.sans_dns or ())
    if issued.revoked:
        return "the certificate was revoked by the provider"
    if certificate.is_ca:
        return "the provider issued a CA certificate, not a server certificate"
    if not certificate.matches_private_key(private_key):
        return "the certificate does not match our private key"
    if not certificate_covers(names, required_name):
        shown = ", ".join(names[:4]) or "no DNS name"
        return f"the certificate covers {shown}, not {required_name}"
    if not certificate.validity_start_time <= now < certificate.expiry_time:
        return (
            f"the certificate is valid from {certificate.validity_start_time:%Y-%m-%dT%H:%MZ} "
            f"to {certificate.expiry_time:%Y-%m-%dT%H:%MZ}, not now"
        )
    return None


def _server_certificate(issued: ProviderCertificate, private_key: PrivateKey) -> ServerCertificate:
    certificate = issued.certificate
    leaf = _pem(str(certificate))
    chain = list(issued.chain)
    if chain and str(chain[0]) != str(certificate) and str(chain[-1]) == str(certificate):
        chain.reverse()  # some providers published the chain root first
    intermediates = [
        _pem(str(c)) for c in chain if str(c) != str(certificate) and str(c) != str(issued.ca)
    ]
    return ServerCertificate(
        certificate=leaf,
        chain=leaf + "".join(intermediates),
        ca=_pem(str(issued.ca)),
        private_key=str(private_key).strip() + "\n",
        dns_names=tuple(sorted(certificate.sans_dns or ())),
        expiry=certificate.expiry_time,
    )


@functools.cache
def _robust_requirer_class() -> type[TLSCertificatesRequiresV4]:
    """``TLSCertificatesRequiresV4``, but a malformed provider certificate is skipped, not raised.

    The library parses every certificate in the provider's databag (``Certificate.from_string``)
    and raises ``TLSCertificatesError`` on the first malformed one, from its own event handlers:
    the hook would fail. This subclass drops that entry only (the others still count).
    """
    import logging

    from charmlibs.interfaces import tls_certificates
    from charmlibs.interfaces.tls_certificates import _tls_certificates as impl

    logger = logging.getLogger(__name__)

    class _Requirer(tls_certificates.TLSCertificatesRequiresV4):
        def _load_provider_certificates(self) -> list[ProviderCertificate]:
            relation = self.model.get_relation(self.relationship_name)
            if not relation or not relation.app:
                return []
            try:
                data = impl._ProviderApplicationData.load(relation.data[relation.app])
            except (impl.DataValidationError, ops.ModelError):
                logger.warning("%s: the provider's certificates are not readable", relation.name)
                return []
            certificates: list[ProviderCertificate] = []
            for index, entry in enumerate(data.certificates):
                try:
                    certificates.append(entry.to_provider_certificate(relation_id=relation.id))
                except (tls_certificates.TLSCertificatesError, ValueError, TypeError):
                    logger.warning(
                        "%s: certificates[%d] from %s is malformed; ignored",
                        relation.name,
                        index,
                        relation.app.name,
                    )
            return certificates

    return _Requirer
