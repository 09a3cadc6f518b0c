"""The curated public face: the names a charm author uses, importable from the package itself."""

from __future__ import annotations

import subprocess
import sys

import coordinated_mesh
import pytest

DESIGN_NAMES = [
    "AppPolicy",
    "Coordinator",
    "Endpoint",
    "HttpUrl",
    "KubernetesError",
    "MeshPolicy",
    "Method",
    "PolicyResourceManager",
    "PolicyTargetType",
    "ProxiedTelemetry",
    "ServiceMeshConsumer",
    "UnitPolicy",
    "Worker",
    "WorkerContext",
    "WorkerQueryApi",
    "WorkerTelemetryProxyConfig",
    "parse_http_url",
    "push_and_reload",
    "reconcile_charm_labels",
]


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_public_name_resolves_to_its_module_object(name: str):
    value = getattr(coordinated_mesh, name)
    module = sys.modules[value.__module__]
    assert getattr(module, name) is value
    assert value.__module__.startswith("coordinated_mesh.")


def test_all_lists_exactly_the_public_names():
    assert sorted(coordinated_mesh.__all__) == sorted([*DESIGN_NAMES, "__version__"])
    assert set(DESIGN_NAMES) <= set(dir(coordinated_mesh))


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = coordinated_mesh.Nope  # type: ignore[attr-defined]


def test_version_is_semver_and_the_package_reads_it_from_here():
    import re
    import tomllib
    from pathlib import Path

    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", coordinated_mesh.__version__)
    root = Path(__file__).resolve().parents[2]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    # One source of truth: the build backend reads __version__ (the wheel test checks the result).
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    source = root / pyproject["tool"]["hatch"]["version"]["path"]
    assert source.resolve() == Path(coordinated_mesh.__file__).resolve()


def test_changes_describes_this_version_first():
    import re
    from pathlib import Path

    changes = (Path(__file__).resolve().parents[2] / "CHANGES.md").read_text()
    versions = re.findall(r"^## ([0-9]+\.[0-9]+\.[0-9]+)\b", changes, re.M)
    assert versions, "CHANGES.md has a '## X.Y.Z' section per version"
    assert versions[0] == coordinated_mesh.__version__
    assert len(versions) == len(set(versions))


def test_importing_the_public_face_does_not_load_lightkube():
    code = (
        "import sys; from coordinated_mesh import *; "
        "print(any(m == 'lightkube' or m.startswith('lightkube.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    assert out.stdout.strip() == "False"


def test_testing_module_is_opt_in_and_light():
    """``import coordinated_mesh`` does not load the test helpers; they load no lightkube model."""
    code = (
        "import sys; import coordinated_mesh; "
        "before = 'coordinated_mesh.testing' in sys.modules; "
        "import coordinated_mesh.testing; "
        "print(before, any(m == 'lightkube' or m.startswith('lightkube.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    assert out.stdout.strip() == "False False"


def test_testing_module_names_resolve():
    import coordinated_mesh.testing as helpers

    assert sorted(helpers.__all__) == [
        "CRDMissingError",
        "ClusterPod",
        "FakeKubernetes",
        "FakeLabels",
        "ForbiddenError",
        "coordinator_app_data",
        "worker_app_data",
        "worker_unit_data",
    ]
    for name in helpers.__all__:
        assert getattr(helpers, name).__module__.startswith("coordinated_mesh.")


def test_a_worker_charm_loads_no_coordinator_module():
    """The public face imports each name on first use: a worker never pays for the proxy."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    probe = (
        "import sys; sys.path[:0] = [sys.argv[1]]\n"
        "from coordinated_mesh import Worker, WorkerContext, parse_http_url, push_and_reload\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('coordinated_mesh.coordinator',"
        " 'coordinated_mesh.proxy', 'coordinated_mesh.mesh.consumer', 'lightkube')))\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(root / "lib")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "[]", done.stdout
