"""What the integration tests deploy, read from the environment, and where the charms come from.

Every knob is an environment variable, so ``tox -e integration`` and a bare ``pytest`` behave alike:

==============================  ====================================================================
variable                        meaning (default)
==============================  ====================================================================
``COORDINATOR_CHARM``           ``.charm`` file of mesh-coordinator-k8s (newest ``build/`` match)
``WORKER_CHARM``                ``.charm`` file of mesh-worker-k8s (newest ``build/`` match)
``MESH_TEST_ISTIO_CHANNEL``     Charmhub channel of istio-k8s (must have ``hardened-mode``)
``MESH_TEST_BEACON_CHANNEL``    Charmhub channel of istio-beacon-k8s
``MESH_TEST_PROMETHEUS_CHANNEL``  Charmhub channel of prometheus-k8s
``MESH_TEST_LOKI_CHANNEL``      Charmhub channel of loki-k8s
``MESH_TEST_GRAFANA_CHANNEL``   Charmhub channel of grafana-k8s
``MESH_TEST_ISTIO_MODEL``       use the istio-k8s already deployed in this model instead of
                                deploying one (its ``hardened-mode`` is restored at the end)
``MESH_TEST_ISTIO_APP``         name of that istio-k8s application (``istio-k8s``)
``MESH_TEST_ISTIO_PLATFORM``    if set (even empty), istio-k8s ``platform`` config; ``""`` for
                                Canonical Kubernetes, unset keeps the charm default (microk8s)
``MESH_TEST_TIMEOUT_SCALE``     multiply every wait by this factor on slow machines (``1``)
==============================  ====================================================================

Channels default to ``tools/charm_sources.py``'s :data:`CHANNELS`, the one place they are pinned
(``tox -e deploy`` uses the same). When neither ``COORDINATOR_CHARM``/``WORKER_CHARM`` nor a
``build/*.charm`` exists, the tests run ``tools/pack.py`` (what ``tox -e pack`` runs), which needs
``charmcraft`` (the snap, preferably) and LXD.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import charm_sources
import pack
from charm_sources import (
    BEACON,
    CHANNELS,
    GRAFANA,
    ISTIO,
    LOKI,
    PROMETHEUS,
    SELF_SIGNED_CERTIFICATES,
)

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / "build"
COORDINATOR_CHARM_NAME = charm_sources.COORDINATOR.name
WORKER_CHARM_NAME = charm_sources.WORKER.name
CHANNEL_VARIABLES: Mapping[str, str] = {
    ISTIO: "MESH_TEST_ISTIO_CHANNEL",
    BEACON: "MESH_TEST_BEACON_CHANNEL",
    PROMETHEUS: "MESH_TEST_PROMETHEUS_CHANNEL",
    LOKI: "MESH_TEST_LOKI_CHANNEL",
    GRAFANA: "MESH_TEST_GRAFANA_CHANNEL",
    SELF_SIGNED_CERTIFICATES: "MESH_TEST_SELF_SIGNED_CERTIFICATES_CHANNEL",
}
"""Charmhub charm -> the variable that overrides its pinned channel."""
_SOURCE_DIRS = ("lib", "coordinator", "worker")
_JUJU_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64el"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the integration tests can be told from outside."""

    coordinator_charm: Path | None
    worker_charm: Path | None
    channels: Mapping[str, str]
    """Charmhub charm name -> channel (``CHANNELS``, overridden by ``MESH_TEST_*_CHANNEL``)."""
    istio_model: str | None
    istio_app: str
    istio_platform: str | None
    timeout_scale: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (the process environment by default).

        Raises:
            ValueError: ``MESH_TEST_TIMEOUT_SCALE`` is not a positive number.
        """
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value).expanduser().resolve() if value else None

        def text(name: str, default: str | None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        raw_scale = env.get("MESH_TEST_TIMEOUT_SCALE", "1").strip() or "1"
        try:
            scale = float(raw_scale)
        except ValueError:
            scale = -1.0
        if scale <= 0:
            raise ValueError(f"MESH_TEST_TIMEOUT_SCALE={raw_scale!r} is not a positive number")
        return cls(
            coordinator_charm=path("COORDINATOR_CHARM"),
            worker_charm=path("WORKER_CHARM"),
            channels={
                charm: text(CHANNEL_VARIABLES[charm], pinned) or pinned
                for charm, pinned in CHANNELS.items()
            },
            istio_model=text("MESH_TEST_ISTIO_MODEL", None),
            istio_app=text("MESH_TEST_ISTIO_APP", "istio-k8s") or "istio-k8s",
            istio_platform=env.get("MESH_TEST_ISTIO_PLATFORM"),
            timeout_scale=scale,
        )

    def channel(self, charm: str) -> str:
        """The channel to deploy Charmhub charm ``charm`` from."""
        return self.channels[charm]

    def timeout(self, seconds: float) -> float:
        """A wait of ``seconds``, scaled by ``MESH_TEST_TIMEOUT_SCALE``."""
        return seconds * self.timeout_scale


def _juju_arch() -> str:
    machine = platform.machine().lower()
    return _JUJU_ARCH.get(machine, machine)


def find_built_charm(charm_name: str, build_dir: Path = BUILD_DIR) -> Path | None:
    """The packed ``.charm`` of ``charm_name`` in ``build_dir``, or None.

    With several candidates (other architectures, older packs), the one for this machine's
    architecture wins, then the newest.
    """
    candidates = sorted(build_dir.glob(f"{charm_name}_*.charm"))
    if not candidates:
        return None
    native = [c for c in candidates if _juju_arch() in c.name] or candidates
    return max(native, key=lambda c: c.stat().st_mtime)


def _warn_if_stale(charm: Path) -> None:
    built = charm.stat().st_mtime
    for source_dir in _SOURCE_DIRS:
        for source in (ROOT / source_dir).rglob("*"):
            if (
                source.is_file()
                and "__pycache__" not in source.parts
                and source.stat().st_mtime > built
            ):
                logger.warning(
                    "%s is older than %s: the tests deploy the old build (run `tox -e pack`)",
                    charm,
                    source.relative_to(ROOT),
                )
                return


def resolve_charms(settings: Settings) -> tuple[Path, Path]:
    """The coordinator and worker ``.charm`` files to deploy, packing them if none exists.

    Order: ``COORDINATOR_CHARM``/``WORKER_CHARM``, then ``build/``, then ``tools/pack.py``.

    Raises:
        FileNotFoundError: a given path does not exist, or packing is impossible or failed; the
            message says what to do.
    """
    resolved: list[Path] = []
    missing: list[str] = []
    for given, name, env_var in (
        (settings.coordinator_charm, COORDINATOR_CHARM_NAME, "COORDINATOR_CHARM"),
        (settings.worker_charm, WORKER_CHARM_NAME, "WORKER_CHARM"),
    ):
        if given is not None:
            if not given.is_file():
                raise FileNotFoundError(f"{env_var}={given} does not exist")
            resolved.append(given)
            continue
        built = find_built_charm(name)
        if built is None:
            missing.append(name)
        else:
            _warn_if_stale(built)
            resolved.append(built)
    if not missing:
        return resolved[0], resolved[1]

    try:
        charmcraft = pack.find_charmcraft()
    except pack.StagingError as e:
        raise FileNotFoundError(
            f"no packed charm for {', '.join(missing)} in {BUILD_DIR} and {e}: run "
            "`tox -e pack` first, or set COORDINATOR_CHARM and WORKER_CHARM"
        ) from None
    log = logger.info if charmcraft.is_snap else logger.warning
    log(
        "packing both charms with tools/pack.py (several minutes the first time): %s",
        charmcraft.note,
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "pack.py"), "--build-dir", str(BUILD_DIR)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FileNotFoundError(
            f"tools/pack.py failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    coordinator = settings.coordinator_charm or find_built_charm(COORDINATOR_CHARM_NAME)
    worker = settings.worker_charm or find_built_charm(WORKER_CHARM_NAME)
    if coordinator is None or worker is None:
        raise FileNotFoundError(
            f"tools/pack.py ran but {BUILD_DIR} holds no .charm for both charms"
        )
    return coordinator, worker
