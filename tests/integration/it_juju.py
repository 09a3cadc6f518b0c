"""What the integration tests ask Juju: waits, relation data, and requests made from inside pods.

Requests are made by running a short Python program with ``juju exec`` in a unit's *charm*
container. That container shares the pod's network namespace and service account with the
workload, so for Istio the request comes from the application itself
(``cluster.local/ns/<model>/sa/<app>``). Every charm container has ``python3`` (the charm runs on
it), unlike the workload images (the Prometheus rock has no curl, for example).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import jubilant
import yaml
from coordinated_mesh.mesh.policies import MeshPolicy
from coordinated_mesh.relations.cluster import WorkerUnitData
from coordinated_mesh.relations.databag import DatabagError
from juju_models import KUBERNETES, ModelList

logger = logging.getLogger(__name__)

_CONTROLLER_TIMEOUT = 90.0

# Runs in the unit's charm container; Python 3.8 compatible (20.04-based charms). It never fails:
# it prints one JSON line saying what happened, and the caller classifies it. Proxies are disabled
# so a model-level http-proxy cannot turn cluster-internal requests into proxy requests.
_PROBE = r"""
import http.client, json, socket, sys, urllib.error, urllib.request
url, timeout, limit, method = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def emit(**fields):
    print(json.dumps(fields))
try:
    request = urllib.request.Request(url, method=method)
    with opener.open(request, timeout=timeout) as response:
        emit(status=response.status, body=response.read(limit).decode("utf-8", "replace"))
except urllib.error.HTTPError as e:
    try:
        body = e.read(limit).decode("utf-8", "replace")
    except Exception:
        body = ""
    emit(status=e.code, body=body)
except urllib.error.URLError as e:
    reason = e.reason
    if isinstance(reason, socket.gaierror):
        emit(error="dns", detail=repr(reason))
    elif isinstance(reason, (socket.timeout, TimeoutError)):
        emit(error="timeout", detail=repr(reason))
    else:
        emit(error="connection", detail=repr(reason))
except (socket.timeout, TimeoutError) as e:
    emit(error="timeout", detail=repr(e))
except (http.client.InvalidURL, ValueError) as e:
    emit(error="invalid", detail=repr(e))
except (OSError, http.client.HTTPException) as e:
    emit(error="connection", detail=repr(e))
except Exception as e:
    emit(error="unexpected", detail=repr(e))
"""

RBAC_DENIED = "RBAC: access denied"
"""The body of the 403 an Istio waypoint (Envoy) answers when an AuthorizationPolicy denies."""


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What happened when ``source`` sent ``method`` to ``url``.

    Exactly one of ``status`` and ``error`` is set. ``error`` is ``connection`` (refused, reset,
    closed: what ztunnel does to denied L4 traffic) or ``timeout``, which count as denials; or
    ``dns`` (the name does not resolve), ``invalid`` (a malformed URL) or ``unexpected``, which
    mean the test itself is broken (:attr:`broken`).
    """

    source: str
    url: str
    method: str = "GET"
    status: int | None = None
    body: str = ""
    error: str | None = None
    detail: str = ""

    @property
    def broken(self) -> bool:
        """The request could not even be attempted properly: a bug in the test, not an answer."""
        return self.error in ("dns", "invalid", "unexpected")

    @property
    def rbac_denied(self) -> bool:
        """An Istio waypoint answered 403 because of authorization policies."""
        return self.status == 403 and RBAC_DENIED in self.body

    @property
    def denied(self) -> bool:
        """The mesh stopped the request (L7 RBAC 403, or the connection was cut or never made)."""
        return self.rbac_denied or self.error in ("connection", "timeout")

    @property
    def reached(self) -> bool:
        """The request reached an application server, which answered (any status but RBAC 403)."""
        return self.status is not None and not self.rbac_denied

    def __str__(self) -> str:
        if self.error:
            outcome = f"{self.error} error ({self.detail})"
        else:
            outcome = f"HTTP {self.status} {self.body[:200]!r}"
        return f"{self.source} -> {self.method} {self.url}: {outcome}"


def probe(
    juju: jubilant.Juju,
    source: str,
    url: str,
    *,
    method: str = "GET",
    timeout: float = 10,
    limit: int = 4096,
) -> ProbeResult:
    """Send ``method`` (no body) to ``url`` from unit ``source``'s charm container.

    ``limit`` bytes of the body are kept.

    Raises:
        AssertionError: the program could not run or printed nothing usable.
    """
    command = " ".join(
        [
            "python3",
            "-c",
            shlex.quote(_PROBE),
            shlex.quote(url),
            str(timeout),
            str(limit),
            shlex.quote(method),
        ]
    )
    task = juju.exec(command, unit=source, wait=timeout + 120)
    lines = [line for line in task.stdout.splitlines() if line.strip()]
    if not lines:
        raise AssertionError(f"probe from {source} to {url} printed nothing: {task}")
    fields: dict[str, Any] = json.loads(lines[-1])
    return ProbeResult(
        source=source,
        url=url,
        method=method,
        status=fields.get("status"),
        body=fields.get("body", ""),
        error=fields.get("error"),
        detail=fields.get("detail", ""),
    )


class NotReadyError(Exception):
    """Something is not ready yet (a backend restarting, a unit not answering): try again."""


RETRIED = (NotReadyError, jubilant.CLIError, jubilant.TaskError, TimeoutError)
"""Exceptions :func:`eventually` counts as "not yet" rather than as a failure."""


def eventually(
    attempt: Callable[[], tuple[bool, str]],
    *,
    what: str,
    timeout: float,
    interval: float = 5.0,
    consecutive: int = 1,
) -> str:
    """Call ``attempt`` until it returns ``(True, note)`` ``consecutive`` times in a row.

    ``attempt`` returns whether the condition holds and a note describing what it saw; raising
    one of :data:`RETRIED` counts as not holding. Returns the last note.

    Raises:
        AssertionError: the condition did not hold in ``timeout`` seconds; the message says
            ``what`` was expected and the last observation.
    """
    deadline = time.monotonic() + timeout
    streak = 0
    while True:
        try:
            ok, note = attempt()
        except RETRIED as e:
            ok, note = False, f"{type(e).__name__}: {e}"
        streak = streak + 1 if ok else 0
        if streak >= consecutive:
            return note
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not true after {timeout:.0f}s.\nLast seen: {note}")
        logger.info("waiting for %s: %s", what, note.splitlines()[0] if note else "")
        time.sleep(interval)


def _expect(
    juju: jubilant.Juju,
    source: str,
    url: str,
    method: str,
    holds: Callable[[ProbeResult], bool],
    *,
    what: str,
    timeout: float,
    consecutive: int = 1,
    interval: float = 5.0,
) -> ProbeResult:
    """Probe until ``holds(result)``; a broken request fails at once (the test is wrong)."""
    result: list[ProbeResult] = []

    def attempt() -> tuple[bool, str]:
        got = probe(juju, source, url, method=method)
        if got.broken:
            raise AssertionError(f"{got}: the request itself is broken, the test is wrong")
        result[:] = [got]
        return holds(got), str(got)

    eventually(attempt, what=what, timeout=timeout, consecutive=consecutive, interval=interval)
    return result[0]


def expect_reached(
    juju: jubilant.Juju,
    source: str,
    url: str,
    *,
    timeout: float,
    status: int = 200,
    method: str = "GET",
) -> ProbeResult:
    """Wait until ``source`` gets HTTP ``status`` for ``method url``; fail with the last result."""
    return _expect(
        juju,
        source,
        url,
        method,
        lambda got: got.status == status,
        what=f"{source} allowed to {method} {url} (HTTP {status})",
        timeout=timeout,
    )


def expect_answered(
    juju: jubilant.Juju, source: str, url: str, *, timeout: float, method: str = "GET"
) -> ProbeResult:
    """Wait until the application behind ``url`` answers ``source`` (the mesh lets it through).

    Any status but the waypoint's RBAC 403 counts: the positive control of
    :func:`expect_rbac_denied`, the same request from an allowed source.
    """
    return _expect(
        juju,
        source,
        url,
        method,
        lambda got: got.reached,
        what=f"{source} let through for {method} {url}",
        timeout=timeout,
    )


def expect_denied(
    juju: jubilant.Juju,
    source: str,
    url: str,
    *,
    timeout: float,
    method: str = "GET",
    interval: float = 5.0,
) -> ProbeResult:
    """Wait until the mesh denies ``source`` access to ``url`` twice in a row (L4 or L7)."""
    return _expect(
        juju,
        source,
        url,
        method,
        lambda got: got.denied,
        what=f"{source} denied {method} {url}",
        timeout=timeout,
        consecutive=2,
        interval=interval,
    )


def expect_rbac_denied(
    juju: jubilant.Juju,
    source: str,
    url: str,
    *,
    timeout: float,
    method: str = "GET",
    interval: float = 5.0,
) -> ProbeResult:
    """Wait until a waypoint answers ``source``'s request with an RBAC 403, twice in a row.

    Only an L7 decision counts: a cut connection (ztunnel, L4) does not, since it would mean the
    request never reached the waypoint whose policies are under test.
    """
    return _expect(
        juju,
        source,
        url,
        method,
        lambda got: got.rbac_denied,
        what=f"the waypoint answering {source}'s {method} {url} with 403 {RBAC_DENIED!r}",
        timeout=timeout,
        consecutive=2,
        interval=interval,
    )


# --- the controller ----


def controller_problem(controller: str | None, cloud: str | None) -> str | None:
    """Why no usable Juju controller is reachable, or None when one is.

    Runs ``juju models`` (on ``controller``, else the current one). Without ``cloud`` (pytest's
    ``--juju-cloud``), a controller whose own model's ``model-type`` is not ``caas`` is unusable:
    new models would land on its machine cloud. (``type`` is the provider type, ``kubernetes`` on
    microk8s: not what decides.) A missing ``model-type`` lets the run go on.
    """
    juju_bin = shutil.which("juju")
    if juju_bin is None:
        return "the juju CLI is not installed (see docs/integration-tests.md)"
    args = [juju_bin, "models", "--format", "json"]
    if controller:
        args += ["--controller", controller]
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, check=False, timeout=_CONTROLLER_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return f"the Juju controller did not answer `juju models` in {_CONTROLLER_TIMEOUT:.0f}s"
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        return f"no reachable Juju controller (`juju models`: {said[0] if said else 'failed'})"
    if cloud is None:
        own = ModelList.from_json(json.loads(result.stdout or "{}")).controller_model
        if own is not None and own.model_type not in ("", KUBERNETES):
            return (
                f"the Juju controller runs on a machine cloud ({own.cloud}, model-type "
                f"{own.model_type}); these tests need a Kubernetes model: pass "
                "--juju-cloud <k8s cloud> or bootstrap on microk8s"
            )
    return None


# --- waits ---------------------------------------------------------------------------------------


def wait_settled(
    juju: jubilant.Juju, apps: Iterable[str], *, timeout: float, error_apps: Iterable[str] = ()
) -> jubilant.Status:
    """Wait until every unit of ``apps`` is active and idle; fail early if ``error_apps`` error."""
    apps = tuple(apps)
    watched = tuple(error_apps)

    def ready(status: jubilant.Status) -> bool:
        return jubilant.all_active(status, *apps) and jubilant.all_agents_idle(status, *apps)

    def failed(status: jubilant.Status) -> bool:
        return bool(watched) and jubilant.any_error(status, *watched)

    return juju.wait(ready, error=failed, timeout=timeout, delay=5, successes=3)


def wait_gone(juju: jubilant.Juju, app: str, *, timeout: float) -> None:
    """Wait until application ``app`` is no longer in the model."""
    juju.wait(lambda status: app not in status.apps, timeout=timeout, delay=5)


def units_of(status: jubilant.Status, app: str) -> list[str]:
    """The unit names of ``app``, in numeric order."""
    return sorted(status.apps[app].units, key=lambda u: int(u.split("/")[1]))


# --- relation data -------------------------------------------------------------------------------


def remote_app_data(
    juju: jubilant.Juju, unit: str, endpoint: str, remote_app: str
) -> dict[str, str]:
    """The application databag ``remote_app`` shows ``unit`` over ``unit``'s ``endpoint``.

    Raises:
        AssertionError: there is no such relation (with a unit of ``remote_app`` in scope).
    """
    for relation in juju.show_unit(unit).relation_info:
        if relation.endpoint != endpoint:
            continue
        if any(u.split("/")[0] == remote_app for u in relation.related_units):
            return {str(k): str(v) for k, v in relation.app_data.items()}
    raise AssertionError(f"{unit} has no {endpoint!r} relation with {remote_app}")


def worker_units_data(juju: jubilant.Juju, coordinator_unit: str) -> dict[str, WorkerUnitData]:
    """What every worker unit published on the cluster relation, as the coordinator sees it.

    Units whose data is not (yet) complete are left out.
    """
    found: dict[str, WorkerUnitData] = {}
    for relation in juju.show_unit(coordinator_unit).relation_info:
        if relation.endpoint != "cluster":
            continue
        for unit, unit_data in relation.related_units.items():
            try:
                found[unit] = WorkerUnitData.load({k: str(v) for k, v in unit_data.data.items()})
            except DatabagError as e:
                logger.info("cluster data of %s not complete yet: %s", unit, e)
    return dict(sorted(found.items()))


def direct_metrics_url(data: WorkerUnitData) -> str:
    """The URL of a worker unit's own metrics endpoint (its pod, not the proxy).

    Raises:
        AssertionError: the worker did not publish its metrics endpoint.
    """
    if data.metrics_endpoint is None:
        raise AssertionError(f"{data.juju_topology.unit} published no metrics_endpoint")
    endpoint = data.metrics_endpoint
    return f"http://{data.address}:{endpoint.port}{endpoint.path}"


def relabelled_targets(job: dict[str, Any]) -> list[dict[str, str]]:
    """The labels of each target of ``job`` after its ``relabel_configs`` (``replace`` only).

    Prometheus' semantics for the action ``replace`` (the default): ``source_labels`` joined by
    ``;``, matched against the fully anchored ``regex`` (default ``(.*)``); on a match,
    ``target_label`` is set to ``replacement`` (default ``$1``) with ``$n``/``${n}`` expanded.
    Source: the Prometheus configuration reference, ``<relabel_config>``.
    """
    labels_list: list[dict[str, str]] = []
    for static_config in job.get("static_configs") or []:
        for target in static_config.get("targets") or []:
            labels = {
                "__address__": str(target),
                "__metrics_path__": str(job.get("metrics_path") or "/metrics"),
                **{str(k): str(v) for k, v in (static_config.get("labels") or {}).items()},
            }
            for rc in job.get("relabel_configs") or []:
                if rc.get("action", "replace") != "replace":
                    raise AssertionError(f"unsupported relabel action in {rc}")
                value = ";".join(labels.get(name, "") for name in rc.get("source_labels") or [])
                match = re.fullmatch(str(rc.get("regex", "(.*)")), value)
                if match is None:
                    continue
                replacement = str(rc.get("replacement", "$1"))
                groups = (match.group(0), *match.groups())
                expanded = re.sub(
                    r"\$\{?([0-9]+)\}?",
                    lambda m, groups=groups: groups[int(m.group(1))] or "",
                    replacement,
                )
                labels[str(rc["target_label"])] = expanded
            labels_list.append(labels)
    return labels_list


def proxied_metrics_urls(
    juju: jubilant.Juju, prometheus_unit: str, coordinator: str
) -> dict[str, str]:
    """Worker unit -> the URL Prometheus scrapes it at (through the coordinator's proxy).

    Read from the scrape jobs the coordinator publishes on ``metrics-endpoint``: the targets
    whose metrics path (after relabelling) is ``/proxy/worker/...``, keyed by their ``juju_unit``.
    """
    data = remote_app_data(juju, prometheus_unit, "metrics-endpoint", coordinator)
    jobs: list[dict[str, Any]] = json.loads(data.get("scrape_jobs") or "[]")
    urls: dict[str, str] = {}
    for job in jobs:
        for labels in relabelled_targets(job):
            path = labels["__metrics_path__"]
            unit = labels.get("juju_unit")
            if path.startswith("/proxy/worker/") and unit:
                urls[unit] = f"{job.get('scheme') or 'http'}://{labels['__address__']}{path}"
    return dict(sorted(urls.items()))


def published_mesh_policies(
    juju: jubilant.Juju, beacon_unit: str, coordinator: str
) -> list[MeshPolicy]:
    """The policies the coordinator publishes to the beacon (``policies`` on ``service-mesh``)."""
    data = remote_app_data(juju, beacon_unit, "service-mesh", coordinator)
    raw: list[dict[str, Any]] = json.loads(data.get("policies") or "[]")
    return [MeshPolicy.model_validate(item) for item in raw]


def beacon_labels(juju: jubilant.Juju, coordinator_unit: str, beacon: str) -> dict[str, str]:
    """The mesh labels the beacon publishes (``labels`` on ``service-mesh``), as read by us."""
    data = remote_app_data(juju, coordinator_unit, "service-mesh", beacon)
    labels: dict[str, str] = json.loads(data.get("labels") or "{}")
    return dict(sorted(labels.items()))


# --- telemetry backends --------------------------------------------------------------------------


def prometheus_query(juju: jubilant.Juju, unit: str, promql: str) -> list[dict[str, Any]]:
    """Run an instant PromQL query on the Prometheus of ``unit`` (over localhost, in its pod).

    Raises:
        NotReadyError: Prometheus did not answer 200.
    """
    url = "http://localhost:9090/api/v1/query?" + urlencode({"query": promql})
    got = probe(juju, unit, url, limit=1 << 20)
    if got.status != 200:
        raise NotReadyError(f"Prometheus query {promql!r} failed: {got}")
    return json.loads(got.body)["data"]["result"]


@dataclasses.dataclass(frozen=True)
class ScrapeSample:
    """The latest ``up`` sample of one scrape target of an application."""

    unit: str
    up: str
    timestamp: float
    """When the sample was scraped (epoch seconds), not when it was queried."""


def scrape_samples(juju: jubilant.Juju, unit: str, app: str) -> list[ScrapeSample]:
    """The latest ``up`` sample of every target of ``app`` in the Prometheus of ``unit``.

    An instant query's own timestamp is the evaluation time, so the scrape time comes from
    ``timestamp(up{...})``, matched to the ``up`` series by their labels.

    Raises:
        NotReadyError: Prometheus did not answer 200.
    """
    selector = f'up{{juju_application="{app}"}}'

    def labels(series: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
        metric: Mapping[str, str] = series.get("metric") or {}
        return frozenset((k, v) for k, v in metric.items() if k != "__name__")

    stamps = {
        labels(s): float(s["value"][1])
        for s in prometheus_query(juju, unit, f"timestamp({selector})")
    }
    samples = [
        ScrapeSample(
            unit=str((s.get("metric") or {}).get("juju_unit", "?")),
            up=str(s["value"][1]),
            timestamp=stamps.get(labels(s), 0.0),
        )
        for s in prometheus_query(juju, unit, selector)
    ]
    return sorted(samples, key=lambda sample: sample.unit)


def loki_streams(
    juju: jubilant.Juju, unit: str, logql: str, *, since: float
) -> list[dict[str, Any]]:
    """Log streams matching ``logql`` since ``since`` (epoch seconds) in the Loki of ``unit``.

    Raises:
        NotReadyError: Loki did not answer 200.
    """
    params = {
        "query": logql,
        "start": str(int(since * 1e9)),
        "limit": "100",
        "direction": "backward",
    }
    url = "http://localhost:3100/loki/api/v1/query_range?" + urlencode(params)
    got = probe(juju, unit, url, limit=1 << 20)
    if got.status != 200:
        raise NotReadyError(f"Loki query {logql!r} failed: {got}")
    return json.loads(got.body)["data"]["result"]


def make_workload_log(juju: jubilant.Juju, unit: str, container: str, binary: str) -> list[str]:
    """Make the workload of ``unit`` write log lines now: SIGHUP to its ``binary`` services.

    Prometheus logs "Loading configuration file" on SIGHUP. Goes through the workload's Pebble
    from the charm container. Returns the services signalled (none if the plan has no match).
    """
    pebble = f"PEBBLE_SOCKET=/charm/containers/{container}/pebble.socket /charm/bin/pebble"
    plan: dict[str, Any] = yaml.safe_load(juju.exec(f"{pebble} plan", unit=unit).stdout) or {}
    services: Mapping[str, Mapping[str, Any]] = plan.get("services") or {}
    names = sorted(n for n, s in services.items() if binary in str(s.get("command", "")))
    for name in names:
        juju.exec(f"{pebble} signal HUP {shlex.quote(name)}", unit=unit)
    return names
