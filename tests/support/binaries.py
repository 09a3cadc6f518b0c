"""Find the real programs some tests run (nginx, prometheus, promtool).

Where a program is missing, its tests skip with the reason, except when ``REAL_BINARIES_REQUIRED=1``
(CI sets it, after installing them): then a missing program fails the test, so CI can never pass by
skipping what it was meant to check.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])


def unavailable(reason: str, *, required_by: str = "REAL_BINARIES_REQUIRED") -> NoReturn:
    """Skip the test for ``reason``, or fail it when ``<required_by>=1`` (CI sets it)."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{reason}; {required_by}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str) -> str:
    """The absolute path of program ``name``; skip (or fail, in CI) the test when it is missing."""
    path = shutil.which(name, path=_SEARCH_PATH)
    if path:
        return path
    unavailable(f"{name} is not installed (Debian package: apt-get install {name})")


NGINX_RESOLVE_SINCE = (1, 27, 3)
"""nginx with ``server host:port resolve`` in an ``upstream`` (open source, 1.27.3)."""


def require_nginx_with_upstream_resolve() -> str:
    """A runnable nginx >= 1.27.3: the Debian forky root ``tools/nginx-forky.sh`` builds.

    Looked for in ``$NGINX_FORKY_ROOT`` or ``~/.cache/nginx-forky/root`` (its ``run-nginx``);
    skips (fails under ``REAL_BINARIES_REQUIRED=1``) when missing or older.
    """
    root = Path(os.environ.get("NGINX_FORKY_ROOT") or Path.home() / ".cache/nginx-forky/root")
    program = root / "run-nginx"
    version: tuple[int, ...] = ()
    if program.is_file():
        done = subprocess.run(
            [program, "-v"], capture_output=True, text=True, timeout=30, check=False
        )
        if found := re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", done.stderr):
            version = tuple(int(part) for part in found.groups())
    if version >= NGINX_RESOLVE_SINCE:
        return str(program)
    unavailable(
        f"no nginx >= 1.27.3 at {program} (found {version or 'none'}): run tools/nginx-forky.sh"
    )
