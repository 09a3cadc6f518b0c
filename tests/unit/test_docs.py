"""The documentation stays true: the API reference is current, links resolve, the how-to runs.

* ``docs/reference/api.md`` is what ``tools/gen_reference.py`` generates from the docstrings now,
  and no public name lacks its docs;
* every relative link in ``README.md``, ``CHANGES.md``, ``CONTRIBUTING.md`` and ``docs/**/*.md``
  points at a file that exists (and, for a link to a heading of a Markdown file, at a heading
  that exists);
* the Python blocks of ``docs/how-to/add-mesh-support.md`` compile, its ``charmcraft.yaml`` blocks
  are valid Charmcraft projects, and its two charms run a hook under ``ops.testing`` with an
  in-memory Kubernetes behind the seams the how-to shows;
* the example tests of ``docs/how-to/test-your-charms.md`` pass against those two charms.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ops
import pytest
import yaml
from coordinated_mesh.worker.log_forwarding import loki_target_name
from ops import testing

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "tools" / "gen_reference.py"
HOWTO = ROOT / "docs" / "how-to" / "add-mesh-support.md"
WORKSPACE_SHARED = ROOT.parent / "shared"
"""Links may leave the repository only for the workspace's shared design and specs."""
DOCS = sorted(
    [ROOT / name for name in ("README.md", "CHANGES.md", "CONTRIBUTING.md")]
    + list((ROOT / "docs").rglob("*.md"))
)
MODEL = testing.Model(name="mymodel", uuid="00000000-0000-4000-8000-000000000002")

_FENCE_RE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN_RE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_LINK_RE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_BLOCK_RE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_FILE_BLOCK_RE = re.compile(r"<!-- file: (\S+) -->\n```\w+\n(.*?)^```[ \t]*$", re.M | re.S)


# --- (a) the API reference ------------------------------------------------------------------


def _generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_api_reference_is_up_to_date():
    result = _generate("--check")
    assert result.returncode == 0, (
        f"{result.stderr}{result.stdout}\n"
        "docs/reference/api.md does not match the docstrings: run python tools/gen_reference.py"
    )


def test_check_mode_fails_on_a_stale_file_and_passes_on_a_fresh_one(tmp_path: Path):
    output = tmp_path / "api.md"
    output.write_text("# stale\n")
    stale = _generate("--check", "--output", str(output))
    assert stale.returncode == 1
    assert "out of date" in stale.stderr
    assert output.read_text() == "# stale\n"  # check mode never writes
    assert _generate("--output", str(output)).returncode == 0
    assert _generate("--check", "--output", str(output)).returncode == 0
    assert output.read_text() == (ROOT / "docs" / "reference" / "api.md").read_text()


def test_an_undocumented_public_name_is_a_warning_that_fails_the_check():
    import gen_reference  # tools/gen_reference.py, on sys.path through tests/conftest

    def documented() -> None:
        """Documented."""

    class Public:
        """Documented, but not its method."""

        def method(self) -> None:
            pass

    package = types.ModuleType("fake")
    package.__dict__.update(
        __all__=["Public", "documented", "undocumented", "__version__"],
        Public=Public,
        documented=documented,
        undocumented=lambda: None,
    )
    Public.__module__ = "coordinated_mesh.fake"
    assert gen_reference.warnings_of(package) == [
        "Public.method: no docstring",
        "undocumented: no docstring",
    ]
    assert gen_reference.warnings_of(gen_reference.load_package()) == []


# --- (b) links ------------------------------------------------------------------------------


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans (links there are not links)."""
    return _CODE_SPAN_RE.sub("", _FENCE_RE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (lower case, punctuation dropped, spaces to ``-``)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's ``-1``, ``-2`` for repeats."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for match in _HEADING_RE.finditer(_FENCE_RE.sub("", path.read_text())):
        slug = github_slug(match[2])
        count = counts.get(slug, 0)
        counts[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> Iterator[str]:
    for match in _LINK_RE.finditer(_prose(path.read_text())):
        target = match[1]
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # https:, mailto:, ...
        yield target


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_resolve(doc: Path):
    broken: list[str] = []
    for target in relative_links(doc):
        file_part, _, fragment = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if not resolved.is_relative_to(ROOT):
            if not resolved.is_relative_to(WORKSPACE_SHARED.resolve()):
                broken.append(f"{target}: leaves the repository (only ../shared/ may)")
                continue
            if not WORKSPACE_SHARED.is_dir():
                continue  # a checkout outside the workspace: nothing to check against
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.name}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_document_has_links_checked():
    """The link check sees the documents this change adds (a guard against a bad glob)."""
    names = {str(d.relative_to(ROOT)) for d in DOCS}
    assert {
        "README.md",
        "CHANGES.md",
        "CONTRIBUTING.md",
        "docs/explanation/architecture.md",
        "docs/explanation/joining-and-leaving-the-mesh.md",
        "docs/explanation/labels-and-policies.md",
        "docs/explanation/telemetry-proxy.md",
        "docs/explanation/worker.md",
        "docs/how-to/add-mesh-support.md",
        "docs/how-to/migrate-from-coordinated-workers.md",
        "docs/how-to/serve-the-proxy-over-tls.md",
        "docs/how-to/test-your-charms.md",
        "docs/how-to/vendor-the-library.md",
        "docs/reference/api.md",
        "docs/reference/parsing.md",
        "docs/reference/relations.md",
    } <= names


def test_the_slug_rule_matches_github():
    assert github_slug("`Coordinator.reconcile`") == "coordinatorreconcile"
    assert github_slug("istio-k8s (channel 2/edge; Istio 1.26 ambient)") == (
        "istio-k8s-channel-2edge-istio-126-ambient"
    )
    assert github_slug("Leaving the mesh: the drain rule") == "leaving-the-mesh-the-drain-rule"


# --- (c) the how-to -------------------------------------------------------------------------


def howto_files() -> dict[str, str]:
    """The how-to's blocks announced as files (``<!-- file: PATH -->``), by path."""
    return {m[1]: m[2] for m in _FILE_BLOCK_RE.finditer(HOWTO.read_text())}


def test_how_to_python_blocks_compile():
    blocks = [code for lang, code in _BLOCK_RE.findall(HOWTO.read_text()) if lang == "python"]
    assert len(blocks) >= 4
    for index, code in enumerate(blocks):
        compile(code, f"{HOWTO.name}, python block {index + 1}", "exec")


def test_how_to_has_both_charms():
    assert set(howto_files()) == {
        "my-coordinator-k8s/src/charm.py",
        "my-coordinator-k8s/charmcraft.yaml",
        "my-worker-k8s/src/charm.py",
        "my-worker-k8s/charmcraft.yaml",
    }


def test_how_to_charms_import_only_the_public_face():
    for path, code in howto_files().items():
        if path.endswith(".py"):
            imports = re.findall(r"^(?:from|import) (coordinated_mesh\S*)", code, re.M)
            assert imports == ["coordinated_mesh"], path


@pytest.mark.parametrize("charm", ["my-coordinator-k8s", "my-worker-k8s"])
def test_how_to_charmcraft_yaml_is_a_valid_project(charm: str):
    from charmcraft.models.project import CharmcraftProject

    meta = yaml.safe_load(howto_files()[f"{charm}/charmcraft.yaml"])
    project = CharmcraftProject.unmarshal(meta)
    assert project.name == charm
    assert project.type == "charm"


def load_charm(charm: str, monkeypatch: pytest.MonkeyPatch) -> tuple[type[Any], dict[str, Any]]:
    """Exec the how-to's ``src/charm.py`` of ``charm``; its charm class and its metadata."""
    files = howto_files()
    name = "howto_" + charm.replace("-", "_")
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(files[f"{charm}/src/charm.py"], f"{HOWTO}: {charm}", "exec"), module.__dict__)
    (charm_type,) = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ops.CharmBase)
        and value is not ops.CharmBase
    ]
    return charm_type, yaml.safe_load(files[f"{charm}/charmcraft.yaml"])


def context(charm_type: type[Any], meta: dict[str, Any], **seams: Any) -> testing.Context[Any]:
    """A context for the charm with its Kubernetes seams set, as the how-to says to test it."""
    attributes: dict[str, Any] = {"__module__": charm_type.__module__}
    attributes.update({key: staticmethod(value) for key, value in seams.items()})
    subclass = type(f"Test{charm_type.__name__}", (charm_type,), attributes)
    return testing.Context(subclass, meta=meta)  # charmcraft.yaml: actions and config included


@dataclass
class FakeLabels:
    """The labels a leader manages on its StatefulSet and Service."""

    labels: dict[str, str] = field(default_factory=dict[str, str])

    def reconcile_labels(self, labels: Mapping[str, str]) -> bool:
        changed = dict(labels) != self.labels
        self.labels = dict(labels)
        return changed

    def managed_labels(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass
class FakeKubernetes(FakeLabels):
    """The coordinator's Kubernetes: its labels and the policies it owns."""

    policies: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])

    def reconcile_policies(
        self, policies: Sequence[Any], *, listed: Sequence[Mapping[str, Any]] | None = None
    ) -> bool:
        wanted = sorted((p.to_wire() for p in policies), key=json.dumps)
        changed = wanted != self.policies
        self.policies = wanted
        return changed

    def local_policies(self) -> list[dict[str, Any]]:
        return list(self.policies)

    def owned_policies(self) -> list[dict[str, Any]]:
        return list(self.policies)

    def cluster_pods(self, selector: Mapping[str, str]) -> list[Any]:
        return []

    def namespace_labels(self) -> dict[str, str]:
        return {}

    def delete_policies(self) -> bool:
        changed = bool(self.policies)
        self.policies = []
        return changed

    def delete_label_memory(self) -> bool:
        return False


MESH_LABELS = {
    "istio.io/dataplane-mode": "ambient",
    "istio.io/use-waypoint": "mymodel-istio-beacon-k8s-waypoint",
    "istio.io/use-waypoint-namespace": "mymodel",
}


def test_how_to_coordinator_joins_the_mesh(monkeypatch: pytest.MonkeyPatch):
    charm_type, meta = load_charm("my-coordinator-k8s", monkeypatch)
    kube = FakeKubernetes()
    ctx = context(charm_type, meta, kubernetes_backend_factory=lambda **_: kube)
    app = meta["name"]
    worker = {
        "juju_topology": json.dumps(
            {"application": "worker", "unit": "worker/0", "charm_name": "my-worker-k8s"}
        ),
        "address": json.dumps("worker-0.worker-endpoints.mymodel.svc.cluster.local"),
        "metrics_endpoint": json.dumps({"port": 9090, "path": "/metrics"}),
    }
    cluster = testing.Relation("cluster", remote_app_name="worker", remote_units_data={0: worker})
    beacon = testing.Relation(
        "service-mesh",
        remote_app_name="istio-beacon",
        remote_app_data={"labels": json.dumps(MESH_LABELS), "mesh_type": json.dumps("istio")},
    )
    state = testing.State(
        leader=True,
        model=MODEL,
        relations=[cluster, beacon],
        containers=[
            testing.Container(
                "nginx", can_connect=True, execs={testing.Exec(["nginx"], return_code=0)}
            ),
            testing.Container("nginx-prometheus-exporter", can_connect=True),
        ],
    )

    out = ctx.run(ctx.on.relation_changed(cluster, remote_unit=0), state)

    labels = {"app.kubernetes.io/part-of": app, **MESH_LABELS}
    assert len(kube.policies) == 3  # coordinator -> cluster, worker -> cluster, worker -> Service
    assert kube.labels == labels
    published = out.get_relation(cluster.id).local_app_data
    assert json.loads(published["worker_labels"]) == labels
    assert json.loads(published["worker_config"]).startswith("global:")
    nginx = out.get_container("nginx").get_filesystem(ctx) / "etc/nginx/nginx.conf"
    assert "location = /proxy/worker/worker-0/metrics" in nginx.read_text()


def test_how_to_worker_applies_what_the_coordinator_sends(monkeypatch: pytest.MonkeyPatch):
    charm_type, meta = load_charm("my-worker-k8s", monkeypatch)
    kube = FakeLabels()
    ctx = context(charm_type, meta, labels_backend_factory=lambda **_: kube)
    proxy = "http://coordinator.mymodel.svc.cluster.local:8080/proxy"
    labels = {"app.kubernetes.io/part-of": "coordinator", **MESH_LABELS}
    coordinator_data = {
        "worker_labels": json.dumps(labels),
        "worker_config": json.dumps("global:\n  scrape_interval: 1m\n"),
        "loki_endpoints": json.dumps({"loki/0": f"{proxy}/loki/loki-0/push"}),
        "remote_write_endpoints": json.dumps([{"url": f"{proxy}/remote-write/prom-0/write"}]),
        "charm_tracing_receivers": json.dumps({}),
        "workload_tracing_receivers": json.dumps({}),
    }
    cluster = testing.Relation(
        "cluster", remote_app_name="coordinator", remote_app_data=coordinator_data
    )
    state = testing.State(
        leader=True,
        model=MODEL,
        relations=[cluster],
        containers=[testing.Container("prometheus", can_connect=True)],
    )

    out = ctx.run(ctx.on.relation_changed(cluster), state)

    assert kube.labels == labels
    container = out.get_container("prometheus")
    config = yaml.safe_load(
        (container.get_filesystem(ctx) / "etc/prometheus/prometheus.yml").read_text()
    )
    assert config["global"] == {
        "scrape_interval": "1m",
        "external_labels": {
            "juju_application": "my-worker-k8s",
            "juju_charm": "my-worker-k8s",
            "juju_model": "mymodel",
            "juju_model_uuid": MODEL.uuid,
            "juju_unit": "my-worker-k8s/0",
        },
    }
    assert config["remote_write"] == [{"url": f"{proxy}/remote-write/prom-0/write"}]
    push = f"{proxy}/loki/loki-0/push"
    assert container.plan.log_targets[loki_target_name(push)].location == push
    assert "prometheus" in container.plan.services
    unit_data = out.get_relation(cluster.id).local_unit_data
    assert json.loads(unit_data["address"]).startswith("my-worker-k8s-0.my-worker-k8s-endpoints.")
    assert out.unit_status == testing.ActiveStatus("coordinator: coordinator, role: all")


# --- (d) the testing how-to ---------------------------------------------------------------------

TESTING_HOWTO = ROOT / "docs" / "how-to" / "test-your-charms.md"


def files_of_the_testing_howto() -> dict[str, str]:
    return {m[1]: m[2] for m in _FILE_BLOCK_RE.finditer(TESTING_HOWTO.read_text())}


def test_testing_how_to_has_a_test_per_charm():
    assert set(files_of_the_testing_howto()) == {
        "my-coordinator-k8s/tests/unit/test_charm.py",
        "my-worker-k8s/tests/unit/test_charm.py",
    }


@pytest.mark.parametrize("charm", ["my-coordinator-k8s", "my-worker-k8s"])
def test_testing_how_to_tests_pass_against_the_add_mesh_support_charms(
    charm: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Run each example test as pytest would, from the charm's directory, ``charm`` importable."""
    charm_type, meta = load_charm(charm, monkeypatch)
    module = sys.modules[charm_type.__module__]
    monkeypatch.setitem(sys.modules, "charm", module)
    (tmp_path / "charmcraft.yaml").write_text(yaml.safe_dump(meta))
    monkeypatch.chdir(tmp_path)
    code = files_of_the_testing_howto()[f"{charm}/tests/unit/test_charm.py"]
    namespace: dict[str, Any] = {"__name__": f"howto_test_{charm.replace('-', '_')}"}
    exec(compile(code, f"{TESTING_HOWTO}: {charm}", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests, "the example defines tests"
    for test in tests:
        test()
