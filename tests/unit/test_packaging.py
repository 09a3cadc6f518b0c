"""What a packed charm needs, checked without charmcraft's LXD build.

`charmcraft pack` cannot run here, so these tests check its inputs: each staged charm directory is a
valid Charmcraft project (validated by Charmcraft's own model), carries the repository's one lib/,
the runtime dependencies and a single ``src/charm.py``, and declares what Juju needs.
"""

from __future__ import annotations

import filecmp
import tomllib
from pathlib import Path
from typing import Any

import ops
import pack  # tools/pack.py, on sys.path through tests/conftest
import pytest
import yaml
from charmcraft.models.project import CharmcraftProject

ROOT = Path(__file__).resolve().parents[2]
CHARMS = pack.CHARMS


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    build = tmp_path_factory.mktemp("build")
    return {charm: pack.stage(charm, build / charm) for charm in CHARMS}


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("charm", CHARMS)
def test_staged_project_is_valid_for_charmcraft(staged: dict[str, Path], charm: str):
    project = CharmcraftProject.unmarshal(_yaml(staged[charm] / "charmcraft.yaml"))
    assert project.type == "charm"
    assert project.base == "ubuntu@24.04"
    assert list(project.parts) == ["charm"]
    assert project.parts["charm"]["plugin"] == "uv"


@pytest.mark.parametrize("charm", CHARMS)
def test_charm_metadata_declares_what_juju_needs(charm: str):
    meta = _yaml(ROOT / charm / "charmcraft.yaml")
    assert meta["name"].endswith("-k8s")
    assert meta["base"] == "ubuntu@24.04"
    assert "k8s-api" in meta["assumes"]
    assert "juju >= 3.6" in meta["assumes"]
    assert meta["containers"], "a Kubernetes charm runs at least one workload container"
    for container, spec in meta["containers"].items():
        resource = meta["resources"][spec["resource"]]
        assert resource["type"] == "oci-image", container
        assert resource["upstream-source"], f"{container}: resource needs an upstream-source"


@pytest.mark.parametrize("charm", CHARMS)
def test_staged_charm_contains_the_one_shared_lib(staged: dict[str, Path], charm: str):
    comparison = filecmp.dircmp(ROOT / "lib", staged[charm] / "lib", ignore=["__pycache__"])

    def identical(c: filecmp.dircmp[str]) -> bool:
        return (
            not c.left_only
            and not c.right_only
            and not c.diff_files
            and all(identical(sub) for sub in c.subdirs.values())
        )

    assert identical(comparison)
    assert (staged[charm] / "lib" / "coordinated_mesh" / "__init__.py").is_file()


@pytest.mark.parametrize("charm", CHARMS)
def test_staged_charm_has_one_entry_module_and_the_locked_dependencies(
    staged: dict[str, Path], charm: str
):
    modules = sorted(p.name for p in (staged[charm] / "src").glob("*.py"))
    assert modules == ["charm.py"]
    pyproject = tomllib.loads((staged[charm] / "pyproject.toml").read_text())
    lock = (staged[charm] / "uv.lock").read_text()
    for requirement in pyproject["project"]["dependencies"]:
        name = requirement.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip()
        assert f'name = "{name}"' in lock, f"{name} is not locked in uv.lock"


def test_the_coordinator_declares_the_mesh_consumer_endpoints():
    meta = _yaml(ROOT / "coordinator" / "charmcraft.yaml")
    assert meta["requires"]["service-mesh"] == {
        "interface": "service_mesh",
        "limit": 1,
        "description": meta["requires"]["service-mesh"]["description"],
    }
    assert meta["requires"]["require-cmr-mesh"]["interface"] == "cross_model_mesh"
    assert meta["provides"]["provide-cmr-mesh"]["interface"] == "cross_model_mesh"
    assert meta["provides"]["cluster"]["interface"] == "mesh_cluster"


def test_the_worker_has_no_mesh_endpoint_of_its_own():
    meta = _yaml(ROOT / "worker" / "charmcraft.yaml")
    interfaces = {spec["interface"] for spec in meta.get("requires", {}).values()}
    interfaces |= {spec["interface"] for spec in meta.get("provides", {}).values()}
    assert interfaces == {"mesh_cluster"}


def test_a_charm_cannot_override_a_shared_build_key(tmp_path: Path):
    charm_dir = tmp_path / "bad"
    charm_dir.mkdir()
    (charm_dir / "charmcraft.yaml").write_text("name: bad\nparts: {}\n")
    with pytest.raises(pack.StagingError, match="parts"):
        pack.merged_charmcraft_yaml(charm_dir)


def _endpoints(meta: dict[str, Any]) -> set[str]:
    return {name for kind in ("provides", "requires", "peers") for name in meta.get(kind, {})}


@pytest.mark.parametrize("charm", CHARMS)
def test_every_endpoint_the_charm_uses_is_declared_in_the_packed_metadata(
    staged: dict[str, Path], charm: str
):
    """Run the charm on the metadata it is packed with: an undeclared endpoint fails here.

    ``ops`` only knows the endpoints the metadata declares: observing, reading or writing any other
    relation raises. The library's own guards raise too (``ValueError`` naming the endpoint).
    """
    from ops import testing

    from tests.support.charm_loader import load_charm_module

    meta = _yaml(staged[charm] / "charmcraft.yaml")
    charm_type = next(
        v
        for v in vars(load_charm_module(charm)).values()
        if isinstance(v, type) and issubclass(v, ops.CharmBase) and v is not ops.CharmBase
    )
    ctx = testing.Context(
        charm_type,
        meta={
            k: v for k, v in meta.items() if k not in ("parts", "platforms", "config", "actions")
        },
        config=meta.get("config"),
        actions=meta.get("actions"),
    )
    relations = [
        testing.Relation(name, interface=spec["interface"])
        for kind in ("provides", "requires")
        for name, spec in meta.get(kind, {}).items()
    ]
    containers = [testing.Container(name, can_connect=True) for name in meta["containers"]]
    for leader in (False, True):
        out = ctx.run(
            ctx.on.update_status(),
            testing.State(
                leader=leader,
                relations=relations,
                containers=containers,
                model=testing.Model(name="test-model"),
            ),
        )
        assert out.unit_status.name in {"active", "blocked", "waiting", "maintenance"}


def test_no_charm_declares_an_endpoint_nothing_uses():
    """Every declared endpoint is named somewhere in the charm or the library it packs."""
    sources = "\n".join(
        p.read_text() for p in [*ROOT.joinpath("lib").rglob("*.py"), *ROOT.glob("*/src/charm.py")]
    )
    for charm in CHARMS:
        for name in _endpoints(_yaml(ROOT / charm / "charmcraft.yaml")):
            assert f'"{name}"' in sources, f"{charm} declares {name!r}, which no code uses"
