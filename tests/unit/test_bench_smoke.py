"""The benchmark scripts in ``tools/bench`` keep working: they run and print well-formed tables.

Figures are not checked (timings vary), only the tables' structure and the invariants the scripts
exist to show: rendering does not depend on input order, identical hooks do not reload nginx.
``tools/bench/k8s_calls.py`` needs a real API server: its end-to-end run is in
``tests/envtest/test_envtest_bench_smoke.py``; its pure parts and its "no envtest" exit are here.
"""

from __future__ import annotations

import collections
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench import hook_tools, k8s_calls, render
from bench.common import ROOT, markdown_table, parse_sections

from tests.support.envtest import Request

RENDER = ROOT / "tools" / "bench" / "render.py"
K8S_CALLS = ROOT / "tools" / "bench" / "k8s_calls.py"
HOOK_TOOLS = ROOT / "tools" / "bench" / "hook_tools.py"
DISPATCH = ROOT / "tools" / "bench" / "dispatch.py"


def run_script(script: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=300,
    )


# --- tables ----------------------------------------------------------------------------------


def test_tables_round_trip_through_the_parser():
    table = markdown_table(["name", "count"], [["a", 1], ["bb", 22]])
    text = f"## Figures\n\n{table}\n\nnote\n\n## Empty\n\nno table here\n"
    assert parse_sections(text) == {
        "Figures": [{"name": "a", "count": "1"}, {"name": "bb", "count": "22"}],
        "Empty": [],
    }
    assert table.splitlines()[1] == "|------|------:|"  # numbers right-aligned


def test_malformed_tables_are_rejected():
    with pytest.raises(ValueError, match="cells"):
        parse_sections("## T\n\n| a | b |\n|---|---|\n| 1 |\n")
    with pytest.raises(ValueError, match="rule"):
        parse_sections("## T\n\n| a | b |\n| 1 | 2 |\n")
    with pytest.raises(ValueError, match="cells"):
        markdown_table(["a", "b"], [[1]])


# --- render.py -------------------------------------------------------------------------------


def test_render_quick_prints_its_tables_and_the_invariants_hold():
    result = run_script(RENDER, "--quick")
    assert result.returncode == 0, result.stderr
    sections = parse_sections(result.stdout)
    assert list(sections) == [
        "Import time",
        "nginx rendering",
        "nginx reloads over identical hooks",
    ]

    imports = sections["Import time"]
    assert [row["module"] for row in imports] == list(render.IMPORTED_MODULES)
    for row in imports:
        assert float(row["median (s)"]) > 0
        assert row["loads lightkube"] in ("yes", "no")
    coordinator = imports[0]
    assert coordinator["loads lightkube"] == "no", "lightkube must be imported lazily"

    rendering = sections["nginx rendering"]
    assert [int(row["worker units"]) for row in rendering] == [1, 10, 100]
    assert {row["identical"] for row in rendering} == {"yes"}
    locations = [int(row["locations"]) for row in rendering]
    assert locations[1] - locations[0] == 9 and locations[2] - locations[1] == 90  # one per unit
    assert "identical: yes" in result.stdout

    hooks = sections["nginx reloads over identical hooks"]
    assert len(hooks) == 3
    first, *later = hooks
    assert (first["nginx.conf written"], first["reloads"]) == ("yes", "1")
    for row in later:
        assert row["nginx.conf written"] == "no"
        assert row["reloads"] == "0"
        assert row["cluster databag changed"] == "no"
        assert row["status"].startswith("active")
    assert "reloads after the first hook: 0" in result.stdout


def test_render_detects_order_dependent_output(monkeypatch: pytest.MonkeyPatch):
    counter = itertools.count()
    monkeypatch.setattr(render, "rendered_artifacts", lambda _: (str(next(counter)), "", ""))
    figures = render.measure_rendering(2, repeat=1, shuffles=2, seed=0)
    assert figures.identical is False
    assert "identical: no" in render.rendering_section([figures], repeat=1, shuffles=2)


def test_shuffled_inputs_really_are_in_another_order():
    plain, shuffled = render.proxy_inputs(10), render.proxy_inputs(10, seed=1)
    units = [w.juju_topology.unit for w in plain.workers]
    assert units != [w.juju_topology.unit for w in shuffled.workers]
    assert sorted(units) == sorted(w.juju_topology.unit for w in shuffled.workers)


# --- hook_tools.py ---------------------------------------------------------------------------


def test_hook_tools_prints_its_tables_and_calls_do_not_grow_with_units():
    result = run_script(HOOK_TOOLS, "--sizes", "2x1,2x20", "--repeat", "1", "--import-repeat", "1")
    assert result.returncode == 0, result.stderr
    sections = parse_sections(result.stdout)
    assert list(sections) == ["Hook-tool calls per steady-state hook", "Cold import"]
    rows = sections["Hook-tool calls per steady-state hook"]
    assert [(r["case"], r["apps x units"]) for r in rows] == [
        ("coordinator leader", "2 x 1"),
        ("coordinator non-leader", "2 x 1"),
        ("coordinator leader", "2 x 20"),
        ("coordinator non-leader", "2 x 20"),
        ("worker leader", "1 x 1"),
        ("worker non-leader", "1 x 1"),
    ]
    for row in rows:
        assert row["status"].startswith("active"), row
        assert row["k8s writes"] == "0"
        assert int(row["hook tools"]) > 0
    small, large = rows[0], rows[2]
    for column in ("hook tools", *hook_tools.SHOWN_TOOLS):
        assert small[column] == large[column], column  # twenty times the units, same calls
    assert [r["module"] for r in sections["Cold import"]] == [
        "ops",
        "coordinator/src/charm.py",
        "worker/src/charm.py",
    ]


def test_dispatch_runs_each_hook_as_a_process_with_stand_in_tools():
    result = run_script(DISPATCH, "--sizes", "1x2", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    rows = parse_sections(result.stdout)["Dispatch"]
    assert [r["case"] for r in rows] == [
        "coordinator leader",
        "coordinator non-leader",
        "worker leader",
        "worker non-leader",
    ]
    for row in rows:
        assert int(row["hook tools"]) > 0 and row["k8s writes"] == "0"
        assert float(row["wall per hook (ms, median)"]) > 0
        assert row["unit status"].startswith("waiting: waiting for the")  # no Pebble here
    assert rows[0]["k8s reads"] != "0" and rows[1]["k8s reads"] == "0"  # leaders only


def test_tool_counter_counts_is_leader_once_per_backend():
    counter = hook_tools.ToolCounter()

    class Backend:
        def is_leader(self) -> bool:
            return True

    counted = counter._counting("is_leader", "is-leader", Backend.is_leader)  # pyright: ignore[reportPrivateUsage]
    first, second = Backend(), Backend()
    for backend in (first, first, first, second):
        assert counted(backend) is True
    assert counter.take() == {"is-leader": 2}


def test_worker_app_names_are_juju_names():
    from coordinated_mesh.parse import is_app_name

    names = [hook_tools.worker_app(i) for i in range(60)]
    assert names[:3] == ["worker-a", "worker-b", "worker-c"] and names[26] == "worker-aa"
    assert len(set(names)) == 60 and all(is_app_name(n) for n in names)


# --- k8s_calls.py (without a server) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v1/namespaces/m/configmaps/app-managed-labels", "GET"),
        ("GET", "/apis/apps/v1/namespaces/m/statefulsets/app", "GET"),
        ("GET", "/apis/security.istio.io/v1/namespaces/m/authorizationpolicies", "LIST"),
        ("GET", "/apis/security.istio.io/v1/authorizationpolicies", "LIST"),
        ("GET", "/api/v1/namespaces/m", "GET"),
        ("POST", "/api/v1/namespaces/m/configmaps", "POST"),
        ("PATCH", "/api/v1/namespaces/m/services/app", "PATCH"),
    ],
)
def test_requests_are_classified(method: str, path: str, expected: str):
    assert k8s_calls.verb(Request(method=method, path=path, query="", user="admin")) == expected


def test_requests_are_described_with_their_scope():
    def describe(path: str) -> str:
        return k8s_calls.describe(Request("GET", path, "", "admin"), "m")

    assert describe("/apis/apps/v1/namespaces/m/statefulsets/app") == "GET statefulsets/app"
    assert describe("/apis/security.istio.io/v1/authorizationpolicies") == (
        "LIST authorizationpolicies (cluster-wide)"
    )
    assert describe("/api/v1/namespaces/x/services") == "LIST services (other namespace)"


def test_runs_of_one_kind_are_collapsed():
    requests = ["LIST ap", "POST ap", "POST ap", "GET cm/a", "DELETE ap/x", "DELETE ap/y"]
    assert k8s_calls.collapse(requests) == [
        "LIST ap",
        "POST ap x2",
        "GET cm/a",
        "DELETE ap x2",
    ]


def test_invariants_flag_steady_writes_non_leader_calls_and_crashes():
    def hook(case: str, name: str, verbs: str, error: str | None = None) -> k8s_calls.HookCalls:
        counts = collections.Counter(verbs.split())
        return k8s_calls.HookCalls(case, name, (), counts, "", 0.0, error)

    found = k8s_calls.failures(
        [
            hook("coordinator leader, no mesh", "first hook", "GET POST PATCH"),
            hook("coordinator leader, no mesh", "steady state (update-status)", "GET PATCH"),
            hook("coordinator non-leader, mesh", "update-status", "GET"),
            hook("worker leader", "first hook", "", error="RuntimeError: boom"),
        ]
    )
    assert len(found) == 3
    assert "1 writes in a steady state" in found[0]
    assert "non-leader made 1" in found[1]
    assert "raised RuntimeError: boom" in found[2]


def test_k8s_calls_without_envtest_binaries_exits_2_saying_what_to_do(tmp_path: Path):
    env = {**os.environ, "HOME": str(tmp_path), "KUBEBUILDER_ASSETS": str(tmp_path / "none")}
    result = run_script(K8S_CALLS, env=env)
    assert result.returncode == 2
    assert "no envtest binaries" in result.stderr
    assert "KUBEBUILDER_ASSETS" in result.stderr
    assert result.stdout == ""
