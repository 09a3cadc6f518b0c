"""``prometheus_scrape``, provider side: publish scrape jobs on ``metrics-endpoint``.

Application databag (leader): ``scrape_jobs`` (only :data:`ALLOWED_JOB_KEYS`), ``scrape_metadata``
(JSON topology), ``alert_rules``; every unit's databag: ``prometheus_scrape_unit_address``,
``_name`` and ``_fqdn`` as plain strings (a job target ``*:PORT`` expands to each unit's address).
An ``https`` job carries its CA as PEM text in ``tls_config.ca_file`` (prometheus-k8s writes it to
a file); a client key never goes into relation data. Wire format:
``../shared/spec/telemetry-interfaces.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import ops

from coordinated_mesh.charm.memory import DatabagMemory
from coordinated_mesh.relations._common import TopologyMetadata, dumps, write_provider_data

__all__ = [
    "ALLOWED_JOB_KEYS",
    "DEFAULT_ENDPOINT",
    "TopologyMetadata",
    "provider_app_databag",
    "provider_unit_databag",
    "publish_scrape_jobs",
    "sanitize_scrape_jobs",
]

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "metrics-endpoint"

ALLOWED_JOB_KEYS = frozenset(
    {
        "job_name",
        "metrics_path",
        "static_configs",
        "scrape_interval",
        "scrape_timeout",
        "proxy_url",
        "relabel_configs",
        "metric_relabel_configs",
        "sample_limit",
        "label_limit",
        "label_name_length_limit",
        "label_value_length_limit",
        "scheme",
        "basic_auth",
        "tls_config",
        "authorization",
        "params",
    }
)
"""The job keys prometheus-k8s accepts from a provider; others are dropped before publishing."""


def sanitize_scrape_jobs(jobs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Keep only :data:`ALLOWED_JOB_KEYS` in each job (dropped keys are logged).

    A ``tls_config`` keeps no ``key_file``: relation data is readable by the whole model, and
    a private key must never be written there.
    """
    cleaned: list[dict[str, Any]] = []
    for job in jobs:
        dropped = sorted(set(job) - ALLOWED_JOB_KEYS)
        if dropped:
            logger.warning(
                "scrape job %r: dropping unsupported keys %s", job.get("job_name"), dropped
            )
        kept = {key: value for key, value in job.items() if key in ALLOWED_JOB_KEYS}
        tls_config = kept.get("tls_config")
        if isinstance(tls_config, Mapping) and "key_file" in tls_config:
            logger.warning("scrape job %r: dropping tls_config.key_file", job.get("job_name"))
            kept["tls_config"] = {k: v for k, v in tls_config.items() if k != "key_file"}
        cleaned.append(kept)
    return cleaned


def provider_app_databag(
    jobs: Sequence[Mapping[str, Any]],
    metadata: TopologyMetadata,
    alert_rules: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The provider application databag for these jobs (pure)."""
    return {
        "scrape_jobs": dumps(sanitize_scrape_jobs(jobs)),
        "scrape_metadata": dumps(metadata.model_dump()),
        "alert_rules": dumps(dict(alert_rules or {})),
    }


def provider_unit_databag(*, unit_name: str, unit_address: str) -> dict[str, str]:
    """The provider unit databag (pure): plain strings, not JSON."""
    return {
        "prometheus_scrape_unit_address": unit_address,
        "prometheus_scrape_unit_name": unit_name,
        "prometheus_scrape_unit_fqdn": unit_address,
    }


def publish_scrape_jobs(
    model: ops.Model,
    jobs: Sequence[Mapping[str, Any]],
    *,
    charm_name: str,
    unit_address: str,
    alert_rules: Mapping[str, Any] | None = None,
    endpoint: str = DEFAULT_ENDPOINT,
    memory: DatabagMemory | None = None,
) -> bool:
    """Publish scrape jobs on every ``metrics-endpoint`` relation; return whether anything changed.

    Every unit writes its own unit databag; only the leader writes the application databag
    (non-leaders skip it, they never fail). Only changed keys are written.

    Args:
        model: the charm's model (``self.model``).
        jobs: the scrape jobs, e.g. ``plan.scrape_jobs``; unsupported keys are dropped.
        charm_name: this charm's name, for ``scrape_metadata``.
        unit_address: this unit's address (its FQDN), where ``*:PORT`` targets point.
        alert_rules: ``{"groups": [...]}``; ``None`` publishes ``{}``.
        endpoint: the endpoint name.
        memory: what this unit wrote last (then unchanged data is not read again).
    """
    app_data = provider_app_databag(
        jobs, TopologyMetadata.from_model(model, charm_name=charm_name), alert_rules
    )
    unit_data = provider_unit_databag(unit_name=model.unit.name, unit_address=unit_address)
    return write_provider_data(
        model, endpoint, unit_data=unit_data, app_data=app_data, memory=memory
    )
