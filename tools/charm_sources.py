"""Where every charm that ``tox -e deploy`` and the integration tests deploy comes from.

The one place Charmhub channels are pinned: ``tools/deploy.py`` and ``tests/integration`` both
read :data:`CHANNELS` (the tests let ``MESH_TEST_*_CHANNEL`` override it). Our own two charms are
packed from this repository (``tools/pack.py``) and deployed with the OCI images their
``charmcraft.yaml`` names.

Channel choices (sources in ``docs/integration-tests.md``):

* ``istio-k8s`` and ``istio-beacon-k8s``: track 2 (Istio 1.26 ambient, ``hardened-mode``), on
  ``edge``, the channel their facts were read from.
* ``prometheus-k8s``, ``loki-k8s``, ``grafana-k8s``: track 2 (Ubuntu 24.04). A charm's default
  channel is not something to rely on. ``edge`` because a ``2/stable`` release is not confirmed by
  our sources, and Charmhub serves a risk level with nothing released from the next more stable
  one, so ``2/edge`` always resolves while track 2 has any release.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent

ISTIO = "istio-k8s"
BEACON = "istio-beacon-k8s"
PROMETHEUS = "prometheus-k8s"
LOKI = "loki-k8s"
GRAFANA = "grafana-k8s"
SELF_SIGNED_CERTIFICATES = "self-signed-certificates"

CHANNELS: Mapping[str, str] = MappingProxyType(
    {
        ISTIO: "2/edge",
        BEACON: "2/edge",
        PROMETHEUS: "2/edge",
        LOKI: "2/edge",
        GRAFANA: "2/edge",
        SELF_SIGNED_CERTIFICATES: "1/stable",
    }
)
"""Charmhub charm name -> the channel it is deployed from."""


@dataclasses.dataclass(frozen=True)
class LocalCharm:
    """One of the charms packed from this repository."""

    directory: str
    """Its directory here (``coordinator``, ``worker``), what ``tools/pack.py`` takes."""
    name: str
    """Its charm name (``charm-name`` in ``juju status``)."""
    env_var: str
    """The environment variable that may name an already packed ``.charm`` file."""

    def resources(self) -> dict[str, str]:
        """Each OCI image resource mapped to its ``upstream-source`` image."""
        return oci_resources(self.directory)


COORDINATOR = LocalCharm("coordinator", "mesh-coordinator-k8s", "COORDINATOR_CHARM")
WORKER = LocalCharm("worker", "mesh-worker-k8s", "WORKER_CHARM")


def oci_resources(charm_dir: str, root: Path = ROOT) -> dict[str, str]:
    """Each OCI image resource of ``<charm_dir>/charmcraft.yaml`` mapped to its upstream image."""
    meta: dict[str, Any] = yaml.safe_load((root / charm_dir / "charmcraft.yaml").read_text())
    resources: dict[str, dict[str, Any]] = meta.get("resources") or {}
    return {
        name: str(spec["upstream-source"])
        for name, spec in sorted(resources.items())
        if spec.get("type") == "oci-image"
    }
