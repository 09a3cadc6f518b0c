"""Hostile relation data crashes no hook and puts nothing unsafe into Juju's hook tools.

Each charm runs under ``ops.testing`` with the hook tools made as strict as Juju's
(:mod:`tests.support.hook_tools`): a NUL in a log line or a status fails the call, as it does
under Juju. The values are what any related unit can publish: a JSON integer beyond Python's
integer-string limit, escaped NUL and bidi-override characters in keys and values.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import ops
import pytest
from coordinated_mesh.charm.reconciler import SafeLogText
from coordinated_mesh.parse import Problem, log_text, shorten
from coordinated_mesh.relations.cluster import CoordinatorAppData, WorkerUnitData
from coordinated_mesh.relations.databag import DatabagError, load_json_value
from ops import testing

from tests.support.coordinator import (
    MODEL,
    loki_relation,
    mesh_relation,
    state,
    worker_unit_data,
)
from tests.support.hook_tools import check_argument, enforce_hook_tool_arguments, is_display_safe
from tests.support.worker import FakeLabels, worker_context

HUGE_INT = "1" * 5000  # more than sys.get_int_max_str_digits() (4300)
NUL = "\\u0000"  # JSON-escaped: the databag text itself holds no NUL
BIDI = "\\u202e"  # RIGHT-TO-LEFT OVERRIDE, JSON-escaped
HOSTILE_VALUES = [
    HUGE_INT,
    f'{{"a": {HUGE_INT}}}',
    f'["{NUL}x"]',
    f'{{"{NUL}": "x", "{BIDI}k": "{BIDI}v"}}',
    f'"{NUL}evil{BIDI}\\n\\u001b[31m"',
    "[" * 5000,
    '"' + "x" * 100_000 + '"',
]


# --- The model of the hook tools is the real constraint -------------------------------------


@pytest.mark.parametrize("text", ["a\0b", "\0"])
def test_hook_tool_model_matches_subprocess(text: str):
    with pytest.raises(ValueError, match="embedded null byte"):
        subprocess.run(["true", text], check=False)
    with pytest.raises(ValueError, match="embedded null byte"):
        check_argument(text)


def test_lone_surrogate_fails_like_subprocess():
    with pytest.raises(UnicodeEncodeError):
        subprocess.run(["true", "\ud800"], check=False)
    with pytest.raises(UnicodeEncodeError):
        check_argument("\ud800")


# --- The one rule, in parse and the databag choke point -------------------------------------


@pytest.mark.parametrize("raw", HOSTILE_VALUES)
def test_load_json_value_raises_only_databag_error(raw: str):
    try:
        value = load_json_value({"k": raw}, "k")
    except DatabagError as e:
        check_argument(str(e))
        assert is_display_safe(str(e))
    else:
        assert value is not None


def test_integer_beyond_the_string_limit_is_a_databag_error():
    with pytest.raises(DatabagError, match="number too long"):
        load_json_value({"k": HUGE_INT}, "k")


@pytest.mark.parametrize("raw", HOSTILE_VALUES)
@pytest.mark.parametrize("model", [CoordinatorAppData, WorkerUnitData])
def test_models_raise_only_databag_error(raw: str, model: Any):
    fields = [field.alias or name for name, field in model.model_fields.items()]
    for key in fields:
        try:
            model.load({key: raw})
        except DatabagError as e:
            assert is_display_safe(str(e)) and len(str(e)) <= 500


@pytest.mark.parametrize(
    ("endpoint", "item", "reason"),
    [("lo\0gging", "u\u202e/0", "bad\x1b[31m\nvalue"), ("", "x" * 1000, "y" * 1000)],
)
def test_every_problem_is_display_safe(endpoint: str, item: str, reason: str):
    problem = Problem(endpoint, item, reason)
    for text in (problem.endpoint, problem.item, problem.reason, str(problem)):
        assert is_display_safe(text), text
    assert len(problem.item) <= 80 and len(problem.reason) <= 300


@pytest.mark.parametrize("text", ["\0", "\u202e", "\u2066", "\u200b", "\x1b", "\ud800", "\x85"])
def test_shorten_and_log_text_remove_unsafe_characters(text: str):
    assert is_display_safe(shorten(f"a{text}b"))
    assert is_display_safe(log_text(f"a{text}b\nc"), multiline=True)
    assert log_text("one\ntwo") == "one\ntwo"
    assert len(log_text("x" * 10_000)) <= 4000


def test_safe_log_text_filter_cleans_formatted_arguments():
    import logging

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", ("a\0b\u202e",), None)
    assert SafeLogText().filter(record)
    assert record.getMessage() == "got a?b?"


# --- Whole hooks, with Juju-strict hook tools -----------------------------------------------


def _check_hook_tool_texts(ctx: testing.Context[Any], out: testing.State) -> None:
    for line in ctx.juju_log:
        assert is_display_safe(line.message, multiline=True), line
    for status in (out.unit_status, out.app_status):
        assert is_display_safe(status.message) and len(status.message) <= 250, status


@pytest.mark.parametrize("raw", HOSTILE_VALUES)
@pytest.mark.parametrize("key", ["juju_topology", "address", "metrics_endpoint"])
def test_coordinator_survives_a_hostile_worker_unit(
    ctx: testing.Context[Any], monkeypatch: pytest.MonkeyPatch, key: str, raw: str
):
    enforce_hook_tool_arguments(monkeypatch)
    data = worker_unit_data("worker", 0)
    data[key] = raw
    cluster = testing.Relation(
        "cluster",
        remote_app_name="worker",
        remote_app_data={"role": json.dumps("all")},
        remote_units_data={0: data, 1: worker_unit_data("worker", 1)},
    )
    out = ctx.run(ctx.on.config_changed(), state(cluster, mesh_relation(), loki_relation()))
    _check_hook_tool_texts(ctx, out)


@pytest.mark.parametrize("raw", HOSTILE_VALUES)
@pytest.mark.parametrize("key", ["labels", "mesh_type"])
def test_coordinator_survives_a_hostile_beacon(
    ctx: testing.Context[Any], monkeypatch: pytest.MonkeyPatch, key: str, raw: str
):
    enforce_hook_tool_arguments(monkeypatch)
    mesh = mesh_relation()
    data = dict(mesh.remote_app_data)
    data[key] = raw
    mesh = testing.Relation("service-mesh", remote_app_name="istio-beacon", remote_app_data=data)
    out = ctx.run(ctx.on.config_changed(), state(mesh))
    _check_hook_tool_texts(ctx, out)


@pytest.mark.parametrize("raw", HOSTILE_VALUES)
@pytest.mark.parametrize("key", ["endpoint"])
def test_coordinator_survives_a_hostile_loki(
    ctx: testing.Context[Any], monkeypatch: pytest.MonkeyPatch, key: str, raw: str
):
    enforce_hook_tool_arguments(monkeypatch)
    loki = testing.Relation("logging", remote_app_name="loki", remote_units_data={0: {key: raw}})
    out = ctx.run(ctx.on.config_changed(), state(loki))
    _check_hook_tool_texts(ctx, out)


def _worker_state(tmp_path: Path, coordinator_data: dict[str, str]) -> testing.State:
    etc = tmp_path / "etc-prometheus"
    etc.mkdir(exist_ok=True)
    return testing.State(
        leader=True,
        model=MODEL,
        config={"role": "all"},
        relations=[
            testing.Relation("cluster", remote_app_name="coord", remote_app_data=coordinator_data)
        ],
        containers=[
            testing.Container(
                "prometheus",
                can_connect=True,
                mounts={"config": testing.Mount(location="/etc/prometheus", source=etc)},
            )
        ],
    )


@pytest.mark.parametrize("raw", HOSTILE_VALUES)
@pytest.mark.parametrize(
    "key", [field.alias or name for name, field in CoordinatorAppData.model_fields.items()]
)
def test_worker_survives_a_hostile_coordinator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str, raw: str
):
    enforce_hook_tool_arguments(monkeypatch)
    ctx = worker_context(FakeLabels(), app_name="worker")
    out = ctx.run(ctx.on.config_changed(), _worker_state(tmp_path, {key: raw}))
    _check_hook_tool_texts(ctx, out)
    assert out.unit_status.name in {"waiting", "blocked", "active"}, out.unit_status


def test_a_hostile_key_reaches_the_status_safely(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    enforce_hook_tool_arguments(monkeypatch)
    ctx = worker_context(FakeLabels(), app_name="worker")
    data = {"loki_endpoints": json.dumps({"\0\u202eunit": 1})}
    out = ctx.run(ctx.on.config_changed(), _worker_state(tmp_path, data))
    _check_hook_tool_texts(ctx, out)
    assert isinstance(out.unit_status, ops.StatusBase)
