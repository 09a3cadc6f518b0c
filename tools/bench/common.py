"""What the benchmark scripts share: repository paths, Markdown tables, the charms' relations.

Only the standard library is imported at module level; :func:`add_repo_paths` must run before the
functions that build ``ops.testing`` objects are called (they import ``ops`` when called).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ops import testing

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root directory."""

MODEL_UUID = "00000000-0000-4000-8000-0000000000b0"
"""The Juju model UUID every benchmark model uses."""
WORKER_CHARM = "mesh-worker-k8s"
"""The worker charm's name, as workers publish it in their Juju topology."""
WORKER_METRICS_PORT = 9090
MESH_TYPE = "istio"


def add_repo_paths() -> None:
    """Put ``lib``, the repository (for ``tests.support``) and ``tools`` on ``sys.path``.

    As pytest's configuration does (``pythonpath`` in ``pyproject.toml``).
    """
    for sub in ("tools", ".", "lib"):
        path = str((ROOT / sub).resolve())
        if path not in sys.path:
            sys.path.insert(0, path)


# --- figures and tables --------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    """The median of ``values`` (at least one)."""
    return statistics.median(list(values))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table, columns padded to their widest cell (numbers right-aligned)."""
    body = [[str(cell) for cell in row] for row in rows]
    for row in body:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} columns")
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    numeric = [bool(body) and all(_is_number(row[i]) for row in body) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if right else "-" * (w + 2)
        for w, right in zip(widths, numeric, strict=True)
    )
    return "\n".join([line(headers), rule + "|", *(line(row) for row in body)])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def section(title: str, table: str, notes: Sequence[str] = ()) -> str:
    """A titled section (``## title``), its table and notes, as the scripts print them."""
    parts = [f"## {title}", "", table]
    if notes:
        parts += ["", *notes]
    return "\n".join(parts) + "\n"


def parse_sections(text: str) -> dict[str, list[dict[str, str]]]:
    """The Markdown tables in ``text``, by the title of the ``## `` section holding them.

    Each row is a mapping from column header to (stripped) cell text. A section without a table
    maps to ``[]``. Raises ``ValueError`` on a malformed table (a row with the wrong number of
    cells, or a missing rule line under the headers).
    """
    tables: dict[str, list[dict[str, str]]] = {}
    title: str | None = None
    headers: list[str] | None = None
    expect_rule = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("## "):
            title, headers, expect_rule = line[3:].strip(), None, False
            tables[title] = []
            continue
        if title is None or not line.startswith("|"):
            headers = None if not line.startswith("|") else headers
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if headers is None:
            headers, expect_rule = cells, True
        elif expect_rule:
            if not all(cell and set(cell) <= set("-:") for cell in cells):
                raise ValueError(f"no rule line under the headers of {title!r}: {line!r}")
            if len(cells) != len(headers):
                raise ValueError(f"rule of {title!r} has {len(cells)} cells: {line!r}")
            expect_rule = False
        else:
            if len(cells) != len(headers):
                raise ValueError(f"row of {title!r} has {len(cells)} cells: {line!r}")
            tables[title].append(dict(zip(headers, cells, strict=True)))
    return tables


# --- the charms' relations (ops.testing) ---------------------------------------------------------


def worker_fqdn(app: str, unit: int, model: str) -> str:
    """A worker unit's address, as it publishes it (its pod's DNS name)."""
    return f"{app}-{unit}.{app}-endpoints.{model}.svc.cluster.local"


def worker_app_databag() -> dict[str, str]:
    """What a worker's leader publishes in the ``cluster`` relation (its application databag)."""
    return {
        "role": json.dumps("all"),
        "charm_name": json.dumps(WORKER_CHARM),
        "metrics_endpoint": json.dumps({"path": "/metrics", "port": WORKER_METRICS_PORT}),
    }


def worker_unit_databag(app: str, unit: int, model: str) -> dict[str, str]:
    """What a worker unit publishes in the ``cluster`` relation (its unit databag)."""
    return {
        "juju_topology": json.dumps(
            {"application": app, "unit": f"{app}/{unit}", "charm_name": WORKER_CHARM}
        ),
        "address": json.dumps(worker_fqdn(app, unit, model)),
        "metrics_endpoint": json.dumps({"port": WORKER_METRICS_PORT, "path": "/metrics"}),
    }


def mesh_labels(model: str) -> dict[str, str]:
    """The labels Istio's beacon hands out in ``model`` (ambient mode with a waypoint)."""
    return {
        "istio.io/dataplane-mode": "ambient",
        "istio.io/use-waypoint": f"{model}-istio-beacon-k8s-waypoint",
        "istio.io/use-waypoint-namespace": model,
    }


def coordinator_cluster_relation(app: str, units: int, model: str) -> testing.Relation:
    """The coordinator's side of its ``cluster`` relation with worker application ``app``."""
    from ops import testing

    return testing.Relation(
        "cluster",
        remote_app_name=app,
        remote_app_data=worker_app_databag(),
        remote_units_data={i: worker_unit_databag(app, i, model) for i in range(units)},
    )


def mesh_relation(model: str) -> testing.Relation:
    """The coordinator's ``service-mesh`` relation with a ready Istio beacon."""
    from ops import testing

    return testing.Relation(
        "service-mesh",
        remote_app_name="istio-beacon",
        remote_app_data={
            "labels": json.dumps(mesh_labels(model)),
            "mesh_type": json.dumps(MESH_TYPE),
        },
    )


def telemetry_relations(*, loki_units: int = 2) -> list[testing.Relation]:
    """Loki (``loki_units`` units), a remote-write receiver and Tempo for both tracing kinds."""
    from ops import testing

    loki = testing.Relation(
        "logging",
        remote_app_name="loki",
        remote_units_data={
            i: {
                "endpoint": json.dumps(
                    {
                        "url": f"http://loki-{i}.loki-endpoints.cos.svc.cluster.local:3100"
                        "/loki/api/v1/push"
                    }
                )
            }
            for i in range(loki_units)
        },
    )
    remote_write = testing.Relation(
        "send-remote-write",
        remote_app_name="prometheus",
        remote_units_data={
            0: {
                "remote_write": json.dumps(
                    {
                        "url": "http://prometheus-0.prometheus-endpoints.cos.svc.cluster.local:9090"
                        "/api/v1/write"
                    }
                )
            }
        },
    )
    receivers = json.dumps(
        [
            {
                "protocol": {"name": "otlp_http", "type": "http"},
                "url": "http://tempo.cos.svc.cluster.local:4318",
            },
            {
                "protocol": {"name": "otlp_grpc", "type": "grpc"},
                "url": "tempo.cos.svc.cluster.local:4317",
            },
        ]
    )
    tracing = [
        testing.Relation(
            endpoint, remote_app_name="tempo", remote_app_data={"receivers": receivers}
        )
        for endpoint in ("charm-tracing", "workload-tracing")
    ]
    return [loki, remote_write, *tracing]


def coordinator_containers(etc_nginx: Path) -> list[testing.Container]:
    """The coordinator's containers with nginx and its exporter running (as the unit tests use).

    ``/etc/nginx`` is mounted from ``etc_nginx`` so the configuration persists across hooks
    (as it does in a real container).
    """
    from tests.support.coordinator import running_containers

    return running_containers(etc_nginx)


def resolv_conf(directory: Path, model: str) -> Path:
    """A ``resolv.conf`` like a pod's in ``model``, written in ``directory``."""
    path = directory / "resolv.conf"
    path.write_text(f"search {model}.svc.cluster.local\nnameserver 10.152.183.10\n")
    return path


def status_text(status: object) -> str:
    """``name: message`` of an ``ops.testing`` status."""
    name = getattr(status, "name", type(status).__name__)
    message = getattr(status, "message", "")
    return f"{name}: {message}" if message else str(name)


@contextlib.contextmanager
def patched(target: object, name: str, value: object) -> Generator[None]:
    """Set ``target.name`` to ``value`` for the duration of the block."""
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)
