"""Find the real programs some tests run (nginx, prometheus, promtool).

Where a program is missing, its tests skip with the reason, except when ``REAL_BINARIES_REQUIRED=1``
(CI sets it, after installing them): then a missing program fails the test, so CI can never pass by
skipping what it was meant to check.
"""

from __future__ import annotations

import os
import shutil

import pytest

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])


def require_binary(name: str) -> str:
    """The absolute path of program ``name``; skip (or fail, in CI) the test when it is missing."""
    path = shutil.which(name, path=_SEARCH_PATH)
    if path:
        return path
    reason = f"{name} is not installed (Debian package: apt-get install {name})"
    if os.environ.get("REAL_BINARIES_REQUIRED") == "1":
        pytest.fail(f"{reason}; REAL_BINARIES_REQUIRED=1 forbids skipping", pytrace=False)
    pytest.skip(reason)
