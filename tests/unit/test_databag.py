"""DatabagModel: JSON-per-key databags, read forgivingly where the wire allows, strictly elsewhere."""

from __future__ import annotations

import json
from typing import Any

import ops
import pydantic
import pytest
from coordinated_mesh.relations.databag import MAX_VALUE_BYTES, DatabagError, DatabagModel
from hypothesis import given
from hypothesis import strategies as st
from ops import testing


class Inner(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    url: str
    weight: int = 1


class Sample(DatabagModel):
    name: str
    count: int = 0
    tags: list[str] | None = None
    weights: dict[str, int] | None = None
    inner: Inner | None = None
    aliased: str | None = pydantic.Field(default=None, alias="some-key")


SAMPLES = st.builds(
    Sample,
    name=st.text(max_size=20),
    count=st.integers(min_value=-(2**63), max_value=2**63),
    tags=st.none() | st.lists(st.text(max_size=10), max_size=4),
    weights=st.none() | st.dictionaries(st.text(max_size=8), st.integers(), max_size=4),
    inner=st.none() | st.builds(Inner, url=st.text(max_size=20), weight=st.integers()),
    aliased=st.none() | st.text(max_size=10),
)
KNOWN_KEYS = ["name", "count", "tags", "weights", "inner", "some-key"]


class RecordingBag(dict[str, str]):
    """A databag that records every write, to check that ``write`` touches only what changes."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.ops: list[tuple[str, str]] = []

    def __setitem__(self, key: str, value: str) -> None:
        self.ops.append(("set", key))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.ops.append(("del", key))
        super().__delitem__(key)


# --- round trip -----------------------------------------------------------------------------


@given(SAMPLES)
def test_load_dump_round_trip(sample: Sample):
    bag = sample.dump()
    assert all(isinstance(v, str) for v in bag.values())
    assert set(bag) <= set(KNOWN_KEYS)
    assert Sample.load(bag) == sample
    assert Sample.load(bag).dump() == bag


def test_dump_uses_aliases_omits_none_and_sorts_object_keys():
    sample = Sample.model_validate({"name": "n", "weights": {"b": 2, "a": 1}, "some-key": "v"})
    assert sample.dump() == {
        "name": '"n"',
        "count": "0",
        "weights": '{"a": 1, "b": 2}',
        "some-key": '"v"',
    }


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=6), st.randoms())
def test_equal_models_give_byte_identical_databags(weights: dict[str, int], rnd: Any):
    items = list(weights.items())
    rnd.shuffle(items)
    assert Sample(name="x", weights=dict(items)).dump() == Sample(name="x", weights=weights).dump()


# --- reading bad data -----------------------------------------------------------------------


def test_unknown_keys_ignored_and_empty_values_are_absent():
    sample = Sample.load({"name": '"n"', "unknown": "{{{ not json", "tags": ""})
    assert sample == Sample(name="n")


@pytest.mark.parametrize(
    ("bag", "key"),
    [
        pytest.param({"name": "n"}, "'name'", id="unquoted-string"),
        pytest.param({"name": '"n"', "tags": "[1,"}, "'tags'", id="truncated"),
        pytest.param({"name": '"n"', "count": '"three"'}, "count", id="str-for-int"),
        pytest.param({"name": '"n"', "count": "1.5"}, "count", id="float-for-int"),
        pytest.param({"name": "5"}, "name", id="int-for-str"),
        pytest.param({"name": '"n"', "tags": '{"a": 1}'}, "tags", id="object-for-list"),
        pytest.param({"name": '"n"', "weights": '{"a": "x"}'}, "weights.a", id="nested-type"),
        pytest.param({"name": '"n"', "inner": '{"weight": 2}'}, "inner.url", id="nested-missing"),
        pytest.param({"count": "1"}, "name", id="required-missing"),
        pytest.param({"name": '"n"', "tags": "[" * 100_000}, "'tags'", id="deep-nesting"),
        pytest.param({"name": '"n"', "some-key": "3"}, "some-key", id="alias"),
    ],
)
def test_bad_values_are_databag_errors_naming_the_key(bag: dict[str, str], key: str):
    with pytest.raises(DatabagError) as info:
        Sample.load(bag)
    assert key in str(info.value)


def test_huge_value_is_rejected_by_bytes_not_characters():
    # 0.6 Mi two-byte characters: under the limit in characters, over it in bytes.
    huge = json.dumps("é" * (MAX_VALUE_BYTES * 6 // 10), ensure_ascii=False)
    assert len(huge) < MAX_VALUE_BYTES < len(huge.encode())
    with pytest.raises(DatabagError, match=r"'name' is \d+ bytes"):
        Sample.load({"name": huge})
    just_fits = json.dumps("a" * (MAX_VALUE_BYTES - 2))
    assert Sample.load({"name": just_fits}).name == "a" * (MAX_VALUE_BYTES - 2)


def test_databag_error_is_a_value_error_not_a_pydantic_one():
    with pytest.raises(ValueError) as info:
        Sample.load({})
    assert not isinstance(info.value, pydantic.ValidationError)


@given(st.dictionaries(st.sampled_from([*KNOWN_KEYS, "other"]), st.text(max_size=30)))
def test_load_never_raises_anything_but_databag_error(bag: dict[str, str]):
    try:
        Sample.load(bag)
    except DatabagError as e:
        assert str(e)


# --- writing --------------------------------------------------------------------------------


@given(
    sample=SAMPLES,
    old=st.dictionaries(
        st.sampled_from([*KNOWN_KEYS, "foreign", "x"]), st.text(max_size=10), max_size=7
    ),
    same=st.sets(st.sampled_from(KNOWN_KEYS)),
)
def test_write_touches_only_changed_keys(sample: Sample, old: dict[str, str], same: set[str]):
    wanted = sample.dump()
    for key in same & set(wanted):  # some keys already hold the wanted value
        old[key] = wanted[key]
    bag = RecordingBag(old)
    changed = sample.write(bag)
    touched = {key for _, key in bag.ops}
    differing = {k for k in KNOWN_KEYS if old.get(k) != wanted.get(k)}
    assert touched == differing
    assert len(bag.ops) == len(touched)  # each at most once
    assert changed is bool(differing)
    assert {k: v for k, v in bag.items() if k in KNOWN_KEYS} == wanted
    assert {k: v for k, v in bag.items() if k not in KNOWN_KEYS} == {
        k: v for k, v in old.items() if k not in KNOWN_KEYS
    }
    again = RecordingBag(bag)
    assert sample.write(again) is False
    assert again.ops == []


class _WriterCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.changed: list[bool] = []
        framework.observe(self.on.update_status, self._on_update_status)

    def _on_update_status(self, _event: ops.EventBase) -> None:
        relation = self.model.get_relation("peer-data")
        assert relation is not None
        bag = relation.data[self.app]
        self.changed = [Sample(name="n", tags=["a"]).write(bag) for _ in range(2)]


def test_write_into_a_juju_databag():
    relation = testing.Relation(
        "peer-data", local_app_data={"name": '"old"', "count": "7", "foreign": "kept"}
    )
    ctx = testing.Context(
        _WriterCharm, meta={"name": "w", "requires": {"peer-data": {"interface": "x"}}}
    )
    with ctx(ctx.on.update_status(), testing.State(leader=True, relations=[relation])) as mgr:
        out = mgr.run()
        assert mgr.charm.changed == [True, False]
    assert out.get_relation(relation.id).local_app_data == {
        "name": '"n"',
        "count": "0",
        "tags": '["a"]',
        "foreign": "kept",
    }
