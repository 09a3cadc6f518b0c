#!/usr/bin/env python3
"""Import time, nginx rendering time and determinism, and nginx reloads over identical hooks.

Prints three Markdown tables (figures, not pass/fail timings):

``Import time``
    ``import coordinated_mesh.coordinator`` (and ``.worker``, and ``ops`` alone for reference),
    each timed inside a fresh Python process (interpreter start-up excluded), median of
    ``--repeat`` runs after one warm-up run; whether the import loaded lightkube. The anchor's
    ``import coordinated_workers.coordinator`` takes about 0.6 s.
``nginx rendering``
    For 1, 10 and 100 worker units (plus two Loki units, a remote-write receiver and tracing):
    the median time to compute the proxy plan and to render ``nginx.conf``, the text's size and
    number of ``location`` blocks, and whether ``--shuffles`` renderings from the same inputs in
    shuffled orders (workers, URLs, resolvers) give byte-identical text, scrape jobs and worker
    URLs.
``nginx reloads over identical hooks``
    The real coordinator charm under ``ops.testing`` (leader, two worker applications, the mesh,
    Loki, remote write and tracing; Kubernetes is an in-memory stand-in) runs ``--hooks``
    ``update-status`` hooks with the same data, relations and units listed in a different order
    each time. Per hook: whether ``nginx.conf`` was written, how many ``nginx -s reload`` were
    run, whether the ``cluster`` application databag changed.

Exit status: 0 when the invariants hold; 1 when a rendering is not byte-identical under
shuffling ("identical: no") or a hook after the first reloads nginx or rewrites its config.

Usage (from the repository root)::

    .venv/bin/python tools/bench/render.py            # full run (about 10 s)
    .venv/bin/python tools/bench/render.py --quick    # one run of each, fewer hooks (CI smoke)
    .venv/bin/python tools/bench/render.py --repeat 9 --sizes 1,10,100,1000 --hooks 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    MODEL_UUID,
    ROOT,
    add_repo_paths,
    coordinator_cluster_relation,
    coordinator_containers,
    markdown_table,
    median,
    mesh_relation,
    resolv_conf,
    section,
    status_text,
    telemetry_relations,
    worker_unit_databag,
)

if TYPE_CHECKING:
    from coordinated_mesh.proxy.plan import TelemetryProxyInputs
    from ops import testing

add_repo_paths()

MODEL = "bench"
COORDINATOR = "coordinator"
IMPORTED_MODULES = ("coordinated_mesh.coordinator", "coordinated_mesh.worker", "ops")
ANCHOR_IMPORT = {"coordinated_mesh.coordinator": "~0.6 s (coordinated_workers.coordinator)"}
WORKER_APPS = ("worker-a", "worker-b", "worker-c")

# --- import time ---------------------------------------------------------------------------------

_IMPORT_PROBE = """\
import json, sys, time
start = time.perf_counter()
import {module}
elapsed = time.perf_counter() - start
print(json.dumps({{
    "seconds": elapsed,
    "lightkube": any(m == "lightkube" or m.startswith("lightkube.") for m in sys.modules),
    "modules": len(sys.modules),
}}))
"""


@dataclasses.dataclass(frozen=True)
class ImportFigures:
    """How long importing one module takes in a fresh interpreter."""

    module: str
    seconds: list[float]
    lightkube: bool
    modules: int


def time_import(module: str, repeat: int) -> ImportFigures:
    """Import ``module`` in ``repeat + 1`` fresh interpreters (the first is a warm-up)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), str(ROOT / "tests")])}
    samples: list[dict[str, Any]] = []
    for _ in range(repeat + 1):
        result = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE.format(module=module)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"import {module} failed:\n{result.stderr}")
        samples.append(json.loads(result.stdout.strip().splitlines()[-1]))
    measured = samples[1:]
    return ImportFigures(
        module=module,
        seconds=[float(s["seconds"]) for s in measured],
        lightkube=any(bool(s["lightkube"]) for s in measured),
        modules=int(measured[-1]["modules"]),
    )


def import_section(repeat: int) -> str:
    """The ``Import time`` section."""
    rows: list[list[object]] = []
    for module in IMPORTED_MODULES:
        figures = time_import(module, repeat)
        rows.append(
            [
                module,
                f"{median(figures.seconds):.3f}",
                f"{min(figures.seconds):.3f}",
                f"{max(figures.seconds):.3f}",
                len(figures.seconds),
                "yes" if figures.lightkube else "no",
                figures.modules,
                ANCHOR_IMPORT.get(module, "-"),
            ]
        )
    headers = [
        "module",
        "median (s)",
        "min (s)",
        "max (s)",
        "runs",
        "loads lightkube",
        "modules loaded",
        "anchor",
    ]
    return section(
        "Import time",
        markdown_table(headers, rows),
        [f"Fresh interpreter per run ({sys.executable}), start-up excluded, after a warm-up."],
    )


# --- rendering -----------------------------------------------------------------------------------


def proxy_inputs(units: int, *, seed: int | None = None) -> TelemetryProxyInputs:
    """Telemetry proxy inputs for ``units`` workers; shuffled (same content) when ``seed`` is set.

    Workers are spread over up to three applications; there are two Loki units, a remote-write
    receiver, charm and workload tracing (HTTP and gRPC) and two DNS resolvers.
    """
    from coordinated_mesh.proxy.config import WorkerTelemetryProxyConfig
    from coordinated_mesh.proxy.plan import CoordinatorIdentity, TelemetryProxyInputs
    from coordinated_mesh.relations.cluster import WorkerUnitData

    apps = WORKER_APPS[: max(1, min(len(WORKER_APPS), units))]
    workers = [
        WorkerUnitData.load(worker_unit_databag(apps[i % len(apps)], i // len(apps), MODEL))
        for i in range(units)
    ]
    loki = {
        f"loki/{i}": f"http://loki-{i}.loki-endpoints.cos.svc.cluster.local:3100/loki/api/v1/push"
        for i in range(2)
    }
    remote_write = {
        "prometheus/0": "http://prometheus-0.prometheus-endpoints.cos.svc.cluster.local:9090"
        "/api/v1/write"
    }
    charm_tracing = {"otlp_http": "http://tempo.cos.svc.cluster.local:4318"}
    workload_tracing = {**charm_tracing, "otlp_grpc": "tempo.cos.svc.cluster.local:4317"}
    resolvers = ["10.152.183.10", "10.152.183.11"]
    rng = random.Random(seed)

    def order(mapping: Mapping[str, str]) -> dict[str, str]:
        if seed is None:
            return dict(mapping)
        items = list(mapping.items())
        rng.shuffle(items)
        return dict(items)

    if seed is not None:
        rng.shuffle(workers)
        rng.shuffle(resolvers)
    return TelemetryProxyInputs(
        identity=CoordinatorIdentity(app_name=COORDINATOR, model_name=MODEL, model_uuid=MODEL_UUID),
        config=WorkerTelemetryProxyConfig(http_port=8080, https_port=8080, grpc_port=4317),
        workers=workers,
        backend_loki_urls=order(loki),
        backend_remote_write_urls=order(remote_write),
        backend_charm_tracing_receivers=order(charm_tracing),
        backend_workload_tracing_receivers=order(workload_tracing),
        resolvers=resolvers,
    )


def rendered_artifacts(inputs: TelemetryProxyInputs) -> tuple[str, str, str]:
    """What must not depend on input order: ``nginx.conf``, scrape jobs, the workers' databag."""
    from coordinated_mesh.proxy.nginx import render_nginx_config
    from coordinated_mesh.proxy.plan import build_telemetry_proxy
    from coordinated_mesh.relations.cluster import CoordinatorAppData

    plan = build_telemetry_proxy(inputs)
    app_data = CoordinatorAppData.compose(
        worker_labels=None, worker_config=None, telemetry=plan.proxied_telemetry
    ).dump()
    return (
        render_nginx_config(plan),
        json.dumps(plan.scrape_jobs),  # deliberately not sort_keys: order is part of the output
        json.dumps(app_data),
    )


def _timed(function: Callable[[], object], repeat: int) -> float:
    samples: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return median(samples)


@dataclasses.dataclass(frozen=True)
class RenderFigures:
    """Rendering figures for one number of worker units."""

    units: int
    plan_ms: float
    render_ms: float
    size: int
    locations: int
    identical: bool


def measure_rendering(units: int, *, repeat: int, shuffles: int, seed: int) -> RenderFigures:
    """Time the plan and the rendering for ``units`` workers; check order independence."""
    from coordinated_mesh.proxy.nginx import render_nginx_config
    from coordinated_mesh.proxy.plan import build_telemetry_proxy

    inputs = proxy_inputs(units)
    plan = build_telemetry_proxy(inputs)
    text = render_nginx_config(plan)
    reference = rendered_artifacts(inputs)
    identical = all(
        rendered_artifacts(proxy_inputs(units, seed=seed + i)) == reference for i in range(shuffles)
    )
    return RenderFigures(
        units=units,
        plan_ms=_timed(lambda: build_telemetry_proxy(inputs), repeat) * 1000,
        render_ms=_timed(lambda: render_nginx_config(plan), repeat) * 1000,
        size=len(text.encode()),
        locations=sum(1 for line in text.splitlines() if line.lstrip().startswith("location ")),
        identical=identical,
    )


def rendering_section(figures: Sequence[RenderFigures], *, repeat: int, shuffles: int) -> str:
    """The ``nginx rendering`` section."""
    rows = [
        [
            f.units,
            f"{f.plan_ms:.3f}",
            f"{f.render_ms:.3f}",
            f.size,
            f.locations,
            "yes" if f.identical else "no",
        ]
        for f in figures
    ]
    headers = ["worker units", "plan (ms)", "render (ms)", "bytes", "locations", "identical"]
    all_identical = all(f.identical for f in figures)
    return section(
        "nginx rendering",
        markdown_table(headers, rows),
        [
            f"Median of {repeat}; 'identical': {shuffles} shuffled input orders give the same "
            "nginx.conf, scrape jobs and worker URLs, byte for byte.",
            f"identical: {'yes' if all_identical else 'no'}",
        ],
    )


# --- reloads over identical hooks ----------------------------------------------------------------


def _reordered(state: testing.State, rng: random.Random) -> testing.State:
    """``state`` with its relations, and each relation's remote units, in a random order."""
    from ops import testing

    relations: list[testing.RelationBase] = []
    for relation in state.relations:
        if isinstance(relation, testing.Relation):
            units = list(relation.remote_units_data.items())
            rng.shuffle(units)
            relations.append(dataclasses.replace(relation, remote_units_data=dict(units)))
        else:
            relations.append(relation)
    rng.shuffle(relations)
    return dataclasses.replace(state, relations=relations)


def _cluster_databags(state: testing.State) -> list[dict[str, str]]:
    bags = [(r.id, dict(r.local_app_data)) for r in state.relations if r.endpoint == "cluster"]
    return [bag for _, bag in sorted(bags, key=lambda item: item[0])]


@dataclasses.dataclass(frozen=True)
class HookFigures:
    """What one hook did to nginx and to the cluster databag."""

    number: int
    event: str
    config_written: bool
    reloads: int
    databag_changed: bool
    status: str


def reload_sequence(hooks: int, *, seed: int, workdir: Path) -> list[HookFigures]:
    """Run ``hooks`` identical ``update-status`` hooks on the coordinator charm; see the module."""
    from coordinated_mesh.proxy.pebble import NGINX_CONFIG_PATH
    from ops import testing

    from tests.support.coordinator import FakeKubernetes, coordinator_charm_type

    backend = FakeKubernetes()  # Kubernetes in memory: writes only on a difference
    etc_nginx = workdir / "etc-nginx"
    config_file = etc_nginx / Path(NGINX_CONFIG_PATH).relative_to("/etc/nginx")
    state = testing.State(
        leader=True,
        model=testing.Model(name=MODEL, uuid=MODEL_UUID),
        relations=[
            coordinator_cluster_relation("worker-a", 3, MODEL),
            coordinator_cluster_relation("worker-b", 2, MODEL),
            mesh_relation(MODEL),
            *telemetry_relations(),
        ],
        containers=coordinator_containers(etc_nginx),
    )
    rng = random.Random(seed)
    figures: list[HookFigures] = []
    charm_type = coordinator_charm_type(
        kubernetes=backend, resolv_conf=str(resolv_conf(workdir, MODEL))
    )
    ctx = testing.Context(charm_type, app_name=COORDINATOR)
    previous_bags: list[dict[str, str]] | None = None
    for number in range(1, hooks + 1):
        state = _reordered(state, rng)
        mtime = config_file.stat().st_mtime_ns if config_file.exists() else None
        reloads_before = len(ctx.exec_history.get("nginx", []))
        state = ctx.run(ctx.on.update_status(), state)
        bags = _cluster_databags(state)
        figures.append(
            HookFigures(
                number=number,
                event="update-status",
                config_written=config_file.exists() and config_file.stat().st_mtime_ns != mtime,
                reloads=sum(
                    1
                    for args in ctx.exec_history.get("nginx", [])[reloads_before:]
                    if list(args.command) == ["nginx", "-s", "reload"]
                ),
                databag_changed=bags != previous_bags,
                status=status_text(state.unit_status),
            )
        )
        previous_bags = bags
    return figures


def reload_section(figures: Sequence[HookFigures]) -> str:
    """The ``nginx reloads over identical hooks`` section."""
    rows = [
        [
            f.number,
            f.event,
            "yes" if f.config_written else "no",
            f.reloads,
            "yes" if f.databag_changed else "no",
            f.status,
        ]
        for f in figures
    ]
    headers = [
        "hook",
        "event",
        "nginx.conf written",
        "reloads",
        "cluster databag changed",
        "status",
    ]
    later = figures[1:]
    return section(
        "nginx reloads over identical hooks",
        markdown_table(headers, rows),
        [
            "Same data every hook; relations and their units listed in a new random order each "
            "time. The first hook writes everything.",
            f"reloads after the first hook: {sum(f.reloads for f in later)}",
            f"config writes after the first hook: {sum(f.config_written for f in later)}",
            f"databag changes after the first hook: {sum(f.databag_changed for f in later)}",
        ],
    )


# --- main ----------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one run of each, 3 hooks (CI)")
    parser.add_argument(
        "--repeat", type=int, help="runs per timing (default 5 imports, 50 renders)"
    )
    parser.add_argument("--sizes", type=_sizes, default=[1, 10, 100], help="worker unit counts")
    parser.add_argument("--shuffles", type=int, help="shuffled orders checked (default 20)")
    parser.add_argument("--hooks", type=int, help="identical hooks run (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffles")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the three sections; 1 if an invariant does not hold (see the module docstring)."""
    args = parse_args(argv)
    import_repeat = args.repeat or (1 if args.quick else 5)
    render_repeat = args.repeat or (1 if args.quick else 50)
    shuffles = args.shuffles or (3 if args.quick else 20)
    hooks = args.hooks or (3 if args.quick else 10)
    if min(import_repeat, render_repeat, shuffles) < 1 or hooks < 2:
        print("error: --repeat and --shuffles must be >= 1, --hooks >= 2", file=sys.stderr)
        return 2

    print(import_section(import_repeat), flush=True)
    rendering = [
        measure_rendering(units, repeat=render_repeat, shuffles=shuffles, seed=args.seed)
        for units in args.sizes
    ]
    print(rendering_section(rendering, repeat=render_repeat, shuffles=shuffles), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        hook_figures = reload_sequence(hooks, seed=args.seed, workdir=Path(tmp))
    print(reload_section(hook_figures), flush=True)

    failures: list[str] = []
    if not all(f.identical for f in rendering):
        failures.append("rendering depends on input order (identical: no)")
    later = hook_figures[1:]
    if any(f.reloads or f.config_written or f.databag_changed for f in later):
        failures.append("a hook after the first rewrote nginx.conf, reloaded nginx or the databag")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
