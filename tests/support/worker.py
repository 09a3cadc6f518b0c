"""Fakes shared by the worker's ``ops.testing`` tests.

* :class:`FakeLabels`: the library's fake of the worker's labels in Kubernetes
  (:mod:`coordinated_mesh.testing`), re-exported: writes only on a difference, counts reads and
  writes, fails on demand;
* :func:`worker_context`: a context of the worker charm whose backend is a given fake, through
  the charm's constructor seam (``labels_backend_factory``).
"""

from __future__ import annotations

from typing import Any

from coordinated_mesh.testing import FakeLabels
from ops import testing

from tests.support.charm_loader import load_charm_module

CHARM = load_charm_module("worker")


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
