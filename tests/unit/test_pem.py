"""The PEM bundle rule (``parse_pem_certificates``) and the CA in the ``cluster`` databag."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from coordinated_mesh.parse import MAX_PEM_CERTIFICATES, parse_pem_certificates
from coordinated_mesh.relations.cluster import (
    CoordinatorAppData,
    ProxiedTelemetry,
    parse_proxied_telemetry,
)

from tests.support.binaries import require_binary


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A certificate and its private key, made by the real openssl."""
    openssl = require_binary("openssl")
    where = tmp_path_factory.mktemp("pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(where / "k.pem"), "-out", str(where / "c.pem"),
         "-subj", "/CN=ca", "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return Path(where / "c.pem").read_text(), Path(where / "k.pem").read_text()


def test_openssl_output_is_already_canonical(pems: tuple[str, str]):
    cert, _ = pems
    assert parse_pem_certificates(cert) == cert
    assert parse_pem_certificates(cert + "\n" + cert) == cert + cert


def test_rewrapped_and_crlf_bundles_give_the_same_text(pems: tuple[str, str]):
    cert, _ = pems
    body = "".join(cert.splitlines()[1:-1])
    one_line = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----"
    assert parse_pem_certificates(one_line) == cert
    assert parse_pem_certificates(cert.replace("\n", "\r\n")) == cert


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c, k: "",
        lambda c, k: "not a certificate",
        lambda c, k: c + "trailing text",
        lambda c, k: "leading text\n" + c,
        lambda c, k: k,
        lambda c, k: c + k,
        lambda c, k: c.replace("MI", "M!", 1),
        lambda c, k: "-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n",
        lambda c, k: c * (MAX_PEM_CERTIFICATES + 1),
        lambda c, k: c.replace("\n", "\x00\n", 2),
    ],
    ids=["empty", "text", "trailing", "leading", "key", "cert+key", "bad-base64", "empty-body",
         "too-many", "nul"],
)  # fmt: skip
def test_anything_but_certificates_is_refused(pems: tuple[str, str], mutate):
    cert, key = pems
    with pytest.raises(ValueError):
        parse_pem_certificates(mutate(cert, key))


def test_non_text_is_refused():
    for raw in (None, 1, b"-----BEGIN CERTIFICATE-----"):
        with pytest.raises(ValueError):
            parse_pem_certificates(raw)


def test_ca_round_trips_through_the_cluster_databag(pems: tuple[str, str]):
    cert, _ = pems
    telemetry = ProxiedTelemetry(loki_urls={"loki/0": "https://c.m.svc:8443/p"}, ca_cert=cert)
    databag = CoordinatorAppData.compose(worker_labels={}, worker_config=None, telemetry=telemetry)
    read, problems = parse_proxied_telemetry(CoordinatorAppData.load(databag.dump()))
    assert problems == []
    assert read.ca_cert == cert


def test_malformed_ca_is_a_problem_and_not_trusted(pems: tuple[str, str]):
    _, key = pems
    read, problems = parse_proxied_telemetry(CoordinatorAppData(ca_cert=key))
    assert read.ca_cert is None
    assert [p.item for p in problems] == ["ca_cert"]
    assert "PRIVATE" not in str(problems)  # the key's text is never shown back


def test_absent_ca_means_plain_http():
    read, problems = parse_proxied_telemetry(CoordinatorAppData())
    assert (read.ca_cert, problems) == (None, [])
