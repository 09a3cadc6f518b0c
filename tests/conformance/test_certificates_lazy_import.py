"""A coordinator without ``certificates`` or ``receive-ca-cert`` never imports their libraries.

``charmlibs.interfaces.tls_certificates`` pulls ``cryptography`` (about 0.15 s of a hook's start);
the charm module's cold import and every hook without those relations must not pay it. Checked in
a fresh interpreter (``sys.modules``), where nothing was imported before.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "cryptography",
    "charmlibs.interfaces.tls_certificates",
    "charmlibs.interfaces.certificate_transfer",
)


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": ":".join([str(ROOT / "coordinator" / "src"), *sys.path])},
    )
    return out.stdout.strip()


def test_cold_import_of_the_coordinator_charm_loads_no_crypto():
    loaded = _run(
        f"""
        import sys
        import charm
        print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))
        """
    )
    assert loaded == "[]"


def test_a_hook_without_the_relations_builds_no_requirer_and_loads_no_crypto():
    loaded = _run(
        f"""
        import sys
        import ops
        from ops import testing
        from coordinated_mesh.relations.certificates import ServerCertificates
        from coordinated_mesh.relations.certificate_transfer import TrustedCas

        class Charm(ops.CharmBase):
            def __init__(self, framework):
                super().__init__(framework)
                self.certificates = ServerCertificates(self, names=lambda: ["coord.m.svc.cluster.local"])
                self.cas = TrustedCas(self)

        meta = {{"name": "coord", "requires": {{
            "certificates": {{"interface": "tls-certificates", "limit": 1}},
            "receive-ca-cert": {{"interface": "certificate_transfer"}}}}}}
        ctx = testing.Context(Charm, meta=meta)
        with ctx(ctx.on.update_status(), testing.State()) as manager:
            manager.run()
            assert manager.charm.certificates.read("coord.m.svc.cluster.local") == (None, [])
            assert manager.charm.cas.read() == ((), [])
        print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))
        """
    )
    assert loaded == "[]"
