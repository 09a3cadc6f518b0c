"""Certificates made by the real ``openssl``: a CA, and server certificates it signs for names.

Each call runs ``openssl`` in a directory of the test's; nothing is stored in the repository.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.binaries import require_binary


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as files."""

    cert: Path
    key: Path

    @property
    def pem(self) -> str:
        return self.cert.read_text()


def _openssl(*args: str) -> None:
    subprocess.run([require_binary("openssl"), *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str = "test-ca") -> Issued:
    """A self-signed CA (``basicConstraints=critical,CA:TRUE``), P-256, valid for 2 days."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return Issued(cert, key)


def issue(ca: Issued, directory: Path, *, dns: Sequence[str], ips: Sequence[str] = ()) -> Issued:
    """A server certificate signed by ``ca`` for the DNS names and IP addresses given."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / dns[0]
    cert, key, csr = stem.with_suffix(".pem"), stem.with_suffix(".key"), stem.with_suffix(".csr")
    extensions = directory / f"{dns[0]}.ext"
    names = [f"DNS:{n}" for n in dns] + [f"IP:{a}" for a in ips]
    extensions.write_text(
        f"subjectAltName={','.join(names)}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", f"/CN={dns[0]}", "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    return Issued(cert, key)
