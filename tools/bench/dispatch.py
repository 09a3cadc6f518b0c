#!/usr/bin/env python3
"""Hooks as Juju runs them: each one a process through ``ops.main``, each hook tool a process.

For the coordinator (leader, non-leader) at 1 x 1, 3 x 10, 3 x 100 and 10 x 100 and the worker
(leader, non-leader), a charm directory is staged (``metadata.yaml`` and ``actions.yaml`` from
the charm's ``charmcraft.yaml``, ``ops``' local state kept across hooks as in a unit) and
``dispatch`` runs with ``JUJU_*`` set and ``PATH`` leading to stand-in hook tools
(``hooktool.py``: one process per call, answering from a JSON state file built from the same
relations as ``hook_tools.py``). Kubernetes is ``dispatch_backends.py`` (persisted; its requests:
``k8s_calls.py``). Pebble is not reachable (no ``/charm/containers``): the containers report
waiting; Pebble calls are not hook tools. After a first ``config-changed``, ``--repeat``
``update-status`` hooks: median wall time per hook (the process, its imports and every hook
tool), and the hook-tool calls of the last one, by tool.

Usage (from the repository root; about a minute)::

    .venv/bin/python tools/bench/dispatch.py [--sizes 1x1,3x10,3x100,10x100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MODEL_UUID, ROOT, add_repo_paths, markdown_table, median, section
from bench.hook_tools import (
    COORDINATOR,
    DEFAULT_SIZES,
    MODEL,
    coordinator_state,
    parse_sizes,
    worker_app,
)

if TYPE_CHECKING:
    from ops import testing

add_repo_paths()
sys.path.insert(0, str(ROOT / "tools" / "bench"))  # hooktool, as the stand-in tools import it

import hooktool  # noqa: E402

TOOLS = tuple(hooktool.TOOLS)
"""The hook tools the stand-in answers (``hooktool.py``); any other call fails the hook."""
JUJU_VERSION = "3.6.4"

_SHIM = """#!{python} -IS
import sys
sys.path.insert(0, {bench!r})
import hooktool
hooktool.main()
"""

_ENTRY = """#!{python}
import sys
sys.path[:0] = [{src!r}, {lib!r}, {tools!r}]
import ops
import charm
from bench.dispatch_backends import {backend}


class BenchCharm(charm.{charm_class}):
    {seam} = staticmethod(lambda **_: {backend}({k8s_state!r}))
{extra}

ops.main(BenchCharm)
"""


def install_tools(bin_dir: Path) -> None:
    """One executable per hook tool, each running ``hooktool.py``."""
    bin_dir.mkdir(parents=True)
    for tool in TOOLS:
        path = bin_dir / tool
        path.write_text(_SHIM.format(python=sys.executable, bench=str(ROOT / "tools" / "bench")))
        path.chmod(0o755)


def stage_charm(charm: str, directory: Path, k8s_state: Path, resolv_conf: Path | None) -> Path:
    """A charm directory for ``charm`` (``coordinator`` or ``worker``): metadata and ``dispatch``."""
    import yaml

    directory.mkdir(parents=True)
    recipe = yaml.safe_load((ROOT / charm / "charmcraft.yaml").read_text())
    meta_keys = ("name", "containers", "resources", "provides", "requires", "peers", "assumes")
    metadata = {k: recipe[k] for k in meta_keys if k in recipe}
    (directory / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    if "actions" in recipe:
        (directory / "actions.yaml").write_text(yaml.safe_dump(recipe["actions"]))
    if "config" in recipe:
        (directory / "config.yaml").write_text(yaml.safe_dump(recipe["config"]))
    coordinator = charm == "coordinator"
    entry = _ENTRY.format(
        python=sys.executable,
        src=str(ROOT / charm / "src"),
        lib=str(ROOT / "lib"),
        tools=str(ROOT / "tools"),
        backend="StoredKubernetes" if coordinator else "StoredLabels",
        charm_class="MeshCoordinatorCharm" if coordinator else "MeshWorkerCharm",
        seam="kubernetes_backend_factory" if coordinator else "labels_backend_factory",
        k8s_state=str(k8s_state),
        extra=f"    resolv_conf = {str(resolv_conf)!r}" if resolv_conf else "",
    )
    dispatch = directory / "dispatch"
    dispatch.write_text(entry)
    dispatch.chmod(0o755)
    return dispatch


def hook_state(state: testing.State, *, unit: str, leader: bool, path: Path) -> dict[str, Any]:
    """The stand-in tools' state for an ``ops.testing`` state's relations (bags under ``path``)."""

    relations: dict[str, Any] = {}
    app = unit.split("/", maxsplit=1)[0]
    for relation in state.relations:
        remote = getattr(relation, "remote_app_name", "")
        units_data: dict[int, Any] = getattr(relation, "remote_units_data", {})
        data: dict[str, dict[str, str]] = {
            remote: dict(getattr(relation, "remote_app_data", {})),
            app: dict(relation.local_app_data),
            unit: dict(relation.local_unit_data),
        }
        data.update({f"{remote}/{n}": dict(bag) for n, bag in units_data.items()})
        for member, bag in data.items():
            os.environ["BENCH_HOOK_STATE"] = str(path)
            hooktool.save_bag(str(relation.id), member, bag)
        relations[str(relation.id)] = {
            "endpoint": relation.endpoint,
            "remote_app": remote,
            "units": [f"{remote}/{n}" for n in sorted(units_data)],
        }
    return {
        "unit": unit,
        "app": app,
        "leader": leader,
        "planned": 1,
        "config": {},
        "relations": relations,
    }


def dispatch(
    entry: Path, hook: str, *, unit: str, bin_dir: Path, state: Path, log: Path, k8s_log: Path
) -> tuple[float, collections.Counter[str], collections.Counter[str]]:
    """Run one hook; its wall time (ms), hook tools by name and Kubernetes calls by kind."""
    for path in (log, k8s_log):
        path.write_text("")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "JUJU_UNIT_NAME": unit,
        "JUJU_MODEL_NAME": MODEL,
        "JUJU_MODEL_UUID": MODEL_UUID,
        "JUJU_CHARM_DIR": str(entry.parent),
        "JUJU_DISPATCH_PATH": f"hooks/{hook}",
        "JUJU_HOOK_NAME": hook,
        "JUJU_VERSION": JUJU_VERSION,
        "BENCH_HOOK_STATE": str(state),
        "BENCH_HOOK_LOG": str(log),
        "BENCH_K8S_LOG": str(k8s_log),
    }
    start = time.perf_counter()
    result = subprocess.run(
        [str(entry)], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    wall = (time.perf_counter() - start) * 1000
    if result.returncode != 0:
        raise RuntimeError(f"{hook} of {unit} failed ({result.returncode}):\n{result.stderr}")
    tools = collections.Counter(log.read_text().split())
    return wall, tools, collections.Counter(k8s_log.read_text().split())


def run_case(
    charm: str,
    st: testing.State,
    *,
    unit: str,
    leader: bool,
    repeat: int,
    workdir: Path,
    bin_dir: Path,
    resolv_conf: Path | None,
) -> tuple[float, collections.Counter[str], collections.Counter[str], dict[str, Any]]:
    """A first ``config-changed`` (as the leader), then ``repeat`` ``update-status`` hooks.

    Returns the median wall time, the last hook's tools and Kubernetes calls, and the final
    state (with the coordinator's ``cluster`` databag under ``"published"``).
    """
    entry = stage_charm(charm, workdir / "charm", workdir / "k8s.json", resolv_conf)
    state_file = workdir / "hook-state.json"
    state_file.write_text(json.dumps(hook_state(st, unit=unit, leader=True, path=state_file)))
    logs = {"log": workdir / "tools.log", "k8s_log": workdir / "k8s.log"}
    dispatch(entry, "config-changed", unit=unit, bin_dir=bin_dir, state=state_file, **logs)
    state = json.loads(state_file.read_text())
    state["leader"] = leader
    state_file.write_text(json.dumps(state))
    walls: list[float] = []
    tools: collections.Counter[str] = collections.Counter()
    k8s: collections.Counter[str] = collections.Counter()
    for _ in range(repeat):
        wall, tools, k8s = dispatch(
            entry, "update-status", unit=unit, bin_dir=bin_dir, state=state_file, **logs
        )
        walls.append(wall)
    final = json.loads(state_file.read_text())
    cluster = [i for i, r in final["relations"].items() if r["endpoint"] == "cluster"]
    app = unit.split("/", maxsplit=1)[0]
    final["published"] = hooktool.bag(cluster[0], app) if cluster else {}
    final["min_wall"] = min(walls)
    return median(walls), tools, k8s, final


def dispatch_section(rows: Sequence[Sequence[object]], growth: str) -> str:
    """The ``Dispatch`` section."""
    headers = [
        "case",
        "apps x units",
        "wall per hook (ms, median)",
        "hook tools",
        "relation-get",
        "relation-list",
        "juju-log",
        "k8s reads",
        "k8s writes",
        "unit status",
    ]
    notes = [
        "Each hook a process through ops.main; each hook tool a process (a Python stand-in, "
        "so a call costs an interpreter start: more than Juju's jujuc, the same for every size).",
        "Pebble is not reachable here, so the units wait for their containers.",
        growth,
    ]
    return section("Dispatch", markdown_table(headers, rows), notes)


def _row(
    case: str, size: str, wall: float, *, tools: collections.Counter[str], k8s: Any, status: Any
) -> list[object]:
    return [
        case,
        size,
        f"{wall:.0f}",
        sum(tools.values()),
        tools.get("relation-get", 0),
        tools.get("relation-list", 0),
        tools.get("juju-log", 0),
        k8s.get("read", 0),
        k8s.get("write", 0),
        ": ".join(str(s) for s in status or ()) or "-",
    ]


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES))
    parser.add_argument("--repeat", type=int, default=5, help="steady-state hooks per case")
    args = parser.parse_args(list(argv) if argv is not None else None)
    rows: list[list[object]] = []
    leader_walls: dict[tuple[int, int], float] = {}
    cluster_data: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bin_dir = root / "bin"
        install_tools(bin_dir)
        resolv = root / "resolv.conf"
        resolv.write_text(f"search {MODEL}.svc.cluster.local\nnameserver 10.152.183.10\n")
        for number, (apps, units) in enumerate(args.sizes):
            for leader in (True, False):
                workdir = root / f"coordinator-{number}-{leader}"
                st = coordinator_state(apps, units, leader=True, workdir=workdir)
                wall, tools, k8s, final = run_case(
                    "coordinator",
                    st,
                    unit=f"{COORDINATOR}/0",
                    leader=leader,
                    repeat=args.repeat,
                    workdir=workdir,
                    bin_dir=bin_dir,
                    resolv_conf=resolv,
                )
                case = f"coordinator {'leader' if leader else 'non-leader'}"
                rows.append(
                    _row(
                        case,
                        f"{apps} x {units}",
                        wall,
                        tools=tools,
                        k8s=k8s,
                        status=final.get("unit_status"),
                    )
                )
                if leader:
                    leader_walls[(apps, units)] = float(final["min_wall"])
                    cluster_data = dict(final["published"])
        for leader in (True, False):
            workdir = root / f"worker-{leader}"
            st = worker_state(cluster_data)
            wall, tools, k8s, final = run_case(
                "worker",
                st,
                unit=f"{worker_app(0)}/0",
                leader=leader,
                repeat=args.repeat,
                workdir=workdir,
                bin_dir=bin_dir,
                resolv_conf=None,
            )
            case = f"worker {'leader' if leader else 'non-leader'}"
            rows.append(
                _row(case, "1 x 1", wall, tools=tools, k8s=k8s, status=final.get("unit_status"))
            )
    small, large = leader_walls.get((3, 10)), leader_walls.get((10, 100))
    growth = (
        f"coordinator leader, 3 x 10 -> 10 x 100 (fastest hook of each): "
        f"{100 * (large - small) / small:+.1f} % (target: < 10 %)"
        if small and large
        else "growth 3 x 10 -> 10 x 100: not measured (both sizes are needed)"
    )
    print(dispatch_section(rows, growth))
    return 0


def worker_state(coordinator_data: dict[str, str]) -> testing.State:
    """The worker's relation to the coordinator, with what the coordinator published."""
    from ops import testing

    relation = testing.Relation(
        "cluster",
        remote_app_name=COORDINATOR,
        remote_app_data=coordinator_data,
        remote_units_data={0: {}},
    )
    return testing.State(leader=True, relations=[relation])


if __name__ == "__main__":
    sys.exit(main())
