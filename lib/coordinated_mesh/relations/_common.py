"""Helpers shared by the interface adapters: safe databag access and topology metadata."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ops
import pydantic

from coordinated_mesh.charm.memory import DatabagMemory, write_changed
from coordinated_mesh.parse import Problem, parse_http_url, shorten
from coordinated_mesh.relations.databag import load_json_value

logger = logging.getLogger(__name__)


class TopologyMetadata(pydantic.BaseModel):
    """Juju topology of this unit, as ``scrape_metadata`` (prometheus) and ``metadata`` (loki)."""

    model_config = pydantic.ConfigDict(frozen=True)

    model: str
    model_uuid: str
    application: str
    unit: str
    charm_name: str

    @classmethod
    def from_model(cls, model: ops.Model, *, charm_name: str) -> TopologyMetadata:
        """The topology of the unit running this charm."""
        return cls(
            model=model.name,
            model_uuid=model.uuid,
            application=model.app.name,
            unit=model.unit.name,
            charm_name=charm_name,
        )


def dumps(value: Any) -> str:
    """JSON with sorted keys and no whitespace variance: equal values, equal databag strings."""
    return json.dumps(value, sort_keys=True)


def write_provider_data(
    model: ops.Model,
    endpoint: str,
    *,
    unit_data: Mapping[str, str | None],
    app_data: Mapping[str, str | None],
    memory: DatabagMemory | None = None,
) -> bool:
    """Write our unit's data (every unit) and our app's data (leader only) on every relation.

    Only keys whose value differs are written (see :func:`write_changed`; with ``memory``, what
    was written last time is not read again). Returns whether anything was written.
    """
    leader = model.unit.is_leader()
    changed = False
    for relation in sorted(model.relations[endpoint], key=lambda r: r.id):
        changed |= write_changed(relation.data[model.unit], unit_data, memory)
        if leader:
            changed |= write_changed(relation.data[model.app], app_data, memory)
    return changed


def remote_unit_databags(
    relations: Sequence[ops.Relation], problems: list[Problem]
) -> Iterator[tuple[ops.Relation, str, Mapping[str, str]]]:
    """Each remote unit's databag as ``(relation, unit name, databag)``, by relation id and unit.

    A databag that cannot be read is reported in ``problems`` and skipped.
    """
    for relation in sorted(relations, key=lambda r: r.id):
        for unit in sorted(relation.units, key=lambda u: u.name):
            try:
                databag = dict(relation.data[unit])
            except ops.ModelError as e:
                problems.append(Problem(relation.name, unit.name, f"cannot read databag: {e}"))
                continue
            yield relation, unit.name, databag


def describe_validation_error(error: pydantic.ValidationError) -> str:
    """A one-line, printable summary of a pydantic error (values shown safely)."""
    parts: list[str] = []
    for err in error.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return shorten("; ".join(parts), 200)


class UnitUrl(pydantic.BaseModel):
    """A ``{"url": ...}`` value a remote unit publishes (Loki's ``endpoint``, ``remote_write``)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")

    url: str = pydantic.Field(max_length=2048)


def parse_unit_url(databag: Mapping[str, str], key: str) -> str | None:
    """The validated URL under ``key`` (a JSON ``{"url": ...}``); ``None`` when not published yet.

    Raises:
        ValueError: the value is malformed or its URL is unsafe; the message names ``key``.
    """
    raw = load_json_value(databag, key)
    if raw is None:
        return None
    try:
        value = UnitUrl.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ValueError(f"{key!r}: {describe_validation_error(e)}") from None
    return str(parse_http_url(value.url))


def read_unit_urls(
    relations: Sequence[ops.Relation], key: str
) -> tuple[dict[str, str], list[Problem]]:
    """Every remote unit's URL under ``key``, by unit name, and the problems of dropped units."""
    urls: dict[str, str] = {}
    problems: list[Problem] = []
    for relation, unit, databag in remote_unit_databags(relations, problems):
        try:
            url = parse_unit_url(databag, key)
        except ValueError as e:
            problems.append(Problem(relation.name, unit, str(e)))
            continue
        if url is not None:
            urls[unit] = url
    return dict(sorted(urls.items())), problems
