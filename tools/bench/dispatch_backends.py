"""Kubernetes stand-ins for ``dispatch.py``: the charms' backend seams, persisted between processes.

Each dispatch is a new process, so what Kubernetes "holds" lives in a JSON file. They implement
the library's own seams (``KubernetesBackend``, ``LabelsBackend``) with the semantics of the
in-memory fakes the unit tests use (``tests/support``): a reconcile writes only on a difference.
Every call is appended to ``$BENCH_K8S_LOG`` as ``read`` or ``write``. The real requests behind
each call are counted against a real API server by ``k8s_calls.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coordinated_mesh.mesh.drain import ClusterPod
from coordinated_mesh.mesh.policies import MeshPolicy


def _log(kind: str) -> None:
    with open(os.environ["BENCH_K8S_LOG"], "a") as log:
        log.write(kind + "\n")


class _Stored:
    def __init__(self, path: str) -> None:
        self._path = Path(path)

    def _load(self) -> dict[str, Any]:
        return json.loads(self._path.read_text()) if self._path.exists() else {}

    def _save(self, data: dict[str, Any]) -> None:
        self._path.write_text(json.dumps(data, sort_keys=True))


class StoredLabels(_Stored):
    """The labels on our StatefulSet and Service (the worker's and the coordinator's seam)."""

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        _log("read")
        data = self._load()
        if data.get("labels", {}) == dict(labels):
            return False
        _log("write")
        self._save({**data, "labels": dict(labels)})
        return True

    def managed_labels(self) -> dict[str, str]:
        _log("read")
        return dict(self._load().get("labels", {}))


class StoredKubernetes(StoredLabels):
    """The coordinator's ``KubernetesBackend``: labels and the owned policies."""

    def reconcile_policies(
        self, policies: Sequence[MeshPolicy], *, listed: Sequence[Mapping[str, Any]] | None = None
    ) -> bool:
        _log("read")
        data = self._load()
        wanted = sorted(
            (p.to_wire() for p in policies), key=lambda w: json.dumps(w, sort_keys=True)
        )
        if data.get("policies", []) == wanted:
            return False
        _log("write")
        self._save({**data, "policies": wanted})
        return True

    def local_policies(self) -> list[dict[str, Any]]:
        _log("read")
        return list(self._load().get("policies", []))

    def cluster_pods(self, selector: Mapping[str, str]) -> list[ClusterPod]:
        _log("read")
        return []

    def namespace_labels(self) -> dict[str, str]:
        _log("read")
        return {}

    def delete_policies(self) -> bool:
        _log("write")
        data = self._load()
        self._save({**data, "policies": []})
        return bool(data.get("policies"))

    def owned_policies(self) -> list[dict[str, Any]]:
        return self.local_policies()
