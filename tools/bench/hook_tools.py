#!/usr/bin/env python3
"""What Juju charges per hook: hook-tool calls by tool, Kubernetes calls, wall time, import time.

Under Juju every ``relation-get``, ``relation-list``, ``juju-log``, ... is a process. Prints:

``Hook-tool calls per steady-state hook``
    The real coordinator charm (leader and non-leader) at 1 x 1, 3 x 10, 3 x 100 and 10 x 100
    (worker applications x units) with the mesh, Loki, remote write, tracing, Prometheus and
    Grafana related, and the real worker charm (leader, non-leader), under ``ops.testing``: the
    calls ``ops`` would make, by tool (counted at ``ops.testing``'s model backend, where ``ops``
    runs one tool per call; ``is-leader`` once per dispatch, as ``ops`` caches it), the median
    in-process wall time, Kubernetes backend calls (reads, writes; the requests behind them:
    ``k8s_calls.py``), and the ``metrics-endpoint`` application databag's size.
``Cold import``
    Each charm module (``coordinator/src/charm.py``, ``worker/src/charm.py``) and ``ops``.
``Dispatch``
    With ``--dispatch``: see ``tools/bench/dispatch.py`` (each hook a real process).

Usage (from the repository root; about 30 s)::

    .venv/bin/python tools/bench/hook_tools.py [--sizes 1x1,3x10,3x100,10x100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    MODEL_UUID,
    ROOT,
    add_repo_paths,
    coordinator_cluster_relation,
    markdown_table,
    median,
    mesh_relation,
    resolv_conf,
    section,
    status_text,
    telemetry_relations,
)

if TYPE_CHECKING:
    from ops import testing

add_repo_paths()

MODEL = "bench"
COORDINATOR = "coordinator"
DEFAULT_SIZES = ((1, 1), (3, 10), (3, 100), (10, 100))

BACKEND_TOOLS: dict[str, str] = {
    "relation_ids": "relation-ids",
    "relation_list": "relation-list",
    "relation_remote_app_name": "relation-list",
    "relation_get": "relation-get",
    "relation_set": "relation-set",
    "relation_model_get": "relation-model-get",
    "config_get": "config-get",
    "is_leader": "is-leader",
    "resource_get": "resource-get",
    "status_get": "status-get",
    "status_set": "status-set",
    "storage_list": "storage-list",
    "storage_get": "storage-get",
    "storage_add": "storage-add",
    "action_get": "action-get",
    "action_set": "action-set",
    "action_log": "action-log",
    "action_fail": "action-fail",
    "application_version_set": "application-version-set",
    "juju_log": "juju-log",
    "network_get": "network-get",
    "planned_units": "goal-state",
    "secret_get": "secret-get",
    "secret_info_get": "secret-info-get",
    "secret_set": "secret-set",
    "secret_add": "secret-add",
    "secret_grant": "secret-grant",
    "secret_revoke": "secret-revoke",
    "secret_remove": "secret-remove",
    "open_port": "open-port",
    "close_port": "close-port",
    "opened_ports": "opened-ports",
    "credential_get": "credential-get",
}
"""``ops`` model backend method -> the hook tool it runs, once per call.

Source: ``ops/model.py`` (``_ModelBackend``, ops 3.9), where each of these methods wraps exactly
one ``ops.hookcmds`` call (``_wrap_hookcmd``). ``relation_remote_app_name`` runs
``relation-list --app`` only when ``JUJU_REMOTE_APP`` does not answer; counted as one call (an
upper bound). ``is_leader`` is cached by ``ops`` for 30 s (``LEASE_RENEWAL_PERIOD``), which
``ops.testing``'s backend does not do: :class:`ToolCounter` counts it once per dispatch. The
warning ``ops.testing`` itself logs about a mounted container filesystem is not counted.
"""

SHOWN_TOOLS = ("relation-get", "relation-list", "relation-ids", "relation-set", "juju-log")
"""Tools with their own column; the rest are summed in ``other``."""


def _is_scenario_warning(args: Sequence[Any]) -> bool:
    """``ops.testing``'s own warning about a container's filesystem (Juju never logs it)."""
    message = args[1] if len(args) > 1 else ""
    return isinstance(message, str) and "has a non-empty filesystem that will be wiped" in message


class ToolCounter:
    """Counts hook-tool calls at ``ops.testing``'s model backend (see :data:`BACKEND_TOOLS`)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._leader_checked: set[int] = set()

    @contextlib.contextmanager
    def installed(self) -> Generator[None]:
        """Count while the block runs (every backend created in it)."""
        from scenario.mocking import _MockModelBackend  # pyright: ignore[reportPrivateUsage]

        originals: dict[str, Any] = {}
        for method, tool in BACKEND_TOOLS.items():
            original = getattr(_MockModelBackend, method, None)
            if original is None:
                continue
            originals[method] = original
            setattr(_MockModelBackend, method, self._counting(method, tool, original))
        try:
            yield
        finally:
            for method, original in originals.items():
                setattr(_MockModelBackend, method, original)

    def _counting(self, method: str, tool: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(backend: object, *args: Any, **kwargs: Any) -> Any:
            if method == "juju_log" and _is_scenario_warning(args):
                return original(backend, *args, **kwargs)
            if method != "is_leader" or id(backend) not in self._leader_checked:
                self.counts[tool] += 1
                self._leader_checked.add(id(backend)) if method == "is_leader" else None
            return original(backend, *args, **kwargs)

        return counted

    def take(self) -> collections.Counter[str]:
        """The counts so far, and start again."""
        counts, self.counts = self.counts, collections.Counter()
        self._leader_checked.clear()
        return counts


@dataclasses.dataclass(frozen=True)
class HookFigures:
    """One steady-state hook of one case."""

    case: str
    apps: int
    units: int
    tools: collections.Counter[str]
    wall_ms: float
    kubernetes_reads: int
    kubernetes_writes: int
    scrape_bytes: int | None
    status: str

    @property
    def total(self) -> int:
        """Every hook-tool call of the hook."""
        return sum(self.tools.values())


KUBERNETES_WRITES = frozenset({"delete_policies"})
"""Backend calls that always write; ``reconcile_*`` write only on a difference (counted by the
fake in ``writes``)."""


def worker_app(number: int) -> str:
    """The name of worker application ``number`` (``worker-a``, ...; Juju names need letters)."""
    letters = ""
    number += 1
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"worker-{letters}"


def coordinator_state(apps: int, units: int, *, leader: bool, workdir: Path) -> testing.State:
    """The coordinator's state with ``apps`` worker applications of ``units`` units each."""
    from ops import testing

    from tests.support.coordinator import running_containers

    return testing.State(
        leader=leader,
        model=testing.Model(name=MODEL, uuid=MODEL_UUID),
        relations=[
            *(coordinator_cluster_relation(worker_app(a), units, MODEL) for a in range(apps)),
            mesh_relation(MODEL),
            *telemetry_relations(),
            testing.Relation("metrics-endpoint", remote_app_name="prometheus"),
            testing.Relation("grafana-source", remote_app_name="grafana"),
        ],
        containers=running_containers(workdir / "etc-nginx"),
    )


def _scrape_bytes(state: testing.State) -> int | None:
    for relation in state.relations:
        if relation.endpoint == "metrics-endpoint":
            return sum(len(k) + len(v) for k, v in relation.local_app_data.items())
    return None


def run_coordinator(
    counter: ToolCounter, apps: int, units: int, *, leader: bool, repeat: int, workdir: Path
) -> tuple[HookFigures, testing.State]:
    """A first hook, then ``repeat`` steady-state ``update-status`` hooks; the last one's figures."""
    from ops import testing

    from tests.support.coordinator import FakeKubernetes, coordinator_charm_type

    kube = FakeKubernetes()
    charm_type = coordinator_charm_type(
        kubernetes=kube, resolv_conf=str(resolv_conf(workdir, MODEL))
    )
    ctx = testing.Context(charm_type, app_name=COORDINATOR)
    # The first hook as the leader publishes everything (a non-leader finds it published).
    state = coordinator_state(apps, units, leader=True, workdir=workdir)
    state = ctx.run(ctx.on.config_changed(), state)
    state = dataclasses.replace(state, leader=leader)
    walls: list[float] = []
    tools: collections.Counter[str] = collections.Counter()
    calls_before = writes_before = 0
    with counter.installed():
        for _ in range(repeat):
            counter.take()
            calls_before, writes_before = len(kube.calls), len(kube.writes)
            start = time.perf_counter()
            state = ctx.run(ctx.on.update_status(), state)
            walls.append((time.perf_counter() - start) * 1000)
            tools = counter.take()
    calls = kube.calls[calls_before:]
    figures = HookFigures(
        case=f"coordinator {'leader' if leader else 'non-leader'}",
        apps=apps,
        units=units,
        tools=tools,
        wall_ms=median(walls),
        kubernetes_reads=sum(1 for c in calls if c not in KUBERNETES_WRITES),
        kubernetes_writes=len(kube.writes) - writes_before,
        scrape_bytes=_scrape_bytes(state),
        status=status_text(state.unit_status),
    )
    return figures, state


def run_worker(
    counter: ToolCounter,
    coordinator_data: dict[str, str],
    *,
    leader: bool,
    repeat: int,
    workdir: Path,
) -> HookFigures:
    """The worker charm given what the coordinator published: first hook, then steady state."""
    from ops import testing

    from tests.support.worker import FakeLabels, worker_context

    labels = FakeLabels()
    ctx = worker_context(labels, app_name=worker_app(0), unit_id=0)
    relation = testing.Relation(
        "cluster",
        remote_app_name=COORDINATOR,
        remote_app_data=coordinator_data,
        remote_units_data={0: {}},
    )
    state = testing.State(
        leader=True,
        model=testing.Model(name=MODEL, uuid=MODEL_UUID),
        relations=[relation],
        containers=[_prometheus_container(workdir)],
    )
    state = ctx.run(ctx.on.config_changed(), state)
    state = dataclasses.replace(state, leader=leader)
    walls: list[float] = []
    tools: collections.Counter[str] = collections.Counter()
    reads_before = writes_before = 0
    with counter.installed():
        for _ in range(repeat):
            counter.take()
            reads_before, writes_before = labels.reads, len(labels.writes)
            start = time.perf_counter()
            state = ctx.run(ctx.on.update_status(), state)
            walls.append((time.perf_counter() - start) * 1000)
            tools = counter.take()
    return HookFigures(
        case=f"worker {'leader' if leader else 'non-leader'}",
        apps=1,
        units=1,
        tools=tools,
        wall_ms=median(walls),
        kubernetes_reads=labels.reads - reads_before,
        kubernetes_writes=len(labels.writes) - writes_before,
        scrape_bytes=None,
        status=status_text(state.unit_status),
    )


def _prometheus_container(workdir: Path) -> testing.Container:
    """The worker's workload container; ``/etc/prometheus`` persists across hooks, as it does."""
    from ops import testing

    config = workdir / "etc-prometheus"
    config.mkdir(parents=True, exist_ok=True)
    return testing.Container(
        "prometheus",
        can_connect=True,
        mounts={"config": testing.Mount(location="/etc/prometheus", source=config)},
    )


def hook_section(figures: Sequence[HookFigures]) -> str:
    """The ``Hook-tool calls per steady-state hook`` section."""
    rows: list[list[object]] = []
    for f in figures:
        other = sum(n for tool, n in f.tools.items() if tool not in SHOWN_TOOLS)
        rows.append(
            [
                f.case,
                f"{f.apps} x {f.units}",
                f.total,
                *(f.tools.get(tool, 0) for tool in SHOWN_TOOLS),
                other,
                f"{f.wall_ms:.1f}",
                f.kubernetes_reads,
                f.kubernetes_writes,
                "-" if f.scrape_bytes is None else f.scrape_bytes,
                f.status,
            ]
        )
    headers = [
        "case",
        "apps x units",
        "hook tools",
        *SHOWN_TOOLS,
        "other",
        "wall (ms)",
        "k8s reads",
        "k8s writes",
        "scrape databag (B)",
        "status",
    ]
    others = sorted({tool for f in figures for tool in f.tools if tool not in SHOWN_TOOLS})
    notes = [
        "Steady state: update-status after a first hook with the same data. "
        f"other: {', '.join(others) or 'none'}.",
        "k8s reads/writes: calls of the charm's Kubernetes backend (an in-memory stand-in); the "
        "HTTP requests behind each: tools/bench/k8s_calls.py.",
    ]
    for f in figures:
        if f.case == "coordinator leader":
            notes.append(
                f"coordinator leader {f.apps} x {f.units}: {f.total} calls, target "
                f"<= {40 + 3 * f.apps}; by tool: {dict(sorted(f.tools.items()))}"
            )
    return section("Hook-tool calls per steady-state hook", markdown_table(headers, rows), notes)


_IMPORT_PROBE = """\
import json, sys, time
sys.path[:0] = {paths!r}
start = time.perf_counter()
{statement}
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


def time_import(statement: str, paths: Sequence[str], repeat: int) -> list[float]:
    """``statement`` timed in ``repeat`` fresh interpreters, after one warm-up."""
    seconds: list[float] = []
    for i in range(repeat + 1):
        result = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE.format(paths=list(paths), statement=statement)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"{statement} failed:\n{result.stderr}")
        if i:
            seconds.append(float(json.loads(result.stdout.strip().splitlines()[-1])["seconds"]))
    return seconds


def import_section(repeat: int) -> str:
    """The ``Cold import`` section."""
    lib = str(ROOT / "lib")
    cases = [
        ("ops", "import ops", [lib]),
        ("coordinator/src/charm.py", "import charm", [str(ROOT / "coordinator" / "src"), lib]),
        ("worker/src/charm.py", "import charm", [str(ROOT / "worker" / "src"), lib]),
    ]
    rows: list[list[object]] = []
    for name, statement, paths in cases:
        seconds = time_import(statement, paths, repeat)
        rows.append([name, f"{median(seconds):.3f}", f"{min(seconds):.3f}", f"{max(seconds):.3f}"])
    return section(
        "Cold import",
        markdown_table(["module", "median (s)", "min (s)", "max (s)"], rows),
        [f"Each in a fresh interpreter (start-up excluded), {repeat} runs after a warm-up."],
    )


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"1x1,3x10"`` -> ``[(1, 1), (3, 10)]``."""
    sizes: list[tuple[int, int]] = []
    for item in text.split(","):
        apps, _, units = item.strip().partition("x")
        sizes.append((int(apps), int(units)))
    return sizes


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES))
    parser.add_argument("--repeat", type=int, default=5, help="steady-state hooks per case")
    parser.add_argument("--import-repeat", type=int, default=5)
    args = parser.parse_args(list(argv) if argv is not None else None)
    counter = ToolCounter()
    figures: list[HookFigures] = []
    published: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for number, (apps, units) in enumerate(args.sizes):
            for leader in (True, False):
                workdir = Path(tmp) / f"{number}-{leader}"
                workdir.mkdir()
                hook, state = run_coordinator(
                    counter, apps, units, leader=leader, repeat=args.repeat, workdir=workdir
                )
                figures.append(hook)
                cluster = next(r for r in state.relations if r.endpoint == "cluster")
                published = dict(cluster.local_app_data)
        for leader in (True, False):
            workdir = Path(tmp) / f"worker-{leader}"
            workdir.mkdir()
            figures.append(
                run_worker(counter, published, leader=leader, repeat=args.repeat, workdir=workdir)
            )
    print(hook_section(figures))
    print(import_section(args.import_repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
