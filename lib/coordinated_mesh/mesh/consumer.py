"""The requirer side of the ``service_mesh`` relation, and the ``cross_model_mesh`` relations.

:class:`ServiceMeshConsumer` reads the beacon's enrolment ``labels`` and ``mesh_type`` (missing or
invalid data is "not ready", with a :attr:`~ServiceMeshConsumer.problem`, never an exception),
resolves the charm's declared policies into one ``MeshPolicy`` per related application (naming
cross-model clients' real application and model), and, on the leader, publishes them only when
they change. It neither touches Kubernetes nor sets statuses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence

import ops
import pydantic

from coordinated_mesh.charm.memory import DatabagMemory, write_changed
from coordinated_mesh.charm.metadata import require_declared
from coordinated_mesh.mesh.policies import (
    AppPolicy,
    MeshPolicy,
    RelationPeer,
    UnitPolicy,
    build_mesh_policies,
    policies_to_json,
)
from coordinated_mesh.parse import APP_NAME_PATTERN, MODEL_NAME_PATTERN, validate_mesh_labels
from coordinated_mesh.relations.databag import DatabagError, DatabagModel

__all__ = [
    "CrossModelMeshAppData",
    "CrossModelMeshInfo",
    "ServiceMeshConsumer",
    "ServiceMeshProviderAppData",
]

logger = logging.getLogger(__name__)

POLICIES_KEY = "policies"
"""The key of our application databag on the mesh relation holding the resolved policies."""


SELECTOR_LABEL = "app.kubernetes.io/name"
"""The label Juju's StatefulSet selects its pods by; never a mesh label."""


class ServiceMeshProviderAppData(DatabagModel):
    """What the beacon's leader publishes in its application databag.

    Unknown keys are ignored (the provider may add keys); both known keys are required.
    """

    labels: dict[str, str]
    """The pod labels that enrol a workload in the mesh; ``{}`` when the beacon labels the
    namespace instead (its ``model-on-mesh`` option)."""
    mesh_type: str = pydantic.Field(min_length=1, max_length=63)
    """The kind of mesh, e.g. ``istio``."""

    @pydantic.field_validator("labels")
    @classmethod
    def _labels_valid(cls, labels: dict[str, str]) -> dict[str, str]:
        # Juju's StatefulSet selects its pods by SELECTOR_LABEL: a pod template with another
        # value is rejected by Kubernetes (422) on every hook; no Juju key is a mesh label.
        return validate_mesh_labels(labels)


class CrossModelMeshInfo(pydantic.BaseModel):
    """Who a cross-model client really is: its application and model, not its offer alias."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")

    app_name: str = pydantic.Field(pattern=APP_NAME_PATTERN, max_length=63)
    juju_model_name: str = pydantic.Field(pattern=MODEL_NAME_PATTERN)


class CrossModelMeshAppData(DatabagModel):
    """The application databag of a ``cross_model_mesh`` relation (written by the requiring side)."""

    cmr_data: CrossModelMeshInfo


@dataclasses.dataclass(frozen=True)
class _ProviderState:
    """What was read from the mesh relation, and why it is not usable (``problem``)."""

    data: ServiceMeshProviderAppData | None = None
    problem: str | None = None
    waiting: bool = False
    """The problem is only that the beacon has not written yet (normal right after relating)."""


_Snapshot = tuple[int, tuple[tuple[str, str], ...]]
"""A relation id and the sorted items of a remote databag: the cache key of what was read."""


class ServiceMeshConsumer(ops.Object):
    """Join a service mesh: read the beacon's labels, publish our authorization policies.

    Args:
        charm: the charm using the mesh.
        policies: who may reach us, declared per relation endpoint.
        mesh_endpoint: the ``service_mesh`` requirer endpoint (``limit: 1``).
        cross_model_mesh_requires_endpoint: the ``cross_model_mesh`` requirer endpoint, where we tell
            cross-model servers who we are.
        cross_model_mesh_provides_endpoint: the ``cross_model_mesh`` provider endpoint, where
            cross-model clients tell us who they are.

    Raises:
        ValueError: a policy or one of the endpoint names is not a relation endpoint of the charm.
        TypeError: a policy is neither an :class:`AppPolicy` nor a :class:`UnitPolicy`.
    """

    def __init__(
        self,
        charm: ops.CharmBase,
        *,
        policies: Sequence[AppPolicy | UnitPolicy],
        mesh_endpoint: str = "service-mesh",
        cross_model_mesh_requires_endpoint: str = "require-cmr-mesh",
        cross_model_mesh_provides_endpoint: str = "provide-cmr-mesh",
    ):
        super().__init__(charm, f"service-mesh-consumer-{mesh_endpoint}")
        self._charm = charm
        self._mesh_endpoint = mesh_endpoint
        self._cmr_requires_endpoint = cross_model_mesh_requires_endpoint
        self._cmr_provides_endpoint = cross_model_mesh_provides_endpoint
        self._policies = tuple(policies)
        for policy in self._policies:
            if not isinstance(policy, AppPolicy | UnitPolicy):
                raise TypeError(
                    f"policies must be coordinated_mesh AppPolicy or UnitPolicy, "
                    f"not {type(policy).__qualname__}"
                )
        self._check_endpoints()
        # What was read (and logged) per remote databag content: each problem is logged once.
        self._provider_cache: dict[_Snapshot, _ProviderState] = {}
        self._cmr_cache: dict[_Snapshot, CrossModelMeshInfo | str] = {}
        self._observe()

    # --- set-up -------------------------------------------------------------------------------

    def _check_endpoints(self) -> None:
        relations = {
            self._mesh_endpoint: "mesh_endpoint",
            self._cmr_requires_endpoint: "cross_model_mesh_requires_endpoint",
            self._cmr_provides_endpoint: "cross_model_mesh_provides_endpoint",
        }
        relations.update({p.relation: f"the policy for {p.relation!r}" for p in self._policies})
        require_declared(self._charm, relations=relations)

    def _observe(self) -> None:
        on = self._charm.on
        publish_on: list[ops.BoundEvent] = [
            on[self._mesh_endpoint].relation_created,
            on[self._mesh_endpoint].relation_joined,
            on[self._mesh_endpoint].relation_changed,
            on[self._cmr_provides_endpoint].relation_created,
            on[self._cmr_provides_endpoint].relation_changed,
            on[self._cmr_provides_endpoint].relation_broken,
            on.leader_elected,
            on.upgrade_charm,
        ]
        for endpoint in sorted({p.relation for p in self._policies}):
            publish_on += [
                on[endpoint].relation_created,
                on[endpoint].relation_joined,
                on[endpoint].relation_broken,
            ]
        seen: set[str] = set()
        for bound in publish_on:
            if bound.event_kind not in seen:  # an endpoint may be both mesh input and policy
                seen.add(bound.event_kind)
                self.framework.observe(bound, self._on_policy_inputs_changed)
        for bound in (
            on[self._cmr_requires_endpoint].relation_created,
            on[self._cmr_requires_endpoint].relation_joined,
            on.leader_elected,
            on.upgrade_charm,
        ):
            self.framework.observe(bound, self._on_cmr_requirer_event)

    def _on_policy_inputs_changed(self, _event: ops.EventBase) -> None:
        self._provider_state()  # logs the beacon's readiness once in this hook
        self.publish_policies()

    def _on_cmr_requirer_event(self, _event: ops.EventBase) -> None:
        self.publish_cmr_data()

    # --- the beacon's data --------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the charm is related to a mesh (whether or not the beacon's data is ready)."""
        return bool(self.model.relations[self._mesh_endpoint])

    @property
    def ready(self) -> bool:
        """Whether the beacon has published valid labels and mesh type."""
        return self._provider_state().data is not None

    @property
    def problem(self) -> str | None:
        """Why the mesh is related but not ready, naming the relation; ``None`` otherwise.

        ``None`` both when ready and when not related at all (not being on a mesh is no problem).
        """
        return self._provider_state().problem

    def labels(self) -> dict[str, str]:
        """The labels that enrol our pods in the mesh (valid Kubernetes labels).

        ``{}`` when not ready, and also when the beacon enrols the whole namespace (check
        :attr:`ready` to tell them apart).
        """
        data = self._provider_state().data
        return {} if data is None else dict(sorted(data.labels.items()))

    def mesh_type(self) -> str | None:
        """The kind of mesh (e.g. ``"istio"``), or ``None`` when not ready."""
        data = self._provider_state().data
        return None if data is None else data.mesh_type

    def _provider_state(self) -> _ProviderState:
        relations = self.model.relations[self._mesh_endpoint]
        name = self._mesh_endpoint
        if not relations:
            return _ProviderState()
        if len(relations) > 1:
            apps = ", ".join(sorted(r.app.name for r in relations))
            return self._log_once(
                (-1, tuple((str(r.id), r.app.name) for r in relations)),
                _ProviderState(
                    problem=f"relation {name!r} has {len(relations)} mesh providers ({apps}); "
                    "remove all but one"
                ),
            )
        relation = relations[0]
        remote = relation.app.name
        try:
            snapshot: _Snapshot = (relation.id, tuple(sorted(relation.data[relation.app].items())))
        except ops.ModelError as e:
            return _ProviderState(problem=f"cannot read {remote}'s data on relation {name!r}: {e}")
        cached = self._provider_cache.get(snapshot)
        if cached is not None:
            return cached
        if not snapshot[1]:
            state = _ProviderState(
                problem=f"{remote} has not published the mesh labels on relation {name!r} yet",
                waiting=True,
            )
        else:
            try:
                state = _ProviderState(data=ServiceMeshProviderAppData.load(dict(snapshot[1])))
            except DatabagError as e:
                state = _ProviderState(
                    problem=f"invalid data from {remote} on relation {name!r}: {e}"
                )
        return self._log_once(snapshot, state)

    def _log_once(self, snapshot: _Snapshot, state: _ProviderState) -> _ProviderState:
        if snapshot in self._provider_cache:
            return self._provider_cache[snapshot]
        self._provider_cache[snapshot] = state
        if state.data is not None:
            pass  # ready: the status says so; a log line would cost a juju-log on every hook
        elif state.waiting:
            logger.info("service mesh not ready: %s", state.problem)
        else:
            logger.warning("service mesh not ready: %s", state.problem)
        return state

    # --- policies -----------------------------------------------------------------------------

    @property
    def cross_model_problems(self) -> list[str]:
        """Invalid ``cmr_data`` received on the provides endpoint, one line per remote app.

        The applications concerned are treated as if they were in our model (as when they send
        nothing); everything else keeps working.
        """
        _, problems = self._cross_model_sources()
        return problems

    def mesh_policies(self) -> list[MeshPolicy]:
        """The policies for the current relations: one per (declaration, related application).

        Sources are the related applications in our model, except cross-model clients that told
        us (over the provides endpoint, under the same remote application name) their real
        application and model. Sorted and deduplicated, so equal relations give equal output.
        """
        sources, _ = self._cross_model_sources()
        namespace = self.model.name
        peers: dict[str, list[RelationPeer]] = {}
        for endpoint in sorted({p.relation for p in self._policies}):
            for relation in self.model.relations[endpoint]:
                remote = relation.app.name
                peer = sources.get(remote) or RelationPeer(app_name=remote, namespace=namespace)
                peers.setdefault(endpoint, []).append(peer)
        return build_mesh_policies(
            self._policies, peers, app_name=self._charm.app.name, namespace=namespace
        )

    def _cross_model_sources(self) -> tuple[dict[str, RelationPeer], list[str]]:
        sources: dict[str, RelationPeer] = {}
        problems: list[str] = []
        for relation in self.model.relations[self._cmr_provides_endpoint]:
            remote = relation.app.name
            try:
                items = tuple(sorted(relation.data[relation.app].items()))
            except ops.ModelError as e:
                problems.append(self._cmr_problem(remote, f"cannot read: {e}"))
                continue
            if not dict(items).get("cmr_data"):
                continue  # not sent yet
            info = self._read_cmr_data((relation.id, items), remote)
            if isinstance(info, str):
                problems.append(info)
            else:
                sources[remote] = RelationPeer(
                    app_name=info.app_name, namespace=info.juju_model_name
                )
        return sources, problems

    def _cmr_problem(self, remote: str, detail: str) -> str:
        return (
            f"invalid cmr_data from {remote} on relation {self._cmr_provides_endpoint!r}: {detail}"
        )

    def _read_cmr_data(self, snapshot: _Snapshot, remote: str) -> CrossModelMeshInfo | str:
        cached = self._cmr_cache.get(snapshot)
        if cached is not None:
            return cached
        try:
            result: CrossModelMeshInfo | str = CrossModelMeshAppData.load(
                dict(snapshot[1])
            ).cmr_data
        except DatabagError as e:
            result = self._cmr_problem(remote, str(e))
            logger.warning("%s; treating %s as an application of this model", result, remote)
        self._cmr_cache[snapshot] = result
        return result

    # --- writing (leader only) ----------------------------------------------------------------

    def publish_policies(self, memory: DatabagMemory | None = None) -> bool:
        """Publish :meth:`mesh_policies` on the mesh relation, if we lead and they changed.

        With ``memory``, policies equal to those this unit wrote last are not read again.

        Returns:
            Whether anything was written. Non-leaders never write (and never raise): ``False``.
        """
        if not self._charm.unit.is_leader():
            return False
        relations = self.model.relations[self._mesh_endpoint]
        if not relations:
            return False
        wanted = policies_to_json(self.mesh_policies())
        changed = False
        for relation in relations:
            changed |= write_changed(relation.data[self._charm.app], {POLICIES_KEY: wanted}, memory)
        if changed:
            logger.info("published %d mesh policies", len(json.loads(wanted)))
        return changed

    def publish_cmr_data(self, memory: DatabagMemory | None = None) -> bool:
        """Tell cross-model servers (on the requires endpoint) our real application and model.

        With ``memory``, data equal to what this unit wrote last is not read again.

        Returns:
            Whether anything was written. Non-leaders never write: ``False``.
        """
        if not self._charm.unit.is_leader():
            return False
        data = CrossModelMeshAppData(
            cmr_data=CrossModelMeshInfo(
                app_name=self._charm.app.name, juju_model_name=self.model.name
            )
        )
        changed = False
        for relation in self.model.relations[self._cmr_requires_endpoint]:
            changed = data.write(relation.data[self._charm.app], memory) or changed
        return changed
