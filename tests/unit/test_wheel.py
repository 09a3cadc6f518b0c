"""The built package works as a dependency: ``uv build``, a fresh venv, the public names, a hook.

The wheel is built from this checkout and installed (with ``ops[testing]``, at the versions of
``uv.lock``) into a new virtualenv that does not see ``lib/``; a minimal worker charm, written as
a charm author would, runs one hook there under ``ops.testing`` with the package's own
:mod:`coordinated_mesh.testing` fakes. Offline from uv's cache when possible, else from PyPI.
"""

from __future__ import annotations

import email.parser
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import coordinated_mesh
import pytest

from tests.support.binaries import require_binary

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300

SMOKE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import coordinated_mesh
    from coordinated_mesh import *  # noqa: F403  every public name resolves
    from coordinated_mesh.testing import FakeLabels, coordinator_app_data
    import ops
    from ops import testing

    names = [name for name in coordinated_mesh.__all__ if not hasattr(coordinated_mesh, name)]

    class SmokeWorkerCharm(ops.CharmBase):
        def __init__(self, framework):
            super().__init__(framework)
            self.worker = coordinated_mesh.Worker(
                self,
                container_name="workload",
                metrics_port=9090,
                configure_workload=lambda context: [],
                labels_backend_factory=lambda **_: LABELS,
            )

    LABELS = FakeLabels()
    META = {
        "name": "smoke-worker-k8s",
        "containers": {"workload": {"resource": "image"}},
        "resources": {"image": {"type": "oci-image"}},
        "requires": {"cluster": {"interface": "mesh_cluster", "limit": 1}},
    }
    wanted = {"app.kubernetes.io/part-of": "coord"}
    cluster = testing.Relation(
        "cluster",
        remote_app_name="coord",
        remote_app_data=coordinator_app_data(worker_labels=wanted, worker_config="x: 1\\n"),
    )
    ctx = testing.Context(SmokeWorkerCharm, meta=META)
    out = ctx.run(
        ctx.on.relation_changed(cluster),
        testing.State(
            leader=True, relations=[cluster], containers=[testing.Container("workload", can_connect=True)]
        ),
    )
    print(json.dumps({
        "file": coordinated_mesh.__file__,
        "version": coordinated_mesh.__version__,
        "missing": names,
        "typed": (Path(coordinated_mesh.__file__).parent / "py.typed").is_file(),
        "labels": LABELS.labels,
        "status": [out.unit_status.name, out.unit_status.message],
        "address": json.loads(out.get_relation(cluster.id).local_unit_data["address"]),
    }))
    """
)


def _uv() -> str:
    return require_binary("uv")


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a uv command offline from the cache; if the cache lacks something, online."""
    errors: list[str] = []
    for extra in (["--offline"], []):
        result = subprocess.run(
            [*args[:2], *extra, *args[2:]],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if result.returncode == 0:
            return result.stdout
        errors.append(f"{' '.join(args[:2] + extra)}: {result.stderr[-2000:]}")
    raise AssertionError("\n".join(errors))


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([_uv(), "build", "--out-dir", str(out)], cwd=ROOT)
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("coordinated_mesh-*.whl")
    return wheel


def test_wheel_and_sdist_carry_the_version_of_dunder_version(dist: Path):
    version = coordinated_mesh.__version__
    assert _wheel(dist).name == f"coordinated_mesh-{version}-py3-none-any.whl"
    assert (dist / f"coordinated_mesh-{version}.tar.gz").is_file()
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        names = wheel.namelist()
        metadata = email.parser.Parser().parsestr(
            wheel.read(f"coordinated_mesh-{version}.dist-info/METADATA").decode()
        )
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "Apache-2.0"
    assert f"coordinated_mesh-{version}.dist-info/licenses/LICENSE" in names
    assert "coordinated_mesh/py.typed" in names
    assert "coordinated_mesh/testing.py" in names
    # Only the library: no charm, test or tool code, no byte code.
    assert all(n.startswith(("coordinated_mesh/", "coordinated_mesh-")) for n in names), names
    assert not [n for n in names if n.endswith(".pyc")]
    requires = sorted(metadata.get_all("Requires-Dist") or [])
    assert any(r.startswith("ops") for r in requires) and any("lightkube" in r for r in requires)
    with tarfile.open(dist / f"coordinated_mesh-{version}.tar.gz") as sdist:
        members = {name.partition("/")[2] for name in sdist.getnames()}
    # uv build makes the wheel from the sdist, so the sdist holds what that needs, and the docs.
    assert {"pyproject.toml", "LICENSE", "CHANGES.md", "README.md"} <= members
    assert {"lib/coordinated_mesh/py.typed", "docs/how-to/test-your-charms.md"} <= members
    assert not [name for name in members if "__pycache__" in name or name.endswith(".pyc")]


def test_installed_wheel_imports_and_runs_a_charm_hook(dist: Path, tmp_path: Path):
    uv = _uv()
    constraints = tmp_path / "constraints.txt"
    export = _run(
        [uv, "export", "--frozen", "--no-hashes", "--no-emit-project", "--all-groups"], cwd=ROOT
    )
    constraints.write_text(export)
    venv = tmp_path / "venv"
    _run([uv, "venv", "--python", sys.executable, str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [
            uv,
            "pip",
            "install",
            "--python",
            str(python),
            "--constraints",
            str(constraints),
            str(_wheel(dist)),
            "ops[testing]",
        ],
        cwd=tmp_path,
    )
    script = tmp_path / "smoke.py"
    script.write_text(SMOKE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(python), "-I", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).is_relative_to(venv), report["file"]  # the wheel, not lib/
    assert report["version"] == coordinated_mesh.__version__
    assert report["missing"] == []
    assert report["typed"] is True
    assert report["labels"] == {"app.kubernetes.io/part-of": "coord"}
    assert report["status"][0] == "active", report["status"]
    assert report["address"].startswith("smoke-worker-k8s-0.smoke-worker-k8s-endpoints.")


def test_a_staged_charm_syncs_as_charmcraft_does_without_building_the_package(tmp_path: Path):
    """charmcraft's uv plugin runs this in the staged charm; lib/ is copied, not installed."""
    import pack  # tools/pack.py

    uv = _uv()
    staged = pack.stage("worker", tmp_path / "worker")
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    # charmcraft.parts.plugins._uv: craft-parts' `uv sync --no-dev --no-editable --reinstall`
    # plus `--no-install-project`; --locked so a stale uv.lock fails here as it would there.
    _run(
        [uv, "sync", "--locked", "--no-dev", "--no-editable", "--no-install-project"],
        cwd=staged,
        env=env,
    )
    site = next(venv.glob("lib/python3*/site-packages"))
    assert (site / "ops").is_dir()
    assert not list(site.glob("coordinated_mesh*")), "the charm carries lib/, not an install"
    assert (staged / "lib" / "coordinated_mesh" / "py.typed").is_file()
