"""Settings shared by every test suite.

Hypothesis profiles: ``ci`` (the default under tox) runs a fixed, moderate number of examples with
no deadline, so a loaded 2-core CI machine gives the same verdicts as a laptop; ``dev`` runs fewer;
``fuzz`` (``tox -e fuzz``) runs 1,000 fixed examples per test. Pick one with ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the integration environment runs no property tests
    pass
else:
    settings.register_profile(
        "ci",
        max_examples=60,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile("dev", max_examples=20, deadline=None)
    # tests/fuzz under `tox -e fuzz` (in CI): 1,000 examples of every relation field.
    settings.register_profile(
        "fuzz",
        max_examples=1000,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Kubernetes configuration to be found: no ``KUBECONFIG``, an empty ``HOME``.

    (Nor in-cluster credentials: no test machine has a service-account token.)
    """
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
