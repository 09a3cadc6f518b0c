"""``tools/bench/k8s_calls.py`` runs end to end against envtest and prints well-formed tables.

The script starts its own API server (as a user runs it), so this test does not use the session
server. Checked: the structure of both tables and the invariants (steady-state hooks write
nothing and, on an active unit, read at most two objects, which the script's exit status
enforces; non-leaders make no request, the totals add up, leaving the mesh deletes policies);
never timings, and not the exact counts, which the library's owners may improve.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from bench import k8s_calls
from bench.common import ROOT, parse_sections

from tests.support.binaries import unavailable
from tests.support.envtest import ENVTEST_DIR, find_binaries

SCRIPT = ROOT / "tools" / "bench" / "k8s_calls.py"
CASES = [
    "coordinator leader, no mesh",
    "coordinator leader, mesh, 2 worker apps",
    "coordinator non-leader, mesh",
    "worker leader",
    "worker non-leader",
    "mesh removed",
    "coordinator leader, mesh, Istio missing",
]
NO_ISTIO = "coordinator leader, mesh, Istio missing"


@pytest.fixture(scope="module")
def output() -> str:
    if find_binaries() is None:
        unavailable(
            f"no envtest binaries: set KUBEBUILDER_ASSETS or run tools/envtest.sh ({ENVTEST_DIR})",
            required_by="ENVTEST_REQUIRED",
        )
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_calls_table_has_every_case_and_consistent_counts(output: str):
    calls = parse_sections(output)["Kubernetes API calls per hook"]
    assert list(dict.fromkeys(row["case"] for row in calls)) == CASES
    for row in calls:
        counts = {verb: int(row[verb]) for verb in k8s_calls.VERBS}
        assert int(row["total"]) == sum(counts.values())
        assert int(row["writes"]) == sum(counts[v] for v in k8s_calls.WRITES)
        assert row["anchor"] == k8s_calls.ANCHOR.get(row["case"], "-")


def test_steady_state_writes_nothing_and_non_leaders_call_nothing(output: str):
    calls = parse_sections(output)["Kubernetes API calls per hook"]
    steady = [row for row in calls if row["hook"].startswith(k8s_calls.STEADY)]
    assert len(steady) == 10
    for row in steady:
        assert row["writes"] == "0", row
        assert int(row["total"]) > 0, "a steady-state hook still checks Kubernetes"
    # update-status checks the Service and the policies in turn: both turns are measured.
    for case in ("coordinator leader, no mesh", "coordinator leader, mesh, 2 worker apps"):
        hooks = [row["hook"] for row in steady if row["case"] == case]
        assert f"{k8s_calls.STEADY} ({k8s_calls.POLICIES_TURN})" in hooks, hooks
    for row in calls:
        if "non-leader" in row["case"]:
            assert row["total"] == "0", row
    assert "steady-state writes: 0" in output
    assert "non-leader calls: 0" in output


def test_without_istio_the_hook_succeeds_blocked_and_writes_nothing(output: str):
    details = parse_sections(output)["Requests and statuses per hook"]
    rows = [row for row in details if row["case"] == NO_ISTIO]
    assert len(rows) == 2
    for row in rows:
        assert row["unit status"].startswith("blocked") and "istio-k8s" in row["unit status"]
        assert not any(verb in row["requests, in order"] for verb in k8s_calls.WRITES)


def test_transitions_write(output: str):
    calls = parse_sections(output)["Kubernetes API calls per hook"]
    first = {row["case"]: row for row in calls if row["hook"].startswith("first hook")}
    assert set(first) == {
        "coordinator leader, no mesh",
        "coordinator leader, mesh, 2 worker apps",
        "worker leader",
        NO_ISTIO,
    }
    for case, row in first.items():
        if case != NO_ISTIO:
            assert int(row["writes"]) > 0, row
    (broken,) = [row for row in calls if "service-mesh-relation-broken" in row["hook"]]
    assert int(broken["DELETE"]) > 0, "leaving the mesh deletes the cluster-internal policies"


def test_requests_table_lists_every_hook_with_a_status(output: str):
    sections = parse_sections(output)
    details = sections["Requests and statuses per hook"]
    calls = sections["Kubernetes API calls per hook"]
    assert [(r["case"], r["hook"]) for r in details] == [(r["case"], r["hook"]) for r in calls]
    for row, counts in zip(details, calls, strict=True):
        expected = "blocked" if row["case"] == NO_ISTIO else "active"
        assert row["unit status"].startswith(expected), row
        assert (row["requests, in order"] == "-") == (counts["total"] == "0")
