"""Certificates for tests, made by the real ``openssl`` CLI: a CA, server certificates it signs
for given names, and Python TLS contexts and clients that trust (or do not trust) them.

``openssl`` is found with :func:`~tests.support.binaries.require_binary` (a test skips without
it, and fails in CI). Keys are P-256 (fast to make); every certificate is what a verifier in
strict mode accepts: a CA with ``basicConstraints=critical,CA:TRUE`` and ``keyCertSign``, leaves
with ``subjectAltName``, ``serverAuth`` and key identifiers.
"""

from __future__ import annotations

import http.client
import itertools
import socket
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coordinated_mesh.proxy.nginx import NginxSettings
from coordinated_mesh.proxy.tls import upstream_ca_bundle

from tests.support.binaries import require_binary

_serials = itertools.count(1000)


def _openssl(*args: str) -> str:
    done = subprocess.run(
        [require_binary("openssl"), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Ca:
    """A certificate authority: its certificate and key, in files."""

    cert: Path
    key: Path

    @property
    def pem(self) -> str:
        return self.cert.read_text()


@dataclass(frozen=True)
class Leaf:
    """A server certificate (``cert``: the leaf alone; ``chain``: the leaf then the CA) and key."""

    cert: Path
    key: Path
    chain: Path
    names: tuple[str, ...]

    @property
    def serial(self) -> int:
        out = _openssl("x509", "-in", str(self.cert), "-noout", "-serial")
        return int(out.strip().split("=", 1)[1], 16)


def make_ca(directory: Path, name: str = "Test CA") -> Ca:
    """A self-signed CA in ``directory`` (``<stem>.crt``, ``<stem>.key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = name.lower().replace(" ", "-")
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    _openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return Ca(cert, key)


def issue(ca: Ca, directory: Path, names: Sequence[str], *, stem: str = "server") -> Leaf:
    """A server certificate signed by ``ca`` for ``names`` (DNS names or IPv4 addresses)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, chain = (directory / f"{stem}{ext}" for ext in (".crt", ".key", "-chain.crt"))
    request, extensions = directory / f"{stem}.csr", directory / f"{stem}.ext"
    alt = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}" for n in names)
    extensions.write_text(
        f"subjectAltName={alt}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={names[0]}", "-keyout", str(key), "-out", str(request),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(next(_serials)), "-days", "2", "-extfile", str(extensions),
        "-out", str(cert),
    )  # fmt: skip
    chain.write_text(cert.read_text() + ca.cert.read_text())
    return Leaf(cert, key, chain, tuple(names))


def server_context(leaf: Leaf, *, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A TLS server context serving ``leaf`` (and its chain)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.chain, leaf.key)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def client_context(ca: Ca | None) -> ssl.SSLContext:
    """A verifying client context trusting only ``ca`` (``None``: trusting nothing)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        context.load_verify_locations(cafile=str(ca.cert))
    return context


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``127.0.0.1:port`` that verifies the certificate for ``server_name`` (SNI too),
    as a client resolving the coordinator's Service name to this proxy would."""

    def __init__(self, port: int, server_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(server_name, port, context=context, timeout=timeout)
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def https_connection(
    port: int, server_name: str, ca: Ca | None, *, timeout: float = 10.0
) -> http.client.HTTPSConnection:
    """An HTTPS connection to the proxy on loopback, verifying ``server_name`` against ``ca``."""
    return _PinnedHTTPSConnection(port, server_name, client_context(ca), timeout)


def https_request(
    port: int,
    server_name: str,
    ca: Ca | None,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body). Raises ``ssl.SSLError`` when the
    certificate does not verify."""
    connection = https_connection(port, server_name, ca)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def served_certificate_serial(port: int, server_name: str) -> int:
    """The serial number of the certificate served on ``127.0.0.1:port`` (not verified)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    out = subprocess.run(
        [require_binary("openssl"), "x509", "-inform", "DER", "-noout", "-serial"],
        input=der,
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    return int(out.strip().split("=", 1)[1], 16)


def install_server_certificate(settings: NginxSettings, leaf: Leaf) -> None:
    """Write ``leaf`` (with its chain) and its key where ``settings`` makes nginx read them, as
    the coordinator does (the key readable by its owner only)."""
    cert, key = Path(settings.server_cert_path), Path(settings.server_key_path)
    cert.parent.mkdir(parents=True, exist_ok=True)
    cert.write_text(leaf.chain.read_text())
    key.touch(mode=0o600)
    key.write_text(leaf.key.read_text())


def install_upstream_trust(settings: NginxSettings, *cas: Ca) -> None:
    """Write the CAs nginx verifies TLS backends with (``settings.upstream_ca_path``), as
    :func:`~coordinated_mesh.proxy.tls.upstream_ca_bundle` makes the file."""
    text = upstream_ca_bundle([ca.pem for ca in cas])
    path = Path(settings.upstream_ca_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
