"""Fixtures shared by the coordinator's ``ops.testing`` tests.

``kube`` is an in-memory Kubernetes; ``ctx`` a context of the coordinator charm whose backend is
that ``kube`` (through the charm's constructor seam), checking every nginx configuration it
renders with the real ``nginx -t`` at the end of the test. Worker tests define their own ``kube``
and ``ctx`` in their modules. ``bags_read`` records every databag a charm reads (``relation-get``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ops import testing
from scenario.mocking import _MockModelBackend  # pyright: ignore[reportPrivateUsage]

from tests.support.coordinator import FakeKubernetes, context_checking_nginx


@pytest.fixture
def kube() -> FakeKubernetes:
    return FakeKubernetes()


@pytest.fixture
def ctx(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kube: FakeKubernetes
) -> Iterator[testing.Context[Any]]:
    yield from context_checking_nginx(monkeypatch, tmp_path, kube)


@pytest.fixture
def bags_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every relation databag the charm reads (``relation-get`` under Juju), by member name."""
    read: list[str] = []
    original = _MockModelBackend.relation_get

    def relation_get(self: _MockModelBackend, *args: Any, **kwargs: Any) -> Any:
        member_name = kwargs.get("member_name", args[1] if len(args) > 1 else None)
        read.append(str(member_name))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_MockModelBackend, "relation_get", relation_get)
    yield read
