"""coordinated_mesh.testing.FakeKubernetes behaves like the real backend (envtest: test_testing_fakes)."""

from __future__ import annotations

import pytest
from coordinated_mesh.k8s.client import CRDMissingError
from coordinated_mesh.testing import FakeKubernetes


def test_fake_kubernetes_writes_only_differences():
    fake = FakeKubernetes()
    assert fake.reconcile_labels({"a": "b"})
    assert not fake.reconcile_labels({"a": "b"})
    assert not fake.delete_policies()
    assert fake.writes == ["labels"]


def test_fake_kubernetes_fails_like_kubernetes():
    fake = FakeKubernetes(policies_fail_with=CRDMissingError("no CRD", status=404))
    assert fake.reconcile_labels({"a": "b"})
    with pytest.raises(CRDMissingError):
        fake.reconcile_policies([])
