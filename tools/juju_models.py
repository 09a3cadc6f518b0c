"""``juju models --format json``, parsed (jubilant parses ``status`` and ``show-unit``, not this).

The shape, from Juju 3.6 (``cmd/juju/controller/listmodels.go``, ``ModelSummarySet`` and
``ModelSummary``; restated in ``../shared/spec/juju-and-istio-facts.md``)::

    {"models": [{"name": "admin/controller", "short-name": "controller",
                 "model-uuid": "...", "model-type": "caas", "controller-uuid": "...",
                 "controller-name": "dev", "is-controller": true, "owner": "admin",
                 "cloud": "microk8s", "region": "localhost", "type": "kubernetes",
                 "life": "alive", "status": {"current": "available", ...},
                 "access": "admin", "last-connection": "just now", "agent-version": "3.6.8"}],
     "current-model": "controller"}

``model-type`` is ``caas`` (Kubernetes) or ``iaas`` (machines); ``type`` is the cloud *provider*
type (``kubernetes``, ``lxd``, ...) and is omitted when empty. ``current-model`` is omitted when
there is no current model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

KUBERNETES = "caas"
"""The ``model-type`` of a Kubernetes model."""
MACHINES = "iaas"
"""The ``model-type`` of a machine model."""


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """One entry of ``models``: only the fields the tools here read."""

    name: str
    """Qualified name, ``<owner>/<model>``."""
    short_name: str
    model_type: str
    """``caas`` or ``iaas``; empty if Juju did not say."""
    provider_type: str
    """The cloud's provider type (``kubernetes``, ``lxd``...); empty if omitted."""
    is_controller: bool
    cloud: str

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ModelSummary:
        """Parse one entry of ``models``."""
        name = str(entry.get("name") or "")
        short = str(entry.get("short-name") or name.rsplit("/", maxsplit=1)[-1])
        return cls(
            name=name or short,
            short_name=short,
            model_type=str(entry.get("model-type") or ""),
            provider_type=str(entry.get("type") or ""),
            is_controller=bool(entry.get("is-controller", short == "controller")),
            cloud=str(entry.get("cloud") or ""),
        )


@dataclasses.dataclass(frozen=True)
class ModelList:
    """The parsed output of ``juju models --format json``."""

    models: tuple[ModelSummary, ...]
    current: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelList:
        """Parse the whole document (a ``dict`` from ``json.loads``)."""
        entries: list[Mapping[str, Any]] = data.get("models") or []
        return cls(
            models=tuple(ModelSummary.from_json(e) for e in entries),
            current=str(data["current-model"]) if data.get("current-model") else None,
        )

    @property
    def controller_model(self) -> ModelSummary | None:
        """The controller's own model, if listed."""
        return next((m for m in self.models if m.is_controller), None)

    def find(self, short_name: str) -> ModelSummary | None:
        """The model called ``short_name`` (or its qualified name), or None."""
        return next((m for m in self.models if short_name in (m.short_name, m.name)), None)

    def workload_models(self) -> tuple[ModelSummary, ...]:
        """Every model but the controller's."""
        return tuple(m for m in self.models if not m.is_controller)
