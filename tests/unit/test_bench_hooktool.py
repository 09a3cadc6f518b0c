"""The stand-in hook tools of ``tools/bench/dispatch.py`` answer ``ops``' own calls as Juju does.

Each test runs a real ``ops.hookcmds`` function (which builds the arguments ``ops`` passes and
parses the output) against the stand-in executables, installed on ``PATH``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import dispatch
from ops import hookcmds

hooktool = dispatch.hooktool  # the module the stand-in executables run


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    dispatch.install_tools(bin_dir)
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps(
            {
                "unit": "coord/0",
                "app": "coord",
                "leader": True,
                "planned": 2,
                "config": {"role": "all"},
                "relations": {
                    "3": {"endpoint": "cluster", "remote_app": "w", "units": ["w/0", "w/1"]}
                },
            }
        )
    )
    monkeypatch.setenv("BENCH_HOOK_STATE", str(state))
    monkeypatch.setenv("BENCH_HOOK_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    hooktool.save_bag("3", "w", {"charm_name": '"w-k8s"'})
    hooktool.save_bag("3", "w/1", {"address": '"w-1"'})
    return tmp_path


def test_relations_as_ops_reads_them(tools: Path):
    assert hookcmds.relation_ids("cluster") == ["cluster:3"]
    assert hookcmds.relation_ids("logging") == []
    assert hookcmds.relation_list(3) == ["w/0", "w/1"]
    assert hookcmds.relation_list(3, app=True) == "w"
    assert hookcmds.relation_get(3, app=True, unit="w") == {"charm_name": '"w-k8s"'}
    assert hookcmds.relation_get(3, unit="w/1") == {"address": '"w-1"'}
    assert hookcmds.relation_get(3, unit="w/0") == {}
    assert hookcmds.relation_get(3, key="address", unit="w/1") == '"w-1"'


def test_relation_set_updates_and_deletes(tools: Path):
    hookcmds.relation_set({"a": "1", "b": "2"}, 3, app=True)
    hookcmds.relation_set({"a": ""}, 3, app=True)
    assert hookcmds.relation_get(3, app=True, unit="coord") == {"b": "2"}
    hookcmds.relation_set({"x": "y"}, 3)
    assert hookcmds.relation_get(3, unit="coord/0") == {"x": "y"}


def test_every_call_is_one_process_logged_by_name(tools: Path):
    assert hookcmds.is_leader() is True
    assert hookcmds.config_get() == {"role": "all"}
    hookcmds.juju_log("a line", level="DEBUG")
    hookcmds.status_set("active", "fine")
    hookcmds.open_port("tcp", 8080)
    assert [str(p.port) for p in hookcmds.opened_ports()] == ["8080"]
    hookcmds.close_port("tcp", 8080)
    assert hookcmds.opened_ports() == []
    assert (tools / "log").read_text().split() == [
        "is-leader",
        "config-get",
        "juju-log",
        "status-set",
        "open-port",
        "opened-ports",
        "close-port",
        "opened-ports",
    ]


def test_only_implemented_tools_exist_and_others_fail(tools: Path):
    assert sorted(p.name for p in (tools / "bin").iterdir()) == sorted(hooktool.TOOLS)
    with pytest.raises(FileNotFoundError):  # not on PATH: the hook fails loudly
        hookcmds.secret_get(id="secret:abc")
    with pytest.raises(SystemExit):
        hooktool.run("secret-get", [], {})
