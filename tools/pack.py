#!/usr/bin/env python3
"""Stage and pack the charms of this repository.

Each charm directory (``coordinator/``, ``worker/``) holds what the charm *is*; the top-level
``charmcraft.yaml`` holds how charms here are *built*. Staging merges the two and adds the shared
``lib/``, ``pyproject.toml`` and ``uv.lock``, giving a directory ``charmcraft pack`` can build on its
own (Charmcraft sees nothing outside the project directory it packs).

Usage::

    python tools/pack.py                 # stage and pack every charm into build/*.charm
    python tools/pack.py --stage-only    # stage into build/<charm>/ only (no charmcraft needed)
    python tools/pack.py worker          # one charm

Packs with the charmcraft snap (``/snap/bin/charmcraft``) when it is installed, else with the
``charmcraft`` on ``PATH`` (the virtualenv's, under tox) and a warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHARMS = ("coordinator", "worker")
SHARED_FILES = ("pyproject.toml", "uv.lock")
SHARED_DIRS = ("lib",)
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.charm", ".pytest_cache")
SNAP_CHARMCRAFT = Path("/snap/bin/charmcraft")
"""Where ``snap install charmcraft --classic`` puts the command."""


class StagingError(Exception):
    """A charm cannot be staged (for example, it redefines a shared build key)."""


def merged_charmcraft_yaml(
    charm_dir: Path, shared_file: Path = ROOT / "charmcraft.yaml"
) -> dict[str, Any]:
    """The charm's ``charmcraft.yaml`` with the shared build keys added.

    Raises:
        StagingError: the charm sets a key that the shared file defines.
    """
    charm: dict[str, Any] = yaml.safe_load((charm_dir / "charmcraft.yaml").read_text())
    shared: dict[str, Any] = yaml.safe_load(shared_file.read_text())
    clash = sorted(set(charm) & set(shared))
    if clash:
        raise StagingError(
            f"{charm_dir.name}/charmcraft.yaml sets {', '.join(clash)}, which the top-level "
            "charmcraft.yaml defines for every charm"
        )
    return {**charm, **shared}


def stage(charm: str, dest: Path) -> Path:
    """Stage ``charm`` into ``dest`` (replaced if present) and return it."""
    charm_dir = ROOT / charm
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(charm_dir, dest, ignore=_IGNORE)
    for name in SHARED_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=_IGNORE)
    for name in SHARED_FILES:
        shutil.copy2(ROOT / name, dest / name)
    merged = merged_charmcraft_yaml(charm_dir)
    (dest / "charmcraft.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    return dest


@dataclasses.dataclass(frozen=True)
class Charmcraft:
    """The ``charmcraft`` command to pack with, and what to tell the user about it."""

    command: str
    is_snap: bool
    note: str


def find_charmcraft(
    snap: Path = SNAP_CHARMCRAFT, which: Callable[[str], str | None] = shutil.which
) -> Charmcraft:
    """The charmcraft snap when installed, else the ``charmcraft`` on ``PATH`` (with a warning).

    A charmcraft that is not the snap installs the charmcraft snap from ``latest/stable`` inside
    the LXD build instance, so what builds may not be the version on this machine.

    Raises:
        StagingError: no charmcraft at all.
    """
    if snap.is_file() and os.access(snap, os.X_OK):
        return Charmcraft(str(snap), True, f"packing with the charmcraft snap ({snap})")
    found = which("charmcraft")
    if found is None:
        raise StagingError(
            "charmcraft is not installed: sudo snap install charmcraft --classic (needs LXD)"
        )
    return Charmcraft(
        found,
        False,
        f"warning: {found} is not the charmcraft snap ({snap} is missing). A charmcraft that is "
        "not a snap builds inside LXD with the charmcraft snap from latest/stable, which may be "
        "another version; install the snap: sudo snap install charmcraft --classic",
    )


def announce(charmcraft: Charmcraft) -> None:
    """Say which charmcraft packs: stdout for the snap, stderr for the warning."""
    print(charmcraft.note, file=sys.stdout if charmcraft.is_snap else sys.stderr, flush=True)


def pack(charm: str, build_dir: Path, charmcraft: Charmcraft | None = None) -> Path:
    """Stage ``charm`` and run ``charmcraft pack`` on it; return the ``.charm`` file.

    Without ``charmcraft``, uses :func:`find_charmcraft` and prints which (callers that pass one
    print :func:`announce` once themselves).
    """
    tool = charmcraft
    if tool is None:
        tool = find_charmcraft()
        announce(tool)
    staged = stage(charm, build_dir / charm)
    subprocess.run([tool.command, "pack", "--project-dir", str(staged)], cwd=staged, check=True)
    built = sorted(staged.glob("*.charm"))
    if not built:
        raise StagingError(f"charmcraft produced no .charm file for {charm}")
    target = build_dir / built[-1].name
    shutil.move(built[-1], target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("charms", nargs="*", metavar="CHARM", help=f"one of {', '.join(CHARMS)}")
    parser.add_argument("--stage-only", action="store_true", help="stage, do not pack")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.charms) - set(CHARMS))
    if unknown:
        parser.error(f"unknown charm(s): {', '.join(unknown)}; choose from {', '.join(CHARMS)}")
    charmcraft = None
    if not args.stage_only:
        try:
            charmcraft = find_charmcraft()
        except StagingError as e:
            parser.exit(1, f"{e}\n")
        announce(charmcraft)
    for charm in args.charms or CHARMS:
        if charmcraft is None:
            print(stage(charm, args.build_dir / charm))
        else:
            print(pack(charm, args.build_dir, charmcraft))
    return 0


if __name__ == "__main__":
    sys.exit(main())
