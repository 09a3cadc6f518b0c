"""Pydantic models for Juju databags, where every value is a JSON document encoded as a string.

A databag is a ``str -> str`` mapping. :class:`DatabagModel` maps each field to one key whose value is
``json.dumps`` of the field, which is what the ecosystem's interfaces do. Reading is forgiving in the
ways the wire allows (unknown keys are ignored, so newer peers can add keys) and strict in the ways it
must be (a known key with the wrong shape is an error, reported as :class:`DatabagError`, never a
pydantic exception out of a hook).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Self

import pydantic

from coordinated_mesh.charm.memory import DatabagMemory, write_changed
from coordinated_mesh.parse import shorten

__all__ = ["DatabagError", "DatabagModel", "load_json_value"]

MAX_VALUE_BYTES = 1 << 20
"""The largest databag value we accept from a peer (1 MiB); larger values are reported as invalid."""


MAX_MESSAGE = 500
"""The longest :class:`DatabagError` message."""


class DatabagError(ValueError):
    """A databag could not be read into its model. ``str(error)`` says which key and why.

    The message is made safe for a log line or a status (:func:`~coordinated_mesh.parse.shorten`):
    it may quote a peer's keys.
    """

    def __init__(self, message: str) -> None:
        super().__init__(shorten(message, MAX_MESSAGE))


def load_json_value(databag: Mapping[str, str], key: str) -> Any:
    """The JSON value under ``key``; ``None`` when the key is absent or empty.

    This is the one place remote JSON is decoded: whatever ``json.loads`` can raise on a
    peer's text becomes a :class:`DatabagError`, so readers need catch nothing else.

    Raises:
        DatabagError: the value is not a string, is larger than :data:`MAX_VALUE_BYTES`, is not
            JSON, holds an integer too long to decode, or is nested too deeply to decode. The
            message names the key.
    """
    raw = databag.get(key)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise DatabagError(f"{key!r} is not a string")
    size = len(raw.encode("utf-8", errors="surrogatepass"))
    if size > MAX_VALUE_BYTES:
        raise DatabagError(f"{key!r} is {size} bytes, more than {MAX_VALUE_BYTES}")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise DatabagError(f"{key!r} is not valid JSON: {e.msg}") from None
    except RecursionError:
        # Deeply nested arrays or objects ("[[[[..."): fits in the size limit, not in a stack.
        raise DatabagError(f"{key!r} is nested too deeply") from None
    except ValueError:
        # Not a JSONDecodeError: an integer of more than sys.get_int_max_str_digits() (4300)
        # digits, which json.loads refuses with a plain ValueError (Python >= 3.11).
        raise DatabagError(f"{key!r} holds a number too long to decode") from None


class DatabagModel(pydantic.BaseModel):
    """Base for databag models: one field per key, each value JSON-encoded."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    @classmethod
    def load(cls, databag: Mapping[str, str]) -> Self:
        """Read a model from a databag.

        Raises:
            DatabagError: a key holds invalid JSON, a value is too large, or the data does not fit
                the model. The message names the key.
        """
        decoded: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            key = field.alias or name
            value = load_json_value(databag, key)
            if value is not None:
                decoded[key] = value
        try:
            return cls.model_validate(decoded)
        except RecursionError:
            raise DatabagError("a value is nested too deeply") from None
        except pydantic.ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: "
                + err["msg"].removeprefix("Value error, ")  # our validators' own messages
                for err in e.errors()
            )
            raise DatabagError(problems) from None
        except (ValueError, TypeError) as e:  # after pydantic's: a validator's own bug or limit
            raise DatabagError(f"invalid value: {e}") from None

    def dump(self) -> dict[str, str]:
        """The databag form: each set field JSON-encoded under its key (``None`` fields omitted).

        Keys are sorted inside JSON objects so equal models give byte-identical databags.
        """
        out: dict[str, str] = {}
        for key, value in self.model_dump(mode="json", by_alias=True).items():
            if value is None:
                continue
            out[key] = json.dumps(value, sort_keys=True)
        return out

    def write(self, databag: Any, memory: DatabagMemory | None = None) -> bool:
        """Write this model into a (Juju) databag, touching only keys whose value changes.

        Keys of this model that are unset here are deleted from the databag. Keys the model does
        not know are left alone. With ``memory``, a databag already holding these values (as
        this unit wrote them last) is not read. Returns whether anything was written.
        """
        wanted = self.dump()
        values = {
            (field.alias or name): wanted.get(field.alias or name)
            for name, field in type(self).model_fields.items()
        }
        return write_changed(databag, values, memory)
