"""Fixtures shared by the coordinator's ``ops.testing`` tests.

``kube`` is an in-memory Kubernetes; ``ctx`` a context of the coordinator charm whose backend is
that ``kube`` (through the charm's constructor seam), checking every nginx configuration it
renders with the real ``nginx -t`` at the end of the test. Worker tests define their own ``kube``
and ``ctx`` in their modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ops import testing

from tests.support.coordinator import FakeKubernetes, context_checking_nginx


@pytest.fixture
def kube() -> FakeKubernetes:
    return FakeKubernetes()


@pytest.fixture
def ctx(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kube: FakeKubernetes
) -> Iterator[testing.Context[Any]]:
    yield from context_checking_nginx(monkeypatch, tmp_path, kube)
