"""The proxy's TLS files in the nginx container: decided from the certificate and the trust.

:func:`tls_files` (pure) says what nginx reads: the server certificate chain and its private key
while TLS is served, and, while it has TLS backends, the bundle of CAs it trusts for them (the
received CAs, then the system bundle). :func:`write_tls_files` writes only what differs, the key with mode
0600, before nginx is told to reload; :func:`remove_tls_files` removes a certificate and key no
longer served, once nginx no longer reads them. Why and how: ``docs/explanation/telemetry-proxy.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import ops

from coordinated_mesh.charm.pebble import pull_text, push_if_changed
from coordinated_mesh.parse import parse_pem_certificates
from coordinated_mesh.proxy.nginx import NginxSettings
from coordinated_mesh.proxy.plan import TelemetryProxyPlan
from coordinated_mesh.proxy.tls import check_backend_tls, upstream_ca_bundle
from coordinated_mesh.relations.certificates import ServerCertificate

__all__ = [
    "SYSTEM_CA_BUNDLE",
    "TlsFile",
    "TlsState",
    "backend_checks_key",
    "check_tls_backends",
    "read_system_ca_bundle",
    "remove_tls_files",
    "served_certificate",
    "server_ca_path",
    "tls_backends",
    "tls_files",
    "write_tls_files",
]

logger = logging.getLogger(__name__)

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""The charm container's system CA bundle (Ubuntu's ``ca-certificates``), trusted for backends."""
_MAX_SYSTEM_BUNDLE = 4 * 1024 * 1024
BACKEND_CHECK_SECONDS = 2.0
"""The time one backend check may take (connect, then handshake), so a hook stays bounded."""
MAX_CHECKED_BACKENDS = 16
"""The most TLS backends checked in one hook (each costs at most two check timeouts)."""


@dataclass(frozen=True)
class TlsFile:
    """One file nginx reads: where, what, and with which mode."""

    path: str
    text: str
    permissions: int = 0o644

    def __repr__(self) -> str:  # a private key never reaches a log line or a traceback
        return f"TlsFile({self.path!r}, {len(self.text)} bytes, {oct(self.permissions)})"


def server_ca_path(settings: NginxSettings) -> str:
    """Where the served certificate's CA is kept beside it (nginx does not read it)."""
    return f"{settings.tls_dir.rstrip('/')}/server-ca.crt"


def read_system_ca_bundle(path: str = SYSTEM_CA_BUNDLE) -> str:
    """The system CA bundle's text, ``""`` when it cannot be read (then only received CAs count)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(_MAX_SYSTEM_BUNDLE + 1)
    except OSError as e:
        logger.warning("cannot read the system CA bundle %s: %s", path, e)
        return ""
    if len(text) > _MAX_SYSTEM_BUNDLE:
        logger.warning("the system CA bundle %s is over 4 MiB: not used", path)
        return ""
    return text


def tls_files(
    certificate: ServerCertificate | None,
    upstream_trust: str,
    *,
    server_cert_path: str,
    server_key_path: str,
    server_ca_path: str,
    upstream_ca_path: str,
) -> tuple[TlsFile, ...]:
    """The files nginx needs, the key first (pure).

    With a certificate: its key (0600), its chain, and its CA (kept beside them so that, while
    a renewal is issued, the served certificate is known whole). The trust bundle is written
    when it is not empty (the caller passes ``""`` while there is no TLS backend to verify).
    """
    files: list[TlsFile] = []
    if certificate is not None:
        files.append(TlsFile(server_key_path, certificate.private_key, 0o600))
        files.append(TlsFile(server_cert_path, certificate.chain))
        files.append(TlsFile(server_ca_path, certificate.ca))
    if upstream_trust:
        files.append(TlsFile(upstream_ca_path, upstream_trust))
    return tuple(files)


def write_tls_files(container: ops.Container, files: Iterable[TlsFile]) -> bool:
    """Write every file that differs (the key only ever with mode 0600); True if any was written."""
    changed = False
    for file in files:
        changed |= push_if_changed(container, file.path, file.text, permissions=file.permissions)
    return changed


def remove_tls_files(container: ops.Container, paths: Iterable[str]) -> bool:
    """Remove the files at ``paths`` that exist; True if any was removed."""
    removed = False
    for path in paths:
        if container.exists(path):
            container.remove_path(path)
            logger.info("%s: removed %s", container.name, path)
            removed = True
    return removed


@dataclass(frozen=True)
class TlsState:
    """What one hook observed of TLS: the certificate to serve and the CAs to trust.

    Attributes:
        related: the ``certificates`` relation exists.
        certificate: what the proxy serves: the provider's current certificate, or, while a
            renewal is being issued or when the provider's new one is refused, the one nginx
            already serves (while valid and covering the Service name); ``None``: plain.
        waiting: related, and no certificate to serve yet.
        kept: ``certificate`` is the one already served, kept (a renewal pending or refused).
        trusted_cas: the CAs received on ``receive-ca-cert`` (PEM, one each, sorted).
        system_bundle: the charm container's system CA bundle (``""`` if unreadable).
    """

    related: bool = False
    certificate: ServerCertificate | None = None
    waiting: bool = False
    kept: bool = False
    trusted_cas: tuple[str, ...] = ()
    system_bundle: str = ""

    @functools.cached_property
    def upstream_trust(self) -> str:
        """The CA bundle nginx verifies TLS backends with (``proxy.tls.upstream_ca_bundle``).

        Made once per snapshot (the system bundle is some 200 KB), however often it is asked.
        """
        return upstream_ca_bundle(self.trusted_cas, system_bundle=self.system_bundle)


def served_certificate(
    container: ops.Container, *, chain_path: str, key_path: str, ca_path: str, now: datetime
) -> ServerCertificate | None:
    """The certificate nginx serves now, if its files are all there and it is still valid.

    Read only while the provider's certificate is pending or refused (the relation exists, so
    the library is loaded).
    """
    from charmlibs.interfaces.tls_certificates import Certificate, TLSCertificatesError

    chain, key, ca = (pull_text(container, path) for path in (chain_path, key_path, ca_path))
    if chain is None or key is None or ca is None:
        return None
    try:
        leaf_text = parse_pem_certificates(chain).split("-----END CERTIFICATE-----")[0]
        leaf = Certificate.from_string(leaf_text + "-----END CERTIFICATE-----")
        ca = parse_pem_certificates(ca)
    except (ValueError, TLSCertificatesError) as e:
        logger.warning("the served certificate is not readable: %s", e)
        return None
    if not leaf.validity_start_time <= now < leaf.expiry_time:
        return None
    return ServerCertificate(
        certificate=str(leaf).strip() + "\n",
        chain=chain,
        ca=ca,
        private_key=key,
        dns_names=tuple(sorted(leaf.sans_dns or ())),
        expiry=leaf.expiry_time,
    )


def tls_backends(plan: TelemetryProxyPlan) -> tuple[tuple[str, int, bool], ...]:
    """Every TLS backend of the plan, once each, sorted: ``(host, port, grpc)``.

    ``https`` routes (``grpc`` false) and ``grpcs`` receivers (``grpc`` true: checked with ALPN
    ``h2``, as nginx's ``grpc_pass`` connects).
    """
    found = {
        (r.upstream.host, r.upstream.port, False)
        for r in plan.http_routes
        if r.upstream.scheme == "https"
    }
    found |= {(r.upstream.host, r.upstream.port, True) for r in plan.grpc_routes if r.tls}
    return tuple(sorted(found))


def backend_checks_key(backends: Sequence[tuple[str, int, bool]], trust: str) -> str:
    """What the last checks were made for: the backends and the trust, as a digest."""
    text = json.dumps([list(b) for b in backends]) + "\n" + trust
    return hashlib.sha256(text.encode()).hexdigest()


def check_tls_backends(
    backends: Sequence[tuple[str, int, bool]],
    trust: str,
    *,
    check: Callable[..., str | None] = check_backend_tls,
    timeout: float = BACKEND_CHECK_SECONDS,
) -> list[str]:
    """Why each TLS backend fails verification as nginx verifies it (none: an empty list)."""
    failures: list[str] = []
    for host, port, grpc in backends[:MAX_CHECKED_BACKENDS]:
        reason = check(
            host,
            port,
            server_name=host,
            trusted_pem=trust or None,
            timeout=timeout,
            alpn=("h2",) if grpc else (),
        )
        if reason is not None:
            logger.warning("TLS backend fails verification: %s", reason)
            failures.append(reason)
    return failures
