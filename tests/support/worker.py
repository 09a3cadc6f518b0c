"""Fakes shared by the worker's ``ops.testing`` tests.

* :class:`FakeLabels`: the worker's labels in Kubernetes (a
  :class:`~coordinated_mesh.worker.kubernetes.LabelsBackend`) with the semantics of the real one
  (writes only on a difference), counting reads and writes, failing on demand;
* :func:`worker_context`: a context of the worker charm whose backend is a given fake, through
  the charm's constructor seam (``labels_backend_factory``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ops import testing

from tests.support.charm_loader import load_charm_module

CHARM = load_charm_module("worker")


@dataclasses.dataclass
class FakeLabels:
    """The labels on our StatefulSet and Service, as one shared fake backend sees them."""

    labels: dict[str, str] = dataclasses.field(default_factory=dict[str, str])
    writes: list[dict[str, str]] = dataclasses.field(default_factory=list[dict[str, str]])
    reads: int = 0
    error: Exception | None = None
    memory_deleted: bool = False

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        self.reads += 1
        if self.error is not None:
            raise self.error
        if dict(labels) == self.labels:
            return False
        self.labels = dict(labels)
        self.writes.append(dict(labels))
        return True

    def managed_labels(self) -> dict[str, str]:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return dict(self.labels)

    def delete_label_memory(self) -> bool:
        if self.error is not None:
            raise self.error
        self.memory_deleted = True
        return True


def worker_charm_type(labels: FakeLabels | None) -> type[Any]:
    """The worker charm, with ``labels`` as its Kubernetes (the real one when ``None``)."""
    if labels is None:
        return CHARM.MeshWorkerCharm
    fake = labels
    # The subclass keeps the charm's module, where ops.testing finds its charmcraft.yaml.
    return type(
        "TestWorkerCharm",
        (CHARM.MeshWorkerCharm,),
        {
            "__module__": CHARM.MeshWorkerCharm.__module__,
            "labels_backend_factory": staticmethod(lambda **_: fake),
        },
    )


def worker_context(labels: FakeLabels | None, **kwargs: Any) -> testing.Context[Any]:
    """A context of the worker charm (``kwargs`` go to ``testing.Context``)."""
    return testing.Context(worker_charm_type(labels), **kwargs)
