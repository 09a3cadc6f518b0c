#!/usr/bin/env python3
"""Kubernetes API calls per hook of the real charms, against a real kube-apiserver (envtest).

Starts etcd and kube-apiserver (``tests/support/envtest.py``), creates what Juju creates for each
application (ServiceAccount, StatefulSet, Service) and Istio's ``AuthorizationPolicy`` CRD, then
runs the real coordinator and worker charms' hooks with ``ops.testing``. The charms build their own
``lightkube.Client()`` from ``KUBECONFIG`` (pointed at envtest), so every request they make is the
real one; each is recorded at the HTTP transport and classified GET (one object), LIST (a
collection), POST, PUT, PATCH or DELETE.

Cases, in order (one model for the no-mesh and Istio-missing cases, one for the others):

* coordinator leader, no mesh, 2 worker apps: first hook (``config-changed``), steady state
  (two ``update-status``: the Service's turn, then the policies');
* coordinator leader, mesh, 2 worker apps: first hook (``service-mesh-relation-changed``),
  steady state on ``update-status`` (the periodic check: the Service's turn), on another hook
  (``config-changed``), and on the next ``update-status`` (the policies' turn);
* coordinator non-leader, mesh;
* worker leader (given the data the coordinator just published): first hook
  (``cluster-relation-changed``), steady state (``update-status``, ``config-changed``); worker
  non-leader;
* mesh removed: the coordinator's ``service-mesh-relation-broken``, the steady state after it,
  and the worker leader receiving the labels without the mesh's;
* then Istio's CRD is deleted: coordinator leader, mesh related, Istio missing (first hook and
  steady state; the expected status is blocked, naming ``istio-k8s``).

The anchor's figures (per hook, every hook: it never diffs) are printed next to ours: 7 (leader, no
mesh), 12 (leader, mesh, 2 worker apps), a crash (non-leader, mesh), 6 (worker leader), and a
failed hook when the ``AuthorizationPolicy`` CRD is missing (its "Known defects").

A second table lists every request of every hook, in order, with the unit's status.

Exit status: 0; 1 if an invariant does not hold (a steady-state hook writes, or an active unit's
steady-state hook reads more than :data:`MAX_STEADY_READS` objects, a non-leader calls
Kubernetes, a hook raises): the tables are printed first, the failures on stderr; 2 if envtest
cannot run (no ``kube-apiserver``/``etcd``: set ``KUBEBUILDER_ASSETS`` or run
``tools/envtest.sh``, which builds them into ``~/.cache/envtest/1.20.2``; or no ``openssl``).

Usage (from the repository root; about 10 s)::

    .venv/bin/python tools/bench/k8s_calls.py
    KUBEBUILDER_ASSETS=/path/to/bin .venv/bin/python tools/bench/k8s_calls.py
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import itertools
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    MODEL_UUID,
    add_repo_paths,
    coordinator_cluster_relation,
    coordinator_containers,
    markdown_table,
    mesh_relation,
    patched,
    resolv_conf,
    section,
    status_text,
)

if TYPE_CHECKING:
    from lightkube import Client
    from ops import testing

    from tests.support.envtest import Envtest, Request, RequestLog

add_repo_paths()

COORDINATOR = "mesh-coordinator"
WORKER_APPS = ("worker-a", "worker-b")
WORKER_UNITS = 2
VERBS = ("GET", "LIST", "POST", "PUT", "PATCH", "DELETE")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANCHOR = {
    "coordinator leader, no mesh": "7",
    "coordinator leader, mesh, 2 worker apps": "12",
    "coordinator non-leader, mesh": "crash",
    "worker leader": "6",
    "coordinator leader, mesh, Istio missing": "hook fails",
}
"""The anchor's calls per hook (``coordinated-workers`` 4.1.4, counting fake client)."""
STEADY = "steady state"
MAX_STEADY_READS = 2
"""The issue's target: Kubernetes reads of a steady-state hook (an active unit's)."""
SERVICE_TURN = "update-status, the Service's turn"
POLICIES_TURN = "update-status, the policies' turn"
MESHED_LEADER = "coordinator leader, mesh, 2 worker apps"


class EnvtestUnavailableError(Exception):
    """envtest cannot run here; the message says what is missing."""


# --- classifying requests ------------------------------------------------------------------------


def verb(request: Request) -> str:
    """``GET`` for one object, ``LIST`` for a collection, else the HTTP method."""
    if request.method != "GET":
        return request.method
    parts = request.path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) > 2 and rest[0] == "namespaces":
        rest = rest[2:]
    return "GET" if len(rest) > 1 and "watch=" not in request.query else "LIST"


def describe(request: Request, namespace: str) -> str:
    """``VERB resource[/name]``, ``(cluster-wide)`` for a LIST outside ``namespace``."""
    parts = request.path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    scoped = len(rest) > 2 and rest[0] == "namespaces"
    if scoped:
        rest = rest[2:]
    text = f"{verb(request)} {'/'.join(rest)}"
    if not scoped and rest and rest[0] != "namespaces":
        text += " (cluster-wide)"
    elif scoped and parts[parts.index("namespaces") + 1] != namespace:
        text += " (other namespace)"
    return text


@dataclasses.dataclass(frozen=True)
class HookCalls:
    """The Kubernetes requests of one hook."""

    case: str
    hook: str
    requests: tuple[str, ...]
    """Each request as :func:`describe` gives it, in order."""
    counts: collections.Counter[str]
    status: str
    seconds: float
    error: str | None = None

    @property
    def total(self) -> int:
        """Every request."""
        return sum(self.counts.values())

    @property
    def writes(self) -> int:
        """POST, PUT, PATCH and DELETE requests."""
        return sum(n for v, n in self.counts.items() if v in WRITES)

    @property
    def steady(self) -> bool:
        """Whether nothing changed since the previous hook of this case."""
        return self.hook.startswith(STEADY)

    @property
    def anchor(self) -> str:
        """The anchor's figure for this case, ``-`` when it has none."""
        return ANCHOR.get(self.case, "-")


# --- running hooks -------------------------------------------------------------------------------


def _namespace(client: Client) -> str:
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Namespace

    name = f"bench-{secrets.token_hex(4)}"
    client.create(Namespace(metadata=ObjectMeta(name=name)))
    return name


def _model(namespace: str) -> testing.Model:
    from ops import testing

    return testing.Model(name=namespace, uuid=MODEL_UUID)


def _relation(
    state: testing.State, endpoint: str, remote_app: str | None = None
) -> testing.Relation:
    from ops import testing

    (found,) = [
        r
        for r in state.relations
        if r.endpoint == endpoint
        and isinstance(r, testing.Relation)
        and remote_app in (None, r.remote_app_name)
    ]
    return found


def _coordinator_state(
    namespace: str, etc_nginx: Path, *, leader: bool, mesh: bool
) -> testing.State:
    from ops import testing

    relations = [coordinator_cluster_relation(app, WORKER_UNITS, namespace) for app in WORKER_APPS]
    if mesh:
        relations.append(mesh_relation(namespace))
    return testing.State(
        leader=leader,
        model=_model(namespace),
        relations=relations,
        containers=coordinator_containers(etc_nginx),
    )


def _worker_state(
    namespace: str, etc_prometheus: Path, coordinator_data: dict[str, str], *, leader: bool
) -> testing.State:
    from ops import testing

    etc_prometheus.mkdir(parents=True, exist_ok=True)
    mount = testing.Mount(location="/etc/prometheus", source=etc_prometheus)
    return testing.State(
        leader=leader,
        model=_model(namespace),
        relations=[
            testing.Relation(
                "cluster", remote_app_name=COORDINATOR, remote_app_data=coordinator_data
            )
        ],
        containers=[testing.Container("prometheus", can_connect=True, mounts={"etc": mount})],
    )


def _published(coordinator: testing.State) -> dict[str, str]:
    """What the coordinator published to the first worker application."""
    return dict(_relation(coordinator, "cluster", WORKER_APPS[0]).local_app_data)


class Bench:
    """Runs every case's hooks (see the module docstring), recording each hook's requests.

    Args:
        log: the log the recording HTTP transport appends to.
        workdir: where the containers' mounted directories go.
        plain: the namespace (model) of the no-mesh case.
        meshed: the namespace of the other cases.
    """

    def __init__(
        self, log: RequestLog, workdir: Path, *, plain: str, meshed: str, resolv: Path
    ) -> None:
        from ops import testing

        from tests.support.charm_loader import load_charm_module
        from tests.support.coordinator import coordinator_charm_type

        self.log = log
        self.workdir = workdir
        self.plain = plain
        self.meshed = meshed
        # The real Kubernetes (envtest, through KUBECONFIG), a fixed DNS resolver.
        self.coordinator = testing.Context(
            coordinator_charm_type(kubernetes=None, resolv_conf=str(resolv)), app_name=COORDINATOR
        )
        self.worker = testing.Context(
            load_charm_module("worker").MeshWorkerCharm, app_name=WORKER_APPS[0], unit_id=0
        )
        self.hooks: list[HookCalls] = []

    def run(
        self,
        case: str,
        hook: str,
        ctx: testing.Context[Any],
        event: Any,
        state: testing.State,
    ) -> testing.State | None:
        """Run one hook, record its requests; ``None`` if the hook raised (recorded as a crash)."""
        self.log.clear()
        start = time.perf_counter()
        out: testing.State | None = None
        error: str | None = None
        try:
            out = ctx.run(event, state)
        except Exception as e:  # the figure is "crash": report it, keep measuring the rest
            cause = e.__cause__ or e
            error = f"{type(cause).__name__}: {cause}".splitlines()[0]
        seconds = time.perf_counter() - start
        requests = list(self.log.requests)
        namespace = state.model.name
        self.hooks.append(
            HookCalls(
                case=case,
                hook=hook,
                requests=tuple(describe(r, namespace) for r in requests),
                counts=collections.Counter(verb(r) for r in requests),
                status=f"crash: {error}" if error else status_text(out.unit_status if out else ""),
                seconds=seconds,
                error=error,
            )
        )
        return out

    def run_all(self) -> list[HookCalls]:
        """Every case with Istio's CRD installed, in order; the calls of each hook run."""
        self.no_mesh()
        meshed = self.mesh()
        if meshed is not None:
            self.coordinator_non_leader()
            worker = self.workers(_published(meshed))
            self.mesh_removed(meshed, worker)
        return self.hooks

    def no_mesh(self) -> None:
        """Coordinator leader, no mesh: first hook and steady state."""
        ctx, case = self.coordinator, "coordinator leader, no mesh"
        state = _coordinator_state(self.plain, self.workdir / "plain", leader=True, mesh=False)
        out = self.run(case, "first hook (config-changed)", ctx, ctx.on.config_changed(), state)
        if out is not None:
            out = self.run(case, f"{STEADY} ({SERVICE_TURN})", ctx, ctx.on.update_status(), out)
        if out is not None:
            self.run(case, f"{STEADY} ({POLICIES_TURN})", ctx, ctx.on.update_status(), out)

    def mesh(self) -> testing.State | None:
        """Coordinator leader, mesh, 2 worker apps: first hook and steady state."""
        ctx, case = self.coordinator, MESHED_LEADER
        state = _coordinator_state(self.meshed, self.workdir / "leader", leader=True, mesh=True)
        event = ctx.on.relation_changed(_relation(state, "service-mesh"), remote_unit=0)
        out = self.run(case, "first hook (service-mesh-relation-changed)", ctx, event, state)
        if out is None:
            return None
        hook = f"{STEADY} ({SERVICE_TURN})"
        out = self.run(case, hook, ctx, ctx.on.update_status(), out) or out
        between = self.run(case, f"{STEADY} (config-changed)", ctx, ctx.on.config_changed(), out)
        out = between or out
        hook = f"{STEADY} ({POLICIES_TURN})"
        return self.run(case, hook, ctx, ctx.on.update_status(), out) or out

    def coordinator_non_leader(self) -> None:
        """Coordinator non-leader, mesh (the leader has set everything up)."""
        ctx = self.coordinator
        state = _coordinator_state(self.meshed, self.workdir / "follower", leader=False, mesh=True)
        self.run(
            "coordinator non-leader, mesh", "update-status", ctx, ctx.on.update_status(), state
        )

    def workers(self, published: dict[str, str]) -> testing.State | None:
        """Worker leader (first hook, steady state) and non-leader, given ``published``."""
        ctx, case = self.worker, "worker leader"
        state = _worker_state(self.meshed, self.workdir / "worker", published, leader=True)
        event = ctx.on.relation_changed(_relation(state, "cluster"), remote_unit=0)
        out = self.run(case, "first hook (cluster-relation-changed)", ctx, event, state)
        if out is not None:
            out = self.run(case, f"{STEADY} (update-status)", ctx, ctx.on.update_status(), out)
        if out is not None:
            hook = f"{STEADY} (config-changed)"
            out = self.run(case, hook, ctx, ctx.on.config_changed(), out) or out
        state = _worker_state(self.meshed, self.workdir / "worker-2", published, leader=False)
        self.run("worker non-leader", "update-status", ctx, ctx.on.update_status(), state)
        return out

    def mesh_removed(self, coordinator: testing.State, worker: testing.State | None) -> None:
        """The mesh goes: the coordinator's transition, its steady state, the worker's."""
        ctx, case = self.coordinator, "mesh removed"
        event = ctx.on.relation_broken(_relation(coordinator, "service-mesh"))
        out = self.run(case, "coordinator: service-mesh-relation-broken", ctx, event, coordinator)
        if out is None:
            return
        without_mesh = dataclasses.replace(
            out, relations=[r for r in out.relations if r.endpoint != "service-mesh"]
        )
        hook = f"{STEADY}: coordinator (update-status)"
        out = self.run(case, hook, ctx, ctx.on.update_status(), without_mesh)
        if out is None or worker is None:
            return
        ctx = self.worker
        relation = dataclasses.replace(
            _relation(worker, "cluster"), remote_app_data=_published(out)
        )
        state = dataclasses.replace(worker, relations=[relation])
        event = ctx.on.relation_changed(relation, remote_unit=0)
        out = self.run(case, "worker leader: cluster-relation-changed", ctx, event, state)
        if out is not None:
            hook = f"{STEADY}: worker leader (update-status)"
            self.run(case, hook, ctx, ctx.on.update_status(), out)

    def istio_missing(self) -> None:
        """Coordinator leader, mesh related, Istio's CRD not installed: first hook, steady state.

        Runs in the no-mesh case's model (its labels are in place); the CRD must be gone.
        """
        ctx, case = self.coordinator, "coordinator leader, mesh, Istio missing"
        state = _coordinator_state(self.plain, self.workdir / "no-istio", leader=True, mesh=True)
        event = ctx.on.relation_changed(_relation(state, "service-mesh"), remote_unit=0)
        out = self.run(case, "first hook (service-mesh-relation-changed)", ctx, event, state)
        if out is not None:
            self.run(case, f"{STEADY} (update-status)", ctx, ctx.on.update_status(), out)


def run_cases(envtest: Envtest, log: RequestLog, workdir: Path) -> list[HookCalls]:
    """Set up envtest (CRD, namespaces, Juju's objects) and run every case."""
    from tests.support.envtest import (
        create_juju_app,
        install_authorization_policy_crd,
        remove_authorization_policy_crd,
    )

    with envtest.client() as admin:
        install_authorization_policy_crd(admin)  # Istio is installed in this cluster
        plain, meshed = _namespace(admin), _namespace(admin)
        for namespace in (plain, meshed):
            for app in (COORDINATOR, *WORKER_APPS):
                create_juju_app(admin, app, namespace)
    bench = Bench(log, workdir, plain=plain, meshed=meshed, resolv=resolv_conf(workdir, meshed))
    bench.run_all()
    with envtest.client() as admin:
        remove_authorization_policy_crd(admin)  # now Istio is gone
    bench.istio_missing()
    return bench.hooks


# --- reporting -----------------------------------------------------------------------------------


def calls_section(hooks: Sequence[HookCalls]) -> str:
    """The ``Kubernetes API calls per hook`` section."""
    rows = [
        [h.case, h.hook, *(h.counts.get(v, 0) for v in VERBS), h.total, h.writes, h.anchor]
        for h in hooks
    ]
    headers = ["case", "hook", *VERBS, "total", "writes", "anchor"]
    steady_writes = sum(h.writes for h in hooks if h.steady)
    steady_reads = [
        f"{h.case} {h.hook.removeprefix(STEADY).strip()}: {h.total}"
        for h in hooks
        if h.steady and h.case in (MESHED_LEADER, "worker leader")
    ]
    return section(
        "Kubernetes API calls per hook",
        markdown_table(headers, rows),
        [
            "GET: one object; LIST: a collection. The anchor's figure is per hook, every hook.",
            f"steady-state writes: {steady_writes}",
            f"steady-state reads (target <= {MAX_STEADY_READS}; update-status checks the "
            "Service and the policies in turn): " + "; ".join(steady_reads),
            f"non-leader calls: {sum(h.total for h in hooks if 'non-leader' in h.case)}",
        ],
    )


def collapse(requests: Sequence[str]) -> list[str]:
    """Runs of one verb on one resource type as ``VERB resource xN``; single requests as they are.

    ``["POST authorizationpolicies", "POST authorizationpolicies", "GET services/a"]`` gives
    ``["POST authorizationpolicies x2", "GET services/a"]``.
    """
    out: list[str] = []
    for kind, run in itertools.groupby(requests, key=lambda text: text.split("/")[0]):
        items = list(run)
        out.append(f"{kind} x{len(items)}" if len(items) > 1 else items[0])
    return out


def requests_section(hooks: Sequence[HookCalls]) -> str:
    """The ``Requests and statuses per hook`` section."""
    rows = [
        [
            h.case,
            h.hook,
            f"{h.seconds * 1000:.0f}",
            h.status,
            ", ".join(collapse(h.requests)) or "-",
        ]
        for h in hooks
    ]
    headers = ["case", "hook", "hook (ms)", "unit status", "requests, in order"]
    return section("Requests and statuses per hook", markdown_table(headers, rows))


def failures(hooks: Sequence[HookCalls]) -> list[str]:
    """The invariants that do not hold."""
    found: list[str] = []
    for h in hooks:
        label = f"{h.case}, {h.hook}"
        if h.error:
            found.append(f"{label}: the hook raised {h.error}")
        if h.steady and h.writes:
            found.append(f"{label}: {h.writes} writes in a steady state")
        if h.steady and h.status.startswith("active") and h.total > MAX_STEADY_READS:
            found.append(f"{label}: {h.total} reads in a steady state (at most {MAX_STEADY_READS})")
        if "non-leader" in h.case and h.total:
            found.append(f"{label}: a non-leader made {h.total} Kubernetes requests")
    return found


# --- main ----------------------------------------------------------------------------------------


def start_envtest(workdir: Path) -> contextlib.AbstractContextManager[Envtest]:
    """A context manager running envtest in ``workdir``.

    Raises:
        EnvtestUnavailableError: the binaries or ``openssl`` are missing.
    """
    from tests.support.envtest import ENVTEST_DIR, find_binaries, run_envtest

    binaries = find_binaries()
    if binaries is None:
        raise EnvtestUnavailableError(
            "no envtest binaries (kube-apiserver, etcd): set KUBEBUILDER_ASSETS or run "
            f"tools/envtest.sh to build them into {ENVTEST_DIR}"
        )
    if shutil.which("openssl") is None:
        raise EnvtestUnavailableError(
            "openssl is needed to make kube-apiserver's service-account key"
        )
    return run_envtest(*binaries, workdir)


def measure(workdir: Path) -> list[HookCalls]:
    """Start envtest, point ``KUBECONFIG`` at it, record every hook's requests."""
    from tests.support.envtest import RequestLog, httpx, recording_handler

    server_dir = workdir / "envtest"
    server_dir.mkdir()
    with start_envtest(server_dir) as envtest:
        log = RequestLog()
        for variable in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
            os.environ.pop(variable, None)  # lightkube would prefer in-cluster settings
        os.environ["KUBECONFIG"] = str(envtest.kubeconfig)
        handler = recording_handler(envtest, log)
        with patched(httpx.HTTPTransport, "handle_request", handler):
            return run_cases(envtest, log, workdir)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the tables; see the module docstring for the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-k8s-") as tmp:
        try:
            hooks = measure(Path(tmp))
        except EnvtestUnavailableError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(calls_section(hooks), flush=True)
    print(requests_section(hooks), flush=True)
    found = failures(hooks)
    for failure in found:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
