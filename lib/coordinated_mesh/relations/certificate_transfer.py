"""``certificate_transfer`` (v1, v0 read too), requirer side (``receive-ca-cert``): CAs to trust.

The proxy verifies its TLS backends against the system bundle and these CAs. Read through the
real ``charmlibs.interfaces.certificate_transfer`` requirer (``CertificateTransferRequires``,
which also tells the provider, on ``relation-created``, that we speak v1); every certificate is
parsed with :func:`~coordinated_mesh.parse.parse_pem_certificates`, one per entry, deduplicated,
sorted and capped. The library is imported only with the relation or in a hook concerning it.
Wire format: ``docs/reference/relations.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import ops

from coordinated_mesh.parse import Problem, parse_pem_certificates

if TYPE_CHECKING:
    from charmlibs.interfaces.certificate_transfer import CertificateTransferRequires

__all__ = ["DEFAULT_ENDPOINT", "MAX_TRUSTED_CAS", "TrustedCas", "parse_trusted_cas"]

DEFAULT_ENDPOINT = "receive-ca-cert"

MAX_TRUSTED_CAS = 32
"""The most CA certificates trusted from all ``receive-ca-cert`` relations together."""

_END = "-----END CERTIFICATE-----"


def _single_certificates(bundle: str) -> list[str]:
    """The certificates of a canonical bundle, each one PEM block ending in a newline."""
    return [block.strip() + "\n" + _END + "\n" for block in bundle.split(_END) if block.strip()]


def parse_trusted_cas(
    published: Mapping[str, Iterable[str]], *, endpoint: str, limit: int = MAX_TRUSTED_CAS
) -> tuple[tuple[str, ...], list[Problem]]:
    """The CA certificates to trust, one PEM block each, sorted; and what was dropped (pure).

    Args:
        published: per provider (the item problems name), the certificates it published; an
            entry may be a bundle of several.
        endpoint: the endpoint, for the problems.
        limit: at most this many are kept (the first, sorted); more is a problem.
    """
    found: set[str] = set()
    problems: list[Problem] = []
    for provider, entries in sorted(published.items()):
        for entry in sorted(entries):
            try:
                found.update(_single_certificates(parse_pem_certificates(entry)))
            except ValueError as e:
                problems.append(Problem.of(endpoint, provider, f"a CA was dropped: {e}"))
    cas = tuple(sorted(found))
    if len(cas) > limit:
        reason = f"{len(cas)} CA certificates, only the first {limit} are trusted"
        problems.append(Problem(endpoint, "certificates", reason))
        cas = cas[:limit]
    return cas, problems


def _hook_concerns(endpoint: str) -> bool:
    return os.environ.get("JUJU_DISPATCH_PATH", "").startswith(f"hooks/{endpoint}-relation-")


class TrustedCas(ops.Object):
    """The CAs the ``receive-ca-cert`` relations ask us to trust.

    Constructed in the charm's ``__init__``; builds the library's requirer only with the
    relation or in one of its relation hooks.

    Args:
        charm: the charm.
        endpoint: the relation endpoint.
        limit: the most CAs kept (:data:`MAX_TRUSTED_CAS`).
    """

    def __init__(
        self,
        charm: ops.CharmBase,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        limit: int = MAX_TRUSTED_CAS,
    ):
        super().__init__(charm, f"trusted-cas-{endpoint}")
        self._endpoint = endpoint
        self._limit = limit
        self._requirer: CertificateTransferRequires | None = None
        if _hook_concerns(endpoint) or self.related:
            from charmlibs.interfaces.certificate_transfer import CertificateTransferRequires

            self._requirer = CertificateTransferRequires(charm, endpoint)

    @property
    def related(self) -> bool:
        """Whether a ``receive-ca-cert`` relation exists."""
        return bool(self.model.relations[self._endpoint])

    @property
    def requirer(self) -> CertificateTransferRequires | None:
        """The library's requirer, when built."""
        return self._requirer

    def read(self) -> tuple[tuple[str, ...], list[Problem]]:
        """The CA certificates to trust (PEM, one each, sorted) and the problems found.

        Never raises on remote data: a malformed certificate is dropped with a problem, an
        unreadable databag is a problem for that provider.
        """
        requirer = self._requirer
        if requirer is None:
            return (), []
        published: dict[str, list[str]] = {}
        problems: list[Problem] = []
        for relation in sorted(self.model.relations[self._endpoint], key=lambda r: r.id):
            provider = relation.app.name if relation.app else str(relation.id)
            try:
                if "certificates" in relation.data[relation.app] and not requirer.is_ready(
                    relation
                ):
                    problems.append(
                        Problem.of(self._endpoint, provider, "the certificates are malformed")
                    )
                    continue
                by_relation = requirer.get_all_certificates_by_relation(relation.id)
            except (ops.ModelError, KeyError, ValueError, TypeError) as e:
                problems.append(Problem.of(self._endpoint, provider, f"cannot read: {e}"))
                continue
            published.setdefault(provider, []).extend(by_relation.get(relation.id, []))
        cas, found = parse_trusted_cas(published, endpoint=self._endpoint, limit=self._limit)
        return cas, problems + found
