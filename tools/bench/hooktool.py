"""A stand-in for Juju's hook tools, answering from a JSON state file (``tools/bench/dispatch.py``).

Installed as one executable per tool name (``relation-get``, ``is-leader``, ...); each call is a
process, as under Juju, and appends its tool name to ``$BENCH_HOOK_LOG``. Only the standard library
is used, so a call costs an interpreter start and no more. Arguments and output formats are the
ones ``ops`` 3.9 passes and parses (``ops/hookcmds``), as documented for Juju 3.6's hook commands
(https://documentation.ubuntu.com/juju/3.6/reference/hook-command/list-of-hook-commands/).
Each databag is its own file next to the state file (``<state>.bags/<relation id>/<member>``), so
a call reads only what it answers, whatever the model's size, as Juju's agent does. Data written
with ``relation-set`` is saved there (``""`` deletes a key).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any


def _parse(args: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    flags: dict[str, str | bool] = {}
    positional: list[str] = []
    items = iter(args)
    for arg in items:
        if arg in ("-r", "--file", "--log-level"):
            flags[arg] = next(items)
        elif arg.startswith("--format="):
            flags["--format"] = arg.split("=", 1)[1]
        elif arg == "--":
            positional.extend(items)
        elif arg.startswith("--"):
            flags[arg] = True
        else:
            positional.append(arg)
    return flags, positional


def _relation(state: dict[str, Any], ref: str | bool) -> dict[str, Any]:
    relation_id = str(ref).rsplit(":", 1)[-1]
    try:
        return state["relations"][relation_id]
    except KeyError:
        sys.stderr.write(f"ERROR relation not found: {ref}\n")
        sys.exit(2)


def _bag_path(relation_id: str, member: str) -> str:
    return os.path.join(
        os.environ["BENCH_HOOK_STATE"] + ".bags", relation_id, member.replace("/", "-")
    )


def bag(relation_id: str, member: str) -> dict[str, str]:
    """A databag as stored (``{}`` when there is none)."""
    try:
        with open(_bag_path(relation_id, member)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save_bag(relation_id: str, member: str, data: dict[str, str]) -> None:
    """Store a databag."""
    path = _bag_path(relation_id, member)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


Answer = tuple[Any, bool]
"""A tool's JSON answer (``None``: no output) and whether the state changed."""


def _relation_ids(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    ids = [f"{r['endpoint']}:{i}" for i, r in state["relations"].items()]
    return [ref for ref in ids if ref.rsplit(":", 1)[0] == positional[0]], False


def _relation_list(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    relation = _relation(state, flags["-r"])
    return (relation["remote_app"] if flags.get("--app") else relation["units"]), False


def _relation_get(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    _relation(state, flags["-r"])
    key, member = [*positional, "-", state["unit"]][:2]
    data = bag(str(flags["-r"]).rsplit(":", 1)[-1], member)
    return (data if key == "-" else data.get(key)), False


def _relation_set(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    _relation(state, flags["-r"])
    relation_id = str(flags["-r"]).rsplit(":", 1)[-1]
    member = state["app"] if flags.get("--app") else state["unit"]
    data = bag(relation_id, member)
    for key, value in json.loads(sys.stdin.read()).items():
        if value == "":
            data.pop(key, None)
        else:
            data[key] = value
    save_bag(relation_id, member, data)
    return None, False


def _status_set(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    state["app_status" if flags.get("--application") else "unit_status"] = positional[:2]
    return None, True


def _status_get(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    status, message = [*(state.get("unit_status") or ["unknown", ""]), ""][:2]
    return {"status": status, "message": message, "status-data": {}}, False


def _ports(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    return sorted(state.get("ports", [])), False


def _open_port(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    state["ports"] = sorted({*state.get("ports", []), positional[0]})
    return None, True


def _close_port(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    state["ports"] = sorted(set(state.get("ports", [])) - {positional[0]})
    return None, True


def _goal_state(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    units = {f"{state['app']}/{n}": {"status": "active"} for n in range(state["planned"])}
    return {"units": units, "relations": {}}, False


def _network_get(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    address = state.get("address", "10.1.0.10")
    return {
        "bind-addresses": [{"interface-name": "eth0", "addresses": [{"value": address}]}],
        "ingress-addresses": [address],
        "egress-subnets": [f"{address}/32"],
    }, False


def _silent(state: dict[str, Any], flags: dict[str, Any], positional: list[str]) -> Answer:
    return None, False


TOOLS: dict[str, Callable[[dict[str, Any], dict[str, Any], list[str]], Answer]] = {
    "relation-ids": _relation_ids,
    "relation-list": _relation_list,
    "relation-get": _relation_get,
    "relation-set": _relation_set,
    "is-leader": lambda state, flags, positional: (bool(state["leader"]), False),
    "config-get": lambda state, flags, positional: (state.get("config", {}), False),
    "juju-log": _silent,
    "application-version-set": _silent,
    "add-metric": _silent,
    "status-set": _status_set,
    "status-get": _status_get,
    "opened-ports": _ports,
    "open-port": _open_port,
    "close-port": _close_port,
    "goal-state": _goal_state,
    "network-get": _network_get,
}
"""Every tool the stand-in answers; any other call fails, as an unknown command would."""


def run(tool: str, args: list[str], state: dict[str, Any]) -> Answer:
    """The tool's JSON answer (``None``: no output) and whether the state changed."""
    answer = TOOLS.get(tool)
    if answer is None:
        sys.stderr.write(f"ERROR the stand-in does not implement {tool}\n")
        sys.exit(1)
    flags, positional = _parse(args)
    return answer(state, flags, positional)


def main() -> None:
    """Run the tool named by ``argv[0]`` against ``$BENCH_HOOK_STATE``."""
    tool = os.path.basename(sys.argv[0])
    with open(os.environ["BENCH_HOOK_LOG"], "a") as log:
        log.write(tool + "\n")
    path = os.environ["BENCH_HOOK_STATE"]
    with open(path) as f:
        state = json.load(f)
    answer, changed = run(tool, sys.argv[1:], state)
    if changed:
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)
    if answer is not None:
        sys.stdout.write(json.dumps(answer))
