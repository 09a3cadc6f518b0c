"""Trusting the proxy's CA in the workload container: where the file goes, and what Pebble sees.

:func:`decide_trust` (pure) decides, from what :func:`observe_trust` read, whether to write or
remove the CA file :data:`CA_PATH` (in ``/etc/ssl/certs``, which Go's ``crypto/x509`` reads in
full, and a stable path a workload's own TLS settings can name) and whether the container's
Pebble may not trust it yet: Go loads the system roots once per process, at the first TLS
verification, so a CA added or changed after Pebble's first TLS use is not seen by its log
forwarding until the container restarts. :data:`PEBBLE_ROOTS_PATH`, in the container's own
filesystem (gone with the container), records the CA in place when Pebble started using TLS.
Sources: golang/go ``src/crypto/x509/root.go`` (``sync.Once``), ``root_unix.go`` and
``root_linux.go`` (the files and directories read); canonical/pebble v1.32.1
``internals/overlord/logstate/loki/loki.go`` (a default ``http.Client``). Consequences:
``docs/explanation/worker.md#trusting-the-proxys-ca``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import ops
from ops import pebble

from coordinated_mesh.charm.pebble import pull_text

__all__ = [
    "CA_PATH",
    "PEBBLE_ROOTS_PATH",
    "TrustObservation",
    "TrustPlan",
    "ca_fingerprint",
    "decide_trust",
    "forwards_over_tls",
    "observe_trust",
    "restart_note",
]

CA_PATH = "/etc/ssl/certs/coordinated-mesh-proxy-ca.pem"
"""The proxy's CA in the workload container (mode 0644): a regular file in ``/etc/ssl/certs``,
where every Go program (Pebble, Prometheus) finds it among the system roots, and the path a
workload's own TLS settings name (``WorkerContext.ca_path``)."""
PEBBLE_ROOTS_PATH = "/var/lib/coordinated-mesh/pebble-roots"
"""Which CA Pebble's root pool holds (:func:`ca_fingerprint`, or ``unknown``), written when
Pebble starts using TLS; in the container's filesystem, so a container restart clears it."""
UNKNOWN_ROOTS = "unknown"
"""Pebble used TLS before this worker wrote :data:`PEBBLE_ROOTS_PATH`: its roots are unknown."""


def ca_fingerprint(pem: str | None) -> str:
    """``sha256:<hex>`` of the CA text, or ``none`` when there is no CA file."""
    if pem is None:
        return "none"
    return "sha256:" + hashlib.sha256(pem.encode("utf-8", "surrogatepass")).hexdigest()


def _forwards(services: Iterable[str]) -> bool:
    """Whether a log target with these ``services`` forwards any service's logs."""
    return any(not entry.startswith("-") for entry in services)


def forwards_over_tls(
    log_targets: Mapping[str, pebble.LogTarget], checks: Mapping[str, pebble.Check]
) -> bool:
    """Whether the plan makes Pebble open TLS connections (with its system roots).

    That is a forwarding ``https`` log target of any type, or an ``http`` check of an ``https``
    URL.
    """
    if any(
        t.location.startswith("https://") and _forwards(t.services) for t in log_targets.values()
    ):
        return True
    return any(
        str((check.http or {}).get("url", "")).startswith("https://") for check in checks.values()
    )


@dataclass(frozen=True)
class TrustObservation:
    """What the container holds now (read once per hook by :func:`observe_trust`)."""

    ca_file: str | None
    """The text of :data:`CA_PATH` (``None``: absent)."""
    pebble_roots: str | None
    """The text of :data:`PEBBLE_ROOTS_PATH` (``None``: absent, Pebble used no TLS we know of)."""
    pebble_uses_tls: bool
    """Whether the plan now already makes Pebble use TLS (:func:`forwards_over_tls`)."""


@dataclass(frozen=True)
class TrustPlan:
    """What to change for the proxy's CA.

    In this order: :attr:`write_ca`, :attr:`write_roots`, (the log targets and the workload),
    then :attr:`remove_ca` once nothing names the file any more.
    """

    write_ca: str | None = None
    """The CA text to write to :data:`CA_PATH` (``None``: it is up to date, or not wanted)."""
    write_roots: str | None = None
    """The text to write to :data:`PEBBLE_ROOTS_PATH` (``None``: leave it)."""
    remove_ca: bool = False
    """Remove :data:`CA_PATH`: the proxy serves plain HTTP now."""
    pebble_stale: bool = False
    """Pebble's root pool may not hold the wanted CA: logs to ``https`` URLs fail verification
    until the container restarts (:func:`restart_note`)."""


def decide_trust(wanted: str | None, obs: TrustObservation, *, tls_after: bool) -> TrustPlan:
    """What to write for the CA ``wanted`` (``None``: no TLS, no CA) (pure).

    Args:
        wanted: the proxy's CA (``ProxiedTelemetry.ca_cert``), or ``None``.
        obs: what the container holds now.
        tls_after: whether the plan makes Pebble use TLS once this hook's log targets are in.

    Pebble's roots are recorded the first time it uses TLS in this container's life, CA or not:
    as ``unknown`` when the plan already did before anything was recorded (an upgrade, a target
    someone else added), else as the CA written just before (``none`` without one: Pebble loads
    its roots at its first TLS verification, after the file is in place). A wanted CA that
    differs from the recorded one is not trusted by Pebble's log forwarding until the container
    restarts.
    """
    write_ca = wanted if wanted is not None and obs.ca_file != wanted else None
    remove_ca = wanted is None and obs.ca_file is not None
    roots = obs.pebble_roots
    write_roots: str | None = None
    if roots is None and obs.pebble_uses_tls:
        roots = write_roots = UNKNOWN_ROOTS
    elif roots is None and tls_after:
        roots = write_roots = ca_fingerprint(wanted)
    stale = wanted is not None and roots is not None and roots != ca_fingerprint(wanted)
    return TrustPlan(
        write_ca=write_ca, write_roots=write_roots, remove_ca=remove_ca, pebble_stale=stale
    )


def observe_trust(container: ops.Container) -> TrustObservation:
    """Read the CA file, the record of Pebble's roots and the plan (three reads).

    Raises:
        ops.pebble.Error: Pebble could not answer.
    """
    plan = container.get_plan()
    return TrustObservation(
        ca_file=pull_text(container, CA_PATH),
        pebble_roots=pull_text(container, PEBBLE_ROOTS_PATH),
        pebble_uses_tls=forwards_over_tls(plan.log_targets, plan.checks),
    )


def restart_note(*, container: str, unit: str, model: str) -> str:
    """The status note of a stale Pebble: which container to restart, and a command that does."""
    pod = unit.replace("/", "-")
    return (
        f"no logs: restart {container} for Pebble to trust the proxy's CA "
        f"(kubectl delete pod {pod} -n {model})"
    )
