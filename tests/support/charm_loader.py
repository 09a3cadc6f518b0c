"""Load a charm's ``src/charm.py`` by path, so both charms can be tested in one process.

Both charms follow the Juju convention of a ``src/charm.py`` module; importing both as ``charm``
would collide. Each is loaded under its own module name instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_charm_module(charm_dir: str) -> ModuleType:
    """Import ``<charm_dir>/src/charm.py`` as the module ``<charm_dir>_charm`` (cached)."""
    name = f"{charm_dir}_charm"
    if name in sys.modules:
        return sys.modules[name]
    path = ROOT / charm_dir / "src" / "charm.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
