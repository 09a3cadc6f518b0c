"""What the proxy trusts in its TLS backends, and a check that names one failing verification.

:func:`upstream_ca_bundle` makes the text of ``NginxSettings.upstream_ca_path`` from the CAs
received from other charms (parsed by ``relations.certificate_transfer``) and the system bundle.
:func:`check_backend_tls` makes one TLS handshake with Python's :mod:`ssl` trusting exactly those
CAs, checking the backend's name, TLS 1.2 or newer, within a bounded time; it returns why the
backend fails, or ``None``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

from coordinated_mesh.parse import shorten

__all__ = ["MAX_CHECK_SECONDS", "check_backend_tls", "upstream_ca_bundle"]

MAX_CHECK_SECONDS = 10.0
"""The longest a check may take (connect and handshake each); longer timeouts are cut to it."""


def upstream_ca_bundle(received: Sequence[str], *, system_bundle: str = "") -> str:
    """The CAs TLS backends are verified with: the text for ``NginxSettings.upstream_ca_path``.

    Args:
        received: CA certificates from other charms, each already parsed (one PEM certificate
            each, as :class:`~coordinated_mesh.relations.certificate_transfer.TrustedCas`
            returns them): written once each, sorted, so the text changes only when the trust
            does.
        system_bundle: the system's CA bundle (trusted local text, appended as it is), or ``""``.

    Returns:
        The bundle; ``""`` when there is nothing to trust (then the plan's ``upstream_trust`` is
        false and every TLS backend gets 502).
    """
    parts = [pem.rstrip("\n") + "\n" for pem in sorted(set(received))]
    if system_bundle.strip():
        parts.append(system_bundle.rstrip("\n") + "\n")
    return "".join(parts)


def _context(trusted_pem: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if trusted_pem:
        context.load_verify_locations(cadata=trusted_pem)
    return context


def check_backend_tls(
    host: str,
    port: int,
    *,
    server_name: str | None = None,
    trusted_pem: str | None,
    timeout: float = 5.0,
    alpn: Sequence[str] = (),
) -> str | None:
    """Why the TLS backend ``host:port`` fails verification, or ``None`` when it verifies.

    Args:
        host: where to connect (a name or an address).
        port: the backend's port.
        server_name: the name sent as SNI and checked in the certificate; ``None``: ``host``
            (what nginx does: ``*_ssl_name`` is the backend's host).
        trusted_pem: the CAs to trust (PEM), the same as the proxy's; ``None`` or empty trusts
            nothing, so every backend fails, as it does in nginx.
        timeout: seconds for the connection and for the handshake, at most
            :data:`MAX_CHECK_SECONDS`.
        alpn: the application protocols to offer: ``("h2",)`` for a gRPC receiver (as nginx's
            ``grpcs`` does; gRPC servers may refuse a handshake without it).

    Returns:
        ``None``, or a reason that names the backend, one line, safe for a status
        (:func:`~coordinated_mesh.parse.shorten`): an untrusted or expired certificate, one for
        another name, a refused connection, a timeout, a failed handshake.
    """
    name = server_name or host
    where = f"{host}:{port}"
    try:
        context = _context(trusted_pem)
        if alpn:
            context.set_alpn_protocols(list(alpn))
    except (ssl.SSLError, ValueError) as e:
        return shorten(f"{where}: the trusted CAs do not load: {e}")
    limit = min(max(timeout, 0.1), MAX_CHECK_SECONDS)
    try:
        with (
            socket.create_connection((host, port), timeout=limit) as raw,
            context.wrap_socket(raw, server_hostname=name),
        ):
            return None
    except OSError as e:  # ssl.SSLError, refused, timed out, unreachable
        return shorten(f"{where}: {_reason(e, name, limit)}")


def _reason(error: OSError, name: str, limit: float) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate not accepted for {name}: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed: {error.reason or error}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return f"no answer within {limit:g}s"
    return f"cannot connect: {error.strerror or error}"
