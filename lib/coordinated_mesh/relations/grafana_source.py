"""``grafana_datasource``, provider side: the cluster's query API as a Grafana datasource.

Our application databag (leader): ``grafana_source_data`` = JSON ``{application, model,
model_uuid, type}`` and, for an ``https`` URL, the CA as ``extra_fields`` /
``secure_extra_fields`` (:func:`tls_fields`); every unit's databag: ``grafana_source_host`` =
the URL as a plain string, where an empty value (no key) means "no datasource"
(``../shared/spec/telemetry-interfaces.md``). Every unit publishes the coordinator Service's URL;
nothing is read back, so nothing Grafana writes can break a hook.
"""

from __future__ import annotations

from typing import Any

import ops
import pydantic

from coordinated_mesh.charm.memory import DatabagMemory
from coordinated_mesh.parse import parse_http_url, parse_pem_certificates
from coordinated_mesh.relations._common import dumps, write_provider_data

__all__ = [
    "APP_KEY",
    "DEFAULT_ENDPOINT",
    "UNIT_KEY",
    "GrafanaSourceData",
    "provider_app_databag",
    "provider_unit_databag",
    "publish_grafana_source",
    "tls_fields",
]

DEFAULT_ENDPOINT = "grafana-source"
APP_KEY = "grafana_source_data"
UNIT_KEY = "grafana_source_host"


class GrafanaSourceData(pydantic.BaseModel):
    """The ``grafana_source_data`` value: whose datasource this is, of which type, its trust.

    ``extra_fields`` becomes the datasource's ``jsonData`` and ``secure_extra_fields`` its
    ``secureJsonData`` (see :func:`tls_fields`); both are left out when ``None``.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    model: str = pydantic.Field(min_length=1)
    model_uuid: str = pydantic.Field(min_length=1)
    application: str = pydantic.Field(min_length=1)
    type: str = pydantic.Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    extra_fields: dict[str, Any] | None = None
    secure_extra_fields: dict[str, str] | None = None

    @classmethod
    def from_model(
        cls, model: ops.Model, *, source_type: str, ca_cert: str | None = None
    ) -> GrafanaSourceData:
        """The datasource metadata of the application running this charm (and its CA)."""
        extra, secure = tls_fields(ca_cert)
        return cls(
            model=model.name,
            model_uuid=model.uuid,
            application=model.app.name,
            type=source_type,
            extra_fields=extra,
            secure_extra_fields=secure,
        )


def tls_fields(ca_cert: str | None) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """How Grafana trusts an ``https`` datasource signed by ``ca_cert``: (jsonData, secureJsonData).

    grafana-k8s turns ``extra_fields`` into the provisioned datasource's ``jsonData`` and
    ``secure_extra_fields`` into its ``secureJsonData`` (``src/grafana_config.py``,
    ``generate_datasource_config``, canonical/grafana-k8s-operator at 382e463; copied from the
    app databag by ``grafana_source`` LIBPATCH 29, ``_get_source_config``); Grafana's HTTP
    datasources verify the server with ``jsonData.tlsAuthWithCACert: true`` and the PEM in
    ``secureJsonData.tlsCACert`` (Grafana's data source provisioning reference). ``None``: no
    fields (plain HTTP, or a server whose CA Grafana already trusts).

    Raises:
        ValueError: ``ca_cert`` is not a PEM bundle (a charm bug: it was parsed before).
    """
    if ca_cert is None:
        return None, None
    return {"tlsAuthWithCACert": True}, {"tlsCACert": parse_pem_certificates(ca_cert)}


def provider_app_databag(data: GrafanaSourceData) -> dict[str, str | None]:
    """The provider application databag (pure); unset TLS fields are left out."""
    return {APP_KEY: dumps(data.model_dump(exclude_none=True))}


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
    ca_cert: str | None = None,
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
        ca_cert: the PEM CA of an ``https`` ``url`` (``plan.proxied_telemetry.ca_cert``), which
            Grafana then verifies the datasource with (:func:`tls_fields`); ``None`` for none.
        endpoint: the endpoint name.
        memory: what this unit wrote last (then unchanged data is not read again).

    Raises:
        ValueError: ``url``, ``source_type`` or ``ca_cert`` is invalid (a charm bug, not remote
            data).
    """
    unit_data = provider_unit_databag(url)
    try:
        app_data = provider_app_databag(
            GrafanaSourceData.from_model(model, source_type=source_type, ca_cert=ca_cert)
        )
    except pydantic.ValidationError as e:
        raise ValueError(f"invalid Grafana datasource: {e}") from None
    return write_provider_data(
        model, endpoint, unit_data=unit_data, app_data=app_data, memory=memory
    )
