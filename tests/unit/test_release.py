"""What a release ships besides the code: the licence, and a pre-commit that checks like CI."""

from __future__ import annotations

import configparser
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_APACHE = Path("/usr/share/common-licenses/Apache-2.0")


def test_licence_file_is_the_apache_2_text_pyproject_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    if DEBIAN_APACHE.is_file():
        assert text == DEBIAN_APACHE.read_text()


def _tox_lint_tools() -> set[str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    commands = parser["testenv:lint"]["commands"]
    tools: set[str] = set()
    for line in commands.strip().splitlines():
        words = shlex.split(line)
        tools.add(" ".join(words[:2]) if words[0] == "ruff" else words[0])
    return tools


def _hooks() -> list[dict[str, object]]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"  # no network: the tools tox installed from uv.lock
    return list(repo["hooks"])


def test_pre_commit_runs_every_tool_of_tox_lint_from_the_lint_venv():
    tools = _tox_lint_tools()
    assert tools == {"lint-imports", "ruff check", "ruff format", "codespell"}
    entries = [str(hook["entry"]) for hook in _hooks()]
    for tool in tools:
        name, *sub = tool.split()
        command = " ".join([f".tox/lint/bin/{name}", *sub])
        assert any(command in entry for entry in entries), f"no pre-commit hook runs {tool}"
    for hook in _hooks():
        assert hook["language"] == "system"


@pytest.mark.parametrize("hook", ["ruff-check", "ruff-format"])
def test_pre_commit_ruff_sees_the_paths_tox_lint_checks(hook: str):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    paths = parser["vars"]["all_path"].split()
    (found,) = [h for h in _hooks() if h["id"] == hook]
    pattern = re.compile(str(found["files"]))
    for path in paths:
        assert pattern.search(f"{path}/module.py"), (hook, path)  # pre-commit uses re.search
    assert not pattern.search("build/worker/src/charm.py")
