"""Trusting the proxy's CA (pure): when the file is written or removed, and when Pebble's roots
are stale (Go loads them once per process; see ``coordinated_mesh.worker.trust``)."""

from __future__ import annotations

import pytest
from coordinated_mesh.worker.trust import (
    TrustObservation,
    TrustPlan,
    ca_fingerprint,
    decide_trust,
    forwards_over_tls,
    restart_note,
)
from ops import pebble

A, B = "PEM A\n", "PEM B\n"
FA, FB = ca_fingerprint(A), ca_fingerprint(B)


def seen(ca: str | None = None, roots: str | None = None, tls: bool = False) -> TrustObservation:
    return TrustObservation(ca_file=ca, pebble_roots=roots, pebble_uses_tls=tls)


@pytest.mark.parametrize(
    "wanted, obs, tls_after, plan",
    [
        # No TLS, nothing there: nothing to do.
        (None, seen(), False, TrustPlan()),
        # TLS arrives before Pebble used any: the CA first, Pebble's roots will hold it.
        (A, seen(), True, TrustPlan(write_ca=A, write_roots=FA)),
        # TLS arrives without https log targets: Pebble's roots are not loaded yet.
        (A, seen(), False, TrustPlan(write_ca=A)),
        # Steady state: nothing written.
        (A, seen(A, FA, True), True, TrustPlan()),
        # A new CA after Pebble loaded the old one: written, and Pebble is stale.
        (B, seen(A, FA, True), True, TrustPlan(write_ca=B, pebble_stale=True)),
        # Pebble used TLS before anything was recorded: its roots are unknown.
        (A, seen(None, None, True), True, TrustPlan(write_ca=A, write_roots="unknown",
                                                    pebble_stale=True)),
        # The charm's own https targets, no proxy TLS: Pebble's roots hold no proxy CA.
        (None, seen(None, None, True), True, TrustPlan(write_roots="unknown")),
        # https log targets without a usable CA: Pebble loads its roots without one.
        (None, seen(), True, TrustPlan(write_roots="none")),
        # TLS goes away: the file is removed, the record of Pebble's roots stays.
        (None, seen(A, FA, True), False, TrustPlan(remove_ca=True)),
        # TLS back with the CA Pebble holds: no restart needed.
        (A, seen(None, FA, False), True, TrustPlan(write_ca=A)),
        # Pebble loaded its roots with no CA file at all: a CA written later is not seen.
        (A, seen(None, "none", False), True, TrustPlan(write_ca=A, pebble_stale=True)),
    ],
)  # fmt: skip
def test_decide_trust(wanted: str | None, obs: TrustObservation, tls_after: bool, plan: TrustPlan):
    assert decide_trust(wanted, obs, tls_after=tls_after) == plan


def test_fingerprints_differ_per_ca_and_say_none_without():
    assert FA != FB and FA.startswith("sha256:") and len(FA) == len("sha256:") + 64
    assert ca_fingerprint(None) == "none"


def target(location: str, services: list[str]) -> pebble.LogTarget:
    return pebble.LogTarget(
        "t", {"override": "replace", "type": "loki", "location": location, "services": services}
    )


def check(url: str) -> pebble.Check:
    return pebble.Check("c", {"override": "replace", "http": {"url": url}})


def test_what_makes_pebble_use_tls():
    https, http = "https://loki:3100/push", "http://loki:3100/push"
    assert forwards_over_tls({"t": target(https, ["all"])}, {})
    assert forwards_over_tls({"t": target(https, ["all", "-prometheus"])}, {})
    assert not forwards_over_tls({"t": target(https, ["-all"])}, {})  # stopped
    assert not forwards_over_tls({"t": target(http, ["all"])}, {})
    assert forwards_over_tls({}, {"c": check("https://localhost:9090/-/ready")})
    assert not forwards_over_tls({}, {"c": check("http://localhost:9090/-/ready")})


def test_the_restart_note_names_the_container_and_the_pod():
    note = restart_note(container="prometheus", unit="worker/3", model="cos")
    assert note == (
        "no logs: restart prometheus for Pebble to trust the proxy's CA "
        "(kubectl delete pod worker-3 -n cos)"
    )
