"""The coordinator's TLS on a real Juju + Kubernetes: certificates on, verified, and off again.

One model holds a coordinator, a worker, ``self-signed-certificates`` and ``prometheus-k8s`` (no
mesh: TLS is for operators who run without one, and works the same on it). The tests run in
order and share the deployment:

1. deploy and relate the cluster and Prometheus (scrape and remote write): plain HTTP,
   Prometheus scrapes the worker through the proxy;
2. relate ``certificates``: the worker is handed ``https`` URLs and the CA, Prometheus scrapes
   over TLS with the CA it was given, a TLS 1.2 client that trusts the CA reaches the proxy on
   8443 and one limited to TLS 1.1 is refused;
3. remove the relation: everything is plain HTTP again.

The TLS clients run in the worker's charm container (Python's ``ssl``), inside the cluster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import charm_sources
import jubilant
import pytest
from charm_sources import oci_resources
from coordinated_mesh.relations.cluster import CoordinatorAppData
from it_juju import eventually, remote_app_data, scrape_samples, units_of, wait_settled
from it_settings import Settings, resolve_charms

COORDINATOR = "coordinator"
WORKER = "worker"
CA = "ca"
PROMETHEUS = "prometheus"
HTTPS_PORT = 8443
"""The reference coordinator's TLS port (``HTTPS_PORT`` in coordinator/src/charm.py)."""

DEPLOY_WAIT = 40 * 60
SETTLE_WAIT = 20 * 60
TELEMETRY_WAIT = 8 * 60

_TLS_PROBE = """
import socket, ssl, sys
host, port, version, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cadata=ca)
context.minimum_version = getattr(ssl.TLSVersion, version)
context.maximum_version = getattr(ssl.TLSVersion, version)
try:
    with socket.create_connection((host, port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            tls.sendall(b"GET /proxy/none HTTP/1.1\\r\\nHost: " + host.encode() + b"\\r\\n"
                        b"Connection: close\\r\\n\\r\\n")
            print("ok", tls.version(), tls.recv(64).split(b"\\r\\n")[0].decode())
except (ssl.SSLError, OSError) as e:
    print("refused", type(e).__name__, e)
"""
"""A TLS client pinned to one protocol version, trusting exactly the given CA."""


@pytest.fixture(scope="module")
def charms(settings: Settings) -> tuple[Path, Path]:
    try:
        return resolve_charms(settings)
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


def service(namespace: str) -> str:
    return f"{COORDINATOR}.{namespace}.svc.cluster.local"


def cluster_data(juju: jubilant.Juju) -> CoordinatorAppData:
    worker_unit = units_of(juju.status(), WORKER)[0]
    return CoordinatorAppData.load(remote_app_data(juju, worker_unit, "cluster", COORDINATOR))


def probe(juju: jubilant.Juju, namespace: str, version: str, ca: str) -> str:
    """What a TLS client limited to ``version`` gets from the proxy's TLS port."""
    unit = units_of(juju.status(), WORKER)[0]
    args = [service(namespace), str(HTTPS_PORT), version, ca]
    task = juju.exec("python3", "-c", _TLS_PROBE, *args, unit=unit)
    return task.stdout.strip()


def check_scraped(juju: jubilant.Juju, settings: Settings, since: float) -> None:
    prometheus = units_of(juju.status(), PROMETHEUS)[0]
    workers = units_of(juju.status(), WORKER)

    def attempt() -> tuple[bool, str]:
        samples = scrape_samples(juju, prometheus, WORKER)
        ok = sorted(s.unit for s in samples) == workers and all(
            s.up == "1" and s.timestamp >= since for s in samples
        )
        return ok, f"up of {WORKER}: {[(s.unit, s.up, s.timestamp - since) for s in samples]}"

    eventually(
        attempt,
        what=f"Prometheus scraping {workers} after {since:.0f}",
        timeout=settings.timeout(TELEMETRY_WAIT),
        interval=15,
    )


def settle(juju: jubilant.Juju, settings: Settings) -> None:
    wait_settled(
        juju,
        [COORDINATOR, WORKER, CA, PROMETHEUS],
        timeout=settings.timeout(SETTLE_WAIT),
        error_apps=[COORDINATOR, WORKER],
    )


@pytest.mark.juju_setup
@pytest.mark.abort_on_fail
def test_deploy_plain(juju: jubilant.Juju, settings: Settings, charms: tuple[Path, Path]):
    coordinator_charm, worker_charm = charms
    juju.deploy(coordinator_charm, COORDINATOR, resources=oci_resources("coordinator"), trust=True)
    juju.deploy(worker_charm, WORKER, resources=oci_resources("worker"), trust=True)
    for charm, app in (
        (charm_sources.SELF_SIGNED_CERTIFICATES, CA),
        (charm_sources.PROMETHEUS, PROMETHEUS),
    ):
        juju.deploy(charm, app, channel=settings.channel(charm), trust=True)
    juju.integrate(f"{WORKER}:cluster", f"{COORDINATOR}:cluster")
    juju.integrate(f"{COORDINATOR}:metrics-endpoint", f"{PROMETHEUS}:metrics-endpoint")
    juju.integrate(f"{COORDINATOR}:send-remote-write", f"{PROMETHEUS}:receive-remote-write")
    wait_settled(
        juju,
        [COORDINATOR, WORKER, CA, PROMETHEUS],
        timeout=settings.timeout(DEPLOY_WAIT),
        error_apps=[COORDINATOR, WORKER],
    )
    assert cluster_data(juju).ca_cert is None
    check_scraped(juju, settings, time.time())


@pytest.mark.abort_on_fail
def test_certificates_switch_every_url_to_https(
    juju: jubilant.Juju, namespace: str, settings: Settings
):
    juju.integrate(f"{COORDINATOR}:certificates", f"{CA}:certificates")
    settle(juju, settings)
    status = juju.status()
    assert all(
        "TLS until" in unit.workload_status.message
        for unit in status.apps[COORDINATOR].units.values()
    ), status.apps[COORDINATOR].units
    data = cluster_data(juju)
    assert data.ca_cert is not None
    for url in data.remote_write_endpoints or []:
        assert url.url.startswith(f"https://{service(namespace)}:{HTTPS_PORT}/"), url
    since = time.time()
    check_scraped(juju, settings, since)  # Prometheus scrapes over TLS, trusting the CA


def test_only_tls_1_2_and_1_3_are_served(juju: jubilant.Juju, namespace: str):
    ca = cluster_data(juju).ca_cert
    assert ca is not None
    for version in ("TLSv1_2", "TLSv1_3"):
        answer = probe(juju, namespace, version, ca)
        assert answer.startswith("ok ") and " 404" in answer, (version, answer)
    for version in ("TLSv1", "TLSv1_1"):
        answer = probe(juju, namespace, version, ca)
        assert answer.startswith("refused "), (version, answer)


def test_show_mesh_names_the_certificate(juju: jubilant.Juju, namespace: str):
    unit = units_of(juju.status(), COORDINATOR)[0]
    results = juju.run(unit, "show-mesh").results
    tls = json.loads(results["tls"])
    assert tls["served"] is True and service(namespace) in tls["names"], tls


@pytest.mark.abort_on_fail
def test_removing_certificates_switches_back(
    juju: jubilant.Juju, namespace: str, settings: Settings
):
    juju.remove_relation(f"{COORDINATOR}:certificates", f"{CA}:certificates")
    settle(juju, settings)
    assert cluster_data(juju).ca_cert is None
    check_scraped(juju, settings, time.time())
