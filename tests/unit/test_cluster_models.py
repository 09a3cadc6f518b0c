"""The cluster relation models: round trips, Kubernetes label validation, bad data as DatabagError."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from coordinated_mesh.parse import validate_labels
from coordinated_mesh.relations.cluster import (
    DEFAULT_ROLE,
    CoordinatorAppData,
    JujuTopology,
    MetricsEndpoint,
    RemoteWriteEndpoint,
    WorkerAppData,
    WorkerUnitData,
)
from coordinated_mesh.relations.databag import DatabagError
from hypothesis import given
from hypothesis import strategies as st

# --- an independent oracle for Kubernetes label syntax ----------------------------------------

_NAME_CHARS = set(string.ascii_letters + string.digits + "-_.")
_DNS_CHARS = set(string.ascii_lowercase + string.digits + "-")


def _is_label_name(text: str) -> bool:
    """A label name (or non-empty value): <= 63 chars of [A-Za-z0-9-_.], alphanumeric at both ends."""
    return (
        0 < len(text) <= 63
        and set(text) <= _NAME_CHARS
        and text[0].isascii()
        and text[0].isalnum()
        and text[-1].isascii()
        and text[-1].isalnum()
    )


def _is_dns_subdomain(text: str) -> bool:
    """At most 253 chars of dot-separated DNS labels ([a-z0-9-], alphanumeric at both ends)."""
    if not 0 < len(text) <= 253:
        return False
    return all(
        part and set(part) <= _DNS_CHARS and part[0] != "-" and part[-1] != "-"
        for part in text.split(".")
    )


def _is_label_key(key: str) -> bool:
    if key.count("/") > 1:
        return False
    prefix, _, name = key.rpartition("/")
    if "/" in key and not _is_dns_subdomain(prefix):
        return False
    return _is_label_name(name)


def _is_label_value(value: str) -> bool:
    return value == "" or _is_label_name(value)


def _accepted(labels: dict[str, str]) -> bool:
    try:
        assert validate_labels(labels) is labels
    except ValueError:
        return False
    return True


# --- strategies -----------------------------------------------------------------------------

LABEL_NAMES = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", fullmatch=True)
DNS_LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
PREFIXES = st.lists(DNS_LABELS, min_size=1, max_size=4).map(".".join)
LABEL_KEYS = st.one_of(LABEL_NAMES, st.tuples(PREFIXES, LABEL_NAMES).map("/".join))
LABEL_VALUES = st.just("") | LABEL_NAMES
LABELS = st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=5)
TRICKY_TEXT = st.text(alphabet="aZ09-_./é \n", max_size=70)

# Juju application and charm names (github.com/juju/names ApplicationSnippet): segments after the
# first hold a letter.
APP_NAMES = st.from_regex(
    r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{0,3}[a-z][a-z0-9]{0,3}){0,2}", fullmatch=True
)
HOSTNAMES = st.lists(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True),
    min_size=1,
    max_size=5,
).map(".".join)
URL_MAPS = st.none() | st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3)

COORDINATOR_DATA = st.builds(
    CoordinatorAppData,
    worker_labels=st.none() | LABELS,
    worker_config=st.none() | st.text(max_size=200),
    loki_endpoints=URL_MAPS,
    charm_tracing_receivers=URL_MAPS,
    workload_tracing_receivers=URL_MAPS,
    remote_write_endpoints=st.none()
    | st.lists(st.builds(RemoteWriteEndpoint, url=st.text(max_size=30)), max_size=3),
)


@st.composite
def worker_unit_data(draw: st.DrawFn) -> WorkerUnitData:
    app = draw(APP_NAMES)
    return WorkerUnitData(
        juju_topology=JujuTopology(
            application=app,
            unit=f"{app}/{draw(st.integers(0, 999))}",
            charm_name=draw(APP_NAMES),
        ),
        address=draw(HOSTNAMES),
        metrics_endpoint=draw(
            st.none()
            | st.builds(
                MetricsEndpoint,
                port=st.integers(1, 65535),
                path=st.from_regex(r"/[A-Za-z0-9._~/-]{0,30}", fullmatch=True),
            )
        ),
    )


# --- labels ---------------------------------------------------------------------------------


@given(LABELS)
def test_valid_labels_accepted(labels: dict[str, str]):
    assert _accepted(labels)


@given(key=TRICKY_TEXT, value=TRICKY_TEXT)
def test_label_syntax_matches_kubernetes_rules(key: str, value: str):
    assert _accepted({key: value}) is (_is_label_key(key) and _is_label_value(value))


@given(prefix=PREFIXES, name=LABEL_NAMES, value=LABEL_VALUES)
def test_prefixed_keys_follow_kubernetes_rules(prefix: str, name: str, value: str):
    key = f"{prefix}/{name}"
    assert _accepted({key: value}) is _is_label_key(key)


@pytest.mark.parametrize(
    "labels",
    [
        {"istio.io/dataplane-mode": "ambient"},
        {"istio.io/use-waypoint": "mymodel-istio-beacon-k8s-waypoint"},
        {"app.kubernetes.io/part-of": "coord"},
        {"a": ""},
        {"x" * 253 + "/" + "n" * 63: "v" * 63},
        {},
    ],
)
def test_label_examples_accepted(labels: dict[str, str]):
    assert _accepted(labels)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("", "v"),
        ("bad key", "v"),
        ("a/b/c", "v"),
        ("Upper.io/x", "v"),
        ("a..b/x", "v"),
        ("-a/x", "v"),
        ("x" * 254 + "/n", "v"),
        ("n" * 64, "v"),
        ("k", "v" * 64),
        ("k", "-v"),
        ("k", "v\n"),  # "$" would accept this; labels must not
        ("k\n", "v"),
        ("k", "é"),
    ],
)
def test_invalid_labels_rejected_naming_them(key: str, value: str):
    with pytest.raises(ValueError) as info:
        validate_labels({key: value})
    assert repr(key) in str(info.value) or repr(value) in str(info.value)


# --- round trips ----------------------------------------------------------------------------


@given(COORDINATOR_DATA)
def test_coordinator_app_data_round_trip(data: CoordinatorAppData):
    assert CoordinatorAppData.load(data.dump()) == data


@given(worker_unit_data())
def test_worker_unit_data_round_trip(data: WorkerUnitData):
    assert WorkerUnitData.load(data.dump()) == data


@given(st.from_regex(r"[a-z][a-z0-9-]{0,62}", fullmatch=True))
def test_worker_app_data_round_trip(role: str):
    data = WorkerAppData(role=role)
    assert WorkerAppData.load(data.dump()) == data


def test_worker_role_defaults():
    assert WorkerAppData.load({}).role == DEFAULT_ROLE


def test_absent_coordinator_keys_are_none():
    data = CoordinatorAppData.load({})
    assert data.worker_labels is None
    assert data.worker_config is None
    assert data.dump() == {}


def test_unknown_keys_ignored():
    topology = {"application": "w", "unit": "w/0", "charm_name": "c", "future": 1}
    data = WorkerUnitData.load(
        {"juju_topology": json.dumps(topology), "address": '"w-0.w-endpoints"', "new-key": "{"}
    )
    assert data.juju_topology == JujuTopology(application="w", unit="w/0", charm_name="c")
    assert (
        CoordinatorAppData.load({"ca_cert": '"..."', "worker_config": '"x"'}).worker_config == "x"
    )


def test_coordinator_data_example():
    bag = {
        "worker_labels": json.dumps({"app.kubernetes.io/part-of": "coord"}),
        "loki_endpoints": json.dumps(
            {"loki/0": "http://coord.m.svc.cluster.local:8080/proxy/loki/loki-0/push"}
        ),
        "remote_write_endpoints": json.dumps(
            [{"url": "http://coord:8080/proxy/remote-write/p/write"}]
        ),
    }
    data = CoordinatorAppData.load(bag)
    assert data.worker_labels == {"app.kubernetes.io/part-of": "coord"}
    assert data.remote_write_endpoints == [
        RemoteWriteEndpoint(url="http://coord:8080/proxy/remote-write/p/write")
    ]
    assert CoordinatorAppData.load(data.dump()) == data


# --- invalid data ---------------------------------------------------------------------------

_TOPOLOGY = json.dumps({"application": "w", "unit": "w/0", "charm_name": "c"})


@pytest.mark.parametrize(
    ("model", "bag", "key"),
    [
        (CoordinatorAppData, {"worker_labels": '{"bad key": "v"}'}, "worker_labels"),
        (CoordinatorAppData, {"worker_labels": '{"k": "v\\n"}'}, "worker_labels"),
        (CoordinatorAppData, {"worker_labels": '["a"]'}, "worker_labels"),
        (CoordinatorAppData, {"worker_config": "not json"}, "worker_config"),
        (CoordinatorAppData, {"loki_endpoints": '{"loki/0": 1}'}, "loki_endpoints"),
        (
            CoordinatorAppData,
            {"remote_write_endpoints": '[{"uri": "x"}]'},
            "remote_write_endpoints",
        ),
        (WorkerUnitData, {"address": '"a.b"'}, "juju_topology"),
        (WorkerUnitData, {"juju_topology": _TOPOLOGY}, "address"),
        (WorkerUnitData, {"juju_topology": _TOPOLOGY, "address": '"a b"'}, "address"),
        (WorkerUnitData, {"juju_topology": _TOPOLOGY, "address": '"a.b\\n"'}, "address"),
        (WorkerUnitData, {"juju_topology": _TOPOLOGY, "address": '"a;b"'}, "address"),
        (
            WorkerUnitData,
            {
                "juju_topology": '{"application": "w", "unit": "w-0", "charm_name": "c"}',
                "address": '"a"',
            },
            "juju_topology.unit",
        ),
        (
            WorkerUnitData,
            {"juju_topology": _TOPOLOGY, "address": '"a"', "metrics_endpoint": '{"port": 0}'},
            "metrics_endpoint.port",
        ),
        (
            WorkerUnitData,
            {
                "juju_topology": _TOPOLOGY,
                "address": '"a"',
                "metrics_endpoint": '{"port": 1, "path": "x; y"}',
            },
            "metrics_endpoint.path",
        ),
        (WorkerAppData, {"role": '"Bad Role"'}, "role"),
        (WorkerAppData, {"role": "3"}, "role"),
    ],
)
def test_invalid_data_is_a_databag_error_naming_the_key(model: Any, bag: dict[str, str], key: str):
    with pytest.raises(DatabagError) as info:
        model.load(bag)
    assert key in str(info.value)
