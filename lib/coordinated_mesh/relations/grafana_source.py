"""``grafana_datasource``, provider side: the cluster's query API as a Grafana datasource.

Our application databag (leader): ``grafana_source_data`` = JSON ``{application, model,
model_uuid, type}``; every unit's databag: ``grafana_source_host`` = the URL as a plain string,
where an empty value (no key) means "no datasource" (``../shared/spec/telemetry-interfaces.md``).
Every unit publishes the coordinator Service's URL; nothing is read back, so nothing Grafana
writes can break a hook.
"""

from __future__ import annotations

import ops
import pydantic

from coordinated_mesh.charm.memory import DatabagMemory
from coordinated_mesh.parse import parse_http_url
from coordinated_mesh.relations._common import dumps, write_provider_data

__all__ = [
    "APP_KEY",
    "DEFAULT_ENDPOINT",
    "UNIT_KEY",
    "GrafanaSourceData",
    "provider_app_databag",
    "provider_unit_databag",
    "publish_grafana_source",
]

DEFAULT_ENDPOINT = "grafana-source"
APP_KEY = "grafana_source_data"
UNIT_KEY = "grafana_source_host"


class GrafanaSourceData(pydantic.BaseModel):
    """The ``grafana_source_data`` value: whose datasource this is, and of which type."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    model: str = pydantic.Field(min_length=1)
    model_uuid: str = pydantic.Field(min_length=1)
    application: str = pydantic.Field(min_length=1)
    type: str = pydantic.Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")

    @classmethod
    def from_model(cls, model: ops.Model, *, source_type: str) -> GrafanaSourceData:
        """The datasource metadata of the application running this charm."""
        return cls(
            model=model.name, model_uuid=model.uuid, application=model.app.name, type=source_type
        )


def provider_app_databag(data: GrafanaSourceData) -> dict[str, str | None]:
    """The provider application databag (pure)."""
    return {APP_KEY: dumps(data.model_dump())}


def provider_unit_databag(url: str | None) -> dict[str, str | None]:
    """The provider unit databag (pure): the URL, or ``None`` (empty: no key) for no datasource.

    Raises:
        ValueError: ``url`` is not a safe ``http(s)://host[:port][/path]`` URL (a bug: it is ours).
    """
    return {UNIT_KEY: None if url is None else str(parse_http_url(url))}


def publish_grafana_source(
    model: ops.Model,
    *,
    url: str | None,
    source_type: str,
    endpoint: str = DEFAULT_ENDPOINT,
    memory: DatabagMemory | None = None,
) -> bool:
    """Publish the datasource on every ``grafana-source`` relation; return whether anything changed.

    Every unit writes its own unit databag (``url``; for none, the empty value, which is no key);
    only the leader writes the application databag. Only changed keys are written.

    Args:
        model: the charm's model (``self.model``).
        url: the datasource URL (the same on every unit), or ``None`` while there is none.
        source_type: the Grafana datasource type (``prometheus``).
        endpoint: the endpoint name.
        memory: what this unit wrote last (then unchanged data is not read again).

    Raises:
        ValueError: ``url`` or ``source_type`` is invalid (a charm bug, not remote data).
    """
    unit_data = provider_unit_databag(url)
    try:
        app_data = provider_app_databag(
            GrafanaSourceData.from_model(model, source_type=source_type)
        )
    except pydantic.ValidationError as e:
        raise ValueError(f"invalid Grafana datasource: {e}") from None
    return write_provider_data(
        model, endpoint, unit_data=unit_data, app_data=app_data, memory=memory
    )
