#!/usr/bin/env python3
"""From a bootstrapped Juju controller on Kubernetes to the pair on the Istio mesh.

Precondition: a Juju 3.6 controller on Kubernetes (``concierge prepare -p microk8s`` makes one);
packing also needs Charmcraft and LXD, unless ``COORDINATOR_CHARM`` and ``WORKER_CHARM`` name
``.charm`` files. Each step below is taken only when what it makes is missing, so a second run
changes nothing:

1. the model ``--model`` (``mesh``) is created if missing (never the ``controller`` model);
2. if no model runs ``istio-k8s``, it is deployed (trusted) into ``--istio-model``
   (``istio-system``), created if missing;
3. the coordinator and worker are packed (``tools/pack.py``: the charmcraft snap when present),
   except those named by ``COORDINATOR_CHARM`` / ``WORKER_CHARM``;
4. they and ``istio-beacon-k8s`` are deployed with ``--trust`` (channels: tools/charm_sources.py);
5. ``worker:cluster`` is integrated with ``coordinator:cluster`` and ``coordinator:service-mesh``
   with the beacon;
6. it waits (``--timeout``) until every unit is active and idle. An error of our charms fails at
   once; errors of the others (the beacon while its waypoint or the Gateway API CRDs are not
   ready, Istio while installing) are retried by Juju, so they are reported and waited out.

It observes (``juju models``, ``juju status`` of each model), plans the steps (:func:`plan`, pure),
prints them, then applies them. ``--dry-run`` stops after printing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import jubilant
from jubilant.statustypes import AppStatus, UnitStatus

sys.path.insert(0, str(Path(__file__).resolve().parent))
import charm_sources
import pack
from charm_sources import COORDINATOR, WORKER, LocalCharm
from juju_models import MACHINES, ModelList

ROOT = Path(__file__).resolve().parent.parent
CONTROLLER_MODEL = "controller"


class PlanError(Exception):
    """What the user asked for cannot be done on this controller (the message says why)."""


class DeployError(Exception):
    """A step failed, or the deployment did not settle in time (the message says what)."""


def local_resources() -> dict[str, dict[str, str]]:
    """The OCI resources of our charms, by charm directory (from their charmcraft.yaml)."""
    return {charm.directory: charm.resources() for charm in (COORDINATOR, WORKER)}


@dataclasses.dataclass(frozen=True)
class Choices:
    """What the user asked for (command-line options and environment)."""

    model: str = "mesh"
    istio_model: str = "istio-system"
    cloud: str | None = None
    coordinator: str = "coordinator"
    worker: str = "worker"
    beacon: str = "istio-beacon"
    istio_app: str = "istio-k8s"
    istio_config: Mapping[str, str] = dataclasses.field(default_factory=dict[str, str])
    deploy_istio: bool = True
    refresh: bool = False
    charm_files: Mapping[str, Path] = dataclasses.field(default_factory=dict[str, Path])
    """``.charm`` files given for our charms, by charm directory (else they are packed)."""
    resources: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=local_resources)
    """The OCI resources of our charms, by charm directory."""
    channels: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(charm_sources.CHANNELS)
    )
    """Charmhub channels, by charm name (:data:`charm_sources.CHANNELS`)."""


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the controller holds: its models, and the status of each workload model."""

    models: ModelList
    statuses: Mapping[str, jubilant.Status]
    """``juju status`` of every model but the controller's, by short name."""


# --- steps ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AddModel:
    """``juju add-model``."""

    model: str
    cloud: str | None = None

    def __str__(self) -> str:
        return f"juju add-model {self.model}" + (f" {self.cloud}" if self.cloud else "")


@dataclasses.dataclass(frozen=True)
class Pack:
    """``tools/pack.py <charm>``."""

    charm: LocalCharm

    def __str__(self) -> str:
        return f"pack {self.charm.name} (tools/pack.py {self.charm.directory})"


@dataclasses.dataclass(frozen=True)
class Deploy:
    """``juju deploy``, from Charmhub (``charm`` a name) or one of ours (packed, or given)."""

    model: str
    app: str
    charm: str | LocalCharm
    channel: str | None = None
    trust: bool = True
    resources: Mapping[str, str] = dataclasses.field(default_factory=dict[str, str])
    config: Mapping[str, str] = dataclasses.field(default_factory=dict[str, str])
    path: Path | None = None
    """For our charms: the given ``.charm``; None means the one the :class:`Pack` step builds."""

    def __str__(self) -> str:
        if isinstance(self.charm, LocalCharm):
            source = str(self.path or f"<packed {self.charm.name}>")
        else:
            source = self.charm
        words = ["juju deploy", "-m", self.model, source, self.app]
        words += ["--channel", self.channel] if self.channel else []
        words += ["--trust"] if self.trust else []
        words += [f"--config {k}={v}" for k, v in sorted(self.config.items())]
        words += [f"--resource {k}={v}" for k, v in sorted(self.resources.items())]
        return " ".join(words)


@dataclasses.dataclass(frozen=True)
class Refresh:
    """``juju refresh --path`` of one of our charms (only with ``--refresh``)."""

    model: str
    app: str
    charm: LocalCharm
    resources: Mapping[str, str] = dataclasses.field(default_factory=dict[str, str])
    path: Path | None = None

    def __str__(self) -> str:
        source = self.path or f"<packed {self.charm.name}>"
        return f"juju refresh -m {self.model} {self.app} --path {source}"


@dataclasses.dataclass(frozen=True)
class Integrate:
    """``juju integrate``."""

    model: str
    left: str
    right: str

    def __str__(self) -> str:
        return f"juju integrate -m {self.model} {self.left} {self.right}"


Step = AddModel | Pack | Deploy | Refresh | Integrate


@dataclasses.dataclass(frozen=True)
class WaitTarget:
    """The applications of one model to wait for: ours fail the wait when in error."""

    model: str
    ours: tuple[str, ...]
    others: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    """The steps to take, in order, and what to wait for afterwards."""

    steps: tuple[Step, ...]
    wait: tuple[WaitTarget, ...]
    istio: str
    """Where Istio comes from, in words."""


# --- the planner (pure) --------------------------------------------------------------------------


def find_istio(observed: Observed) -> tuple[str, str] | None:
    """The (model, application) of a deployed ``istio-k8s``, if any model has one."""
    for model, status in sorted(observed.statuses.items()):
        for app, app_status in sorted(status.apps.items()):
            if app_status.charm_name == charm_sources.ISTIO:
                return model, app
    return None


def _check_names(observed: Observed, choices: Choices) -> None:
    if CONTROLLER_MODEL in (choices.model, choices.istio_model):
        raise PlanError("nothing goes in the controller model: choose --model / --istio-model")
    if choices.model == choices.istio_model:
        raise PlanError(f"--istio-model must differ from --model ({choices.model})")
    own = observed.models.controller_model
    if own is not None and own.model_type == MACHINES and choices.cloud is None:
        raise PlanError(
            f"the controller runs on a machine cloud ({own.cloud}); pass --cloud <k8s cloud> or "
            "bootstrap a controller on Kubernetes (concierge prepare -p microk8s)"
        )
    existing = observed.models.find(choices.model)
    if existing is not None and existing.is_controller:
        raise PlanError(f"{choices.model} is the controller's model: choose another --model")
    if existing is not None and existing.model_type == MACHINES:
        raise PlanError(f"model {choices.model} is a machine (iaas) model, not Kubernetes")


def _our_app_steps(
    choices: Choices, apps: Mapping[str, AppStatus]
) -> tuple[list[Step], list[Step]]:
    """The pack steps and the deploy/refresh steps for our two charms."""
    packs: list[Step] = []
    changes: list[Step] = []
    for app, charm in ((choices.coordinator, COORDINATOR), (choices.worker, WORKER)):
        present = apps.get(app)
        if present is not None and present.charm_name != charm.name:
            raise PlanError(
                f"application {app} in model {choices.model} runs {present.charm_name}, "
                f"not {charm.name}: choose another name"
            )
        if present is not None and not choices.refresh:
            continue
        given = choices.charm_files.get(charm.directory)
        if given is None:
            packs.append(Pack(charm))
        resources = dict(choices.resources.get(charm.directory, {}))
        if present is None:
            changes.append(Deploy(choices.model, app, charm, resources=resources, path=given))
        else:
            changes.append(Refresh(choices.model, app, charm, resources=resources, path=given))
    return packs, changes


def _related(apps: Mapping[str, AppStatus], left: str, right: str) -> bool:
    """Whether ``left`` (``app:endpoint``) is related to the application of ``right``."""
    app, endpoint = left.split(":")
    other = right.split(":", maxsplit=1)[0]
    relations = apps[app].relations.get(endpoint, []) if app in apps else []
    return any(r.related_app == other for r in relations)


def plan(observed: Observed, choices: Choices) -> Plan:
    """The steps that take the controller from ``observed`` to what ``choices`` asks for.

    Raises:
        PlanError: the request cannot be met on this controller (the controller's model, a
            machine model, a name taken by another charm).
    """
    _check_names(observed, choices)
    steps: list[Step] = []
    wait: list[WaitTarget] = []

    istio = find_istio(observed)
    if istio is not None:
        where = f"istio-k8s application {istio[1]} in model {istio[0]} (already deployed)"
        wait.append(WaitTarget(istio[0], (), (istio[1],)))
    elif not choices.deploy_istio:
        where = "installed outside Juju (--no-istio)"
    else:
        where = f"istio-k8s application {choices.istio_app} in model {choices.istio_model} (new)"
        if observed.models.find(choices.istio_model) is None:
            steps.append(AddModel(choices.istio_model, choices.cloud))
        existing = observed.statuses.get(choices.istio_model)
        if existing is not None and choices.istio_app in existing.apps:
            raise PlanError(
                f"application {choices.istio_app} in model {choices.istio_model} is not "
                "istio-k8s: choose --istio-model or --istio-app"
            )
        steps.append(
            Deploy(
                choices.istio_model,
                choices.istio_app,
                charm_sources.ISTIO,
                channel=choices.channels[charm_sources.ISTIO],
                config=dict(choices.istio_config),
            )
        )
        wait.append(WaitTarget(choices.istio_model, (), (choices.istio_app,)))

    if observed.models.find(choices.model) is None:
        steps.append(AddModel(choices.model, choices.cloud))
    status = observed.statuses.get(choices.model)
    apps = status.apps if status is not None else {}

    packs, changes = _our_app_steps(choices, apps)
    steps += packs + changes
    beacon = apps.get(choices.beacon)
    if beacon is None:
        steps.append(
            Deploy(
                choices.model,
                choices.beacon,
                charm_sources.BEACON,
                channel=choices.channels[charm_sources.BEACON],
            )
        )
    elif beacon.charm_name != charm_sources.BEACON:
        raise PlanError(
            f"application {choices.beacon} in model {choices.model} runs {beacon.charm_name}, "
            f"not {charm_sources.BEACON}: choose --beacon"
        )
    for left, right in (
        (f"{choices.worker}:cluster", f"{choices.coordinator}:cluster"),
        (f"{choices.coordinator}:service-mesh", f"{choices.beacon}:service-mesh"),
    ):
        if not _related(apps, left, right):
            steps.append(Integrate(choices.model, left, right))
    wait.append(WaitTarget(choices.model, (choices.coordinator, choices.worker), (choices.beacon,)))
    return Plan(steps=tuple(steps), wait=tuple(wait), istio=where)


# --- waiting (assess is pure) --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Verdict:
    """How far the applications of one model are from settled."""

    failures: tuple[str, ...]
    """Units of ours in error: the wait fails."""
    retried: tuple[str, ...]
    """Units of other charms in error: Juju retries their hooks; reported, waited out."""
    pending: tuple[str, ...]
    """Everything not yet active and idle, with its status."""

    @property
    def ready(self) -> bool:
        """Every application present, every unit active and idle."""
        return not self.pending


def _unit_line(name: str, unit: UnitStatus) -> str:
    workload, agent = unit.workload_status, unit.juju_status
    message = f": {workload.message}" if workload.message else ""
    return f"{name} {workload.current or 'unknown'}/{agent.current or 'unknown'}{message}"


def assess(status: jubilant.Status, ours: Iterable[str], others: Iterable[str]) -> Verdict:
    """Judge one model's status for the wait."""
    failures: list[str] = []
    retried: list[str] = []
    pending: list[str] = []
    mine = tuple(ours)
    for app in (*mine, *others):
        errors = failures if app in mine else retried
        app_status = status.apps.get(app)
        if app_status is None:
            pending.append(f"{app}: not in the model yet")
            continue
        if not app_status.units:
            pending.append(f"{app}: no units yet ({app_status.app_status.current or 'unknown'})")
        for name, unit in sorted(app_status.units.items()):
            if unit.is_error:
                errors.append(_unit_line(name, unit))
            if not unit.is_active or unit.juju_status.current != "idle":
                pending.append(_unit_line(name, unit))
    return Verdict(failures=tuple(failures), retried=tuple(retried), pending=tuple(pending))


def wait_settled(
    targets: Sequence[WaitTarget],
    fetch: Callable[[str], jubilant.Status],
    *,
    timeout: float,
    delay: float = 5.0,
    successes: int = 3,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = print,
) -> tuple[str, ...]:
    """Wait until every target is ready ``successes`` times in a row; return others' errors seen.

    Raises:
        DeployError: one of our units is in error, or ``timeout`` seconds passed; the message
            lists what was not ready and the other charms' errors seen meanwhile.
    """
    deadline = clock() + timeout
    streak = 0
    seen: list[str] = []
    last_pending: tuple[str, ...] = ()
    while True:
        verdicts: dict[str, Verdict] = {}
        for target in targets:
            try:
                status = fetch(target.model)
            except jubilant.CLIError as e:  # the controller busy or restarting: ask again
                problem = (e.stderr or str(e)).strip().splitlines()[-1:] or ["failed"]
                verdicts[target.model] = Verdict((), (), (f"juju status: {problem[0]}",))
                continue
            verdicts[target.model] = assess(status, target.ours, target.others)
        failures = [f"{m}: {line}" for m, v in verdicts.items() for line in v.failures]
        if failures:
            raise DeployError(
                "our charms are in error (see `juju debug-log`):\n  " + "\n  ".join(failures)
            )
        for model, verdict in verdicts.items():
            for line in verdict.retried:
                if f"{model}: {line}" not in seen:
                    seen.append(f"{model}: {line}")
                    say(f"  not ours, Juju retries it: {model}: {line}")
        pending = tuple(f"{m}: {line}" for m, v in verdicts.items() for line in v.pending)
        if pending and pending != last_pending:
            say("  waiting for: " + "; ".join(pending))
        last_pending = pending
        streak = 0 if pending else streak + 1
        if streak >= successes:
            return tuple(seen)
        if clock() >= deadline:
            retried = "\n  ".join(seen) or "(none)"
            raise DeployError(
                f"not settled after {timeout:.0f}s; still waiting for:\n  "
                + "\n  ".join(pending or ("(flapping)",))
                + f"\nerrors of other charms seen meanwhile (retried by Juju):\n  {retried}"
            )
        sleep(delay)


# --- observing and applying (the only parts that call Juju) --------------------------------------


def _ref(controller: str | None, model: str) -> str:
    return f"{controller}:{model}" if controller else model


def observe(juju_for: Callable[[str | None], jubilant.Juju], controller: str | None) -> Observed:
    """Read the controller's models and the status of each workload model.

    ``juju_for(None)`` runs commands without a model, ``juju_for(model)`` on ``model``.
    """
    args = ["models", "--format", "json"] + (["--controller", controller] if controller else [])
    models = ModelList.from_json(json.loads(juju_for(None).cli(*args, include_model=False)))
    statuses = {m.short_name: juju_for(m.name).status() for m in models.workload_models()}
    return Observed(models=models, statuses=statuses)


def apply(
    steps: Iterable[Step],
    juju_for: Callable[[str | None], jubilant.Juju],
    pack_charm: Callable[[LocalCharm], Path],
    say: Callable[[str], None] = print,
) -> None:
    """Take ``steps`` in order; ``juju_for(None)`` is the controller, else a model."""
    packed: dict[str, Path] = {}
    for step in steps:
        say(f"- {step}")
        if isinstance(step, AddModel):
            juju_for(None).add_model(step.model, step.cloud)
        elif isinstance(step, Pack):
            packed[step.charm.directory] = pack_charm(step.charm)
            say(f"  packed {packed[step.charm.directory]}")
        elif isinstance(step, Deploy):
            charm = step.charm
            if isinstance(charm, LocalCharm):
                charm = step.path or packed[charm.directory]
            juju_for(step.model).deploy(
                charm,
                step.app,
                channel=step.channel,
                config=dict(step.config) or None,
                resources=dict(step.resources) or None,
                trust=step.trust,
            )
        elif isinstance(step, Refresh):
            juju_for(step.model).refresh(
                step.app,
                path=step.path or packed[step.charm.directory],
                resources=dict(step.resources) or None,
            )
        else:
            juju_for(step.model).integrate(step.left, step.right)


def summary(
    the_plan: Plan, choices: Choices, retried: Sequence[str], controller: str | None = None
) -> str:
    """What was done, what other charms went through, and what to run next (printed at the end)."""
    model = _ref(controller, choices.model)
    lines = [f"Done: {choices.coordinator}, {choices.worker} and {choices.beacon} are active in "]
    lines[0] += f"model {model}; Istio: {the_plan.istio}."
    if the_plan.steps:
        lines.append("Did:")
        lines += [f"  {i}. {step}" for i, step in enumerate(the_plan.steps, 1)]
    else:
        lines.append("Did nothing: everything was already there.")
    if retried:
        lines.append("Errors of other charms seen while waiting (retried by Juju, now settled):")
        lines += [f"  {line}" for line in retried]
    lines += [
        "Next:",
        f"  juju status -m {model} --relations",
        f"  juju run -m {model} {choices.coordinator}/leader show-mesh",
    ]
    return "\n".join(lines)


def _charm_files(environ: Mapping[str, str]) -> dict[str, Path]:
    """The ``.charm`` files named by ``COORDINATOR_CHARM`` / ``WORKER_CHARM``.

    Raises:
        PlanError: a named file does not exist.
    """
    files: dict[str, Path] = {}
    for charm in (COORDINATOR, WORKER):
        value = environ.get(charm.env_var, "").strip()
        if value:
            path = Path(value).expanduser().resolve()
            if not path.is_file():
                raise PlanError(f"{charm.env_var}={value}: no such file")
            files[charm.directory] = path
    return files


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = Choices(resources={})
    parser.add_argument("--model", default=defaults.model, help="model for the pair and beacon")
    parser.add_argument("--istio-model", default=defaults.istio_model, help="model for istio-k8s")
    parser.add_argument("--controller", help="controller to use (default: the current one)")
    parser.add_argument("--cloud", help="Kubernetes cloud for new models (machine controllers)")
    parser.add_argument("--coordinator", default=defaults.coordinator, help="application name")
    parser.add_argument("--worker", default=defaults.worker, help="application name")
    parser.add_argument("--beacon", default=defaults.beacon, help="application name")
    parser.add_argument("--istio-app", default=defaults.istio_app, help="application name")
    parser.add_argument(
        "--istio-platform", help='istio-k8s `platform` option ("" on Canonical Kubernetes)'
    )
    parser.add_argument(
        "--no-istio", action="store_true", help="Istio is installed otherwise: never deploy it"
    )
    parser.add_argument(
        "--refresh", action="store_true", help="refresh our deployed charms with new packs"
    )
    parser.add_argument("--timeout", type=float, default=30 * 60, help="seconds to wait")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = _parser().parse_args(argv)

    def juju_for(model: str | None) -> jubilant.Juju:
        return jubilant.Juju(model=None if model is None else _ref(args.controller, model))

    if shutil.which("juju") is None:
        print("deploy: the juju CLI is not installed (sudo snap install juju)", file=sys.stderr)
        return 1
    try:
        choices = Choices(
            model=args.model,
            istio_model=args.istio_model,
            cloud=args.cloud,
            coordinator=args.coordinator,
            worker=args.worker,
            beacon=args.beacon,
            istio_app=args.istio_app,
            istio_config={} if args.istio_platform is None else {"platform": args.istio_platform},
            deploy_istio=not args.no_istio,
            refresh=args.refresh,
            charm_files=_charm_files(environ),
        )
        the_plan = plan(observe(juju_for, args.controller), choices)
    except (PlanError, jubilant.CLIError) as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 1

    print(f"Istio: {the_plan.istio}")
    if not the_plan.steps:
        print(f"Nothing to change: model {choices.model} already has everything.")
    else:
        print("Plan:\n" + "\n".join(f"  {i}. {s}" for i, s in enumerate(the_plan.steps, 1)))
    if args.dry_run:
        return 0

    charmcraft: list[pack.Charmcraft] = []

    def pack_charm(charm: LocalCharm) -> Path:
        if not charmcraft:
            charmcraft.append(pack.find_charmcraft())
            pack.announce(charmcraft[0])
        return pack.pack(charm.directory, ROOT / "build", charmcraft[0]).resolve()

    try:
        apply(the_plan.steps, juju_for, pack_charm)
        print(f"Waiting up to {args.timeout:.0f}s for every unit to be active and idle...")
        retried = wait_settled(
            the_plan.wait, lambda model: juju_for(model).status(), timeout=args.timeout
        )
    except (DeployError, pack.StagingError, jubilant.CLIError, subprocess.CalledProcessError) as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 1
    print(summary(the_plan, choices, retried, args.controller))
    return 0


if __name__ == "__main__":
    sys.exit(main())
