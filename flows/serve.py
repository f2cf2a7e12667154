"""`transferflow serve`: the two deployments of `deployments/prefect.yaml`, served from one local
process (`prefect.serve`) for users without a work pool.

- `retrain-<model>`: the training flow for one config on a cron schedule, and again whenever a
  `transferflow.drift.detected` or `transferflow.labels.added` event names this model (resource
  `transferflow.model.<name>`).
- `drift-check-<model>`: the drift flow on an interval, reading the incoming batch at `--incoming`.

Schedules and triggers live on a server, so this uses the one at PREFECT_API_URL, or starts a
local `prefect server` on loopback for as long as it serves (stopped by its PID on the way out).
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.errors import TransferflowError
from tasks.labeling.events import LABELS_EVENT

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

DEFAULT_CRON = "0 3 * * 1"   # Mondays 03:00: a weekly retrain picks up the week's new labels
DEFAULT_DRIFT_EVERY = "1d"   # a daily look at the incoming batch
DRIFT_EVENT = "transferflow.drift.detected"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class ServePlan:
    config_path: Path  # absolute: the runs' parameters must not depend on the server's cwd
    incoming: Path
    model_name: str
    cron: str
    drift_every: timedelta


def parse_every(text: str) -> timedelta:
    """`90s`, `30m`, `6h`, `1d` -> a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not match or int(match[1]) == 0:
        raise TransferflowError(f"--drift-every {text!r} is not a duration. Fix: a positive number and a unit "
                                "s, m, h or d, e.g. --drift-every 6h.")
    return timedelta(seconds=int(match[1]) * UNITS[match[2]])


def check_cron(cron: str) -> str:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError as error:
        raise TransferflowError(f"--cron {cron!r} is not a cron expression ({error.__class__.__name__}). "
                                "Fix: five fields, minute hour day month weekday, e.g. --cron '0 3 * * 1'.") from None
    return cron


def plan(config: Path, incoming: Path, cron: str, drift_every: str) -> ServePlan:
    """Check every input before a server starts or a deployment is registered."""
    from tasks.config.loading import load_spec

    spec = load_spec(config, None)
    return ServePlan(config.expanduser().resolve(), incoming.expanduser().resolve(), spec.registry.model_name,
                     check_cron(cron), parse_every(drift_every))


def drift_trigger(model_name: str, config_path: str) -> DeploymentEventTrigger:
    """Start `retrain` for this model's config when a drift event names this model."""
    return _event_trigger(f"retrain {model_name} on drift", DRIFT_EVENT, model_name, config_path, "drift")


def labels_trigger(model_name: str, config_path: str) -> DeploymentEventTrigger:
    """Start `retrain` for this model's config when a labels pull changed its labels store."""
    return _event_trigger(f"retrain {model_name} on new labels", LABELS_EVENT, model_name, config_path, "labels")


def _event_trigger(name: str, event: str, model_name: str, config_path: str, trigger: str) -> DeploymentEventTrigger:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    return DeploymentEventTrigger(name=name, expect={event},
                                  match={"prefect.resource.id": f"transferflow.model.{model_name}"},
                                  parameters={"config_path": config_path, "trigger": trigger})


def build_deployments(serve_plan: ServePlan) -> list[RunnerDeployment]:
    from prefect.deployments.runner import EntrypointType, RunnerDeployment

    from flows.drift import drift_check
    from flows.transfer_learning import transfer_learning
    from tasks.steps.step import model_slug

    config, tags = str(serve_plan.config_path), [f"model:{serve_plan.model_name}"]
    # Named per model: a second `serve` of another config on the same server adds its own pair
    # instead of re-pointing this one's schedule and drift trigger.
    slug = model_slug(serve_plan.model_name)
    # Module entrypoints: the runner's child processes import the installed package, whatever the cwd.
    module = EntrypointType.MODULE_PATH
    retrain = RunnerDeployment.from_flow(  # what `flow.to_deployment` calls, typed as sync
        transfer_learning, f"retrain-{slug}", cron=serve_plan.cron,
        parameters={"config_path": config, "trigger": "schedule"},
        triggers=[drift_trigger(serve_plan.model_name, config), labels_trigger(serve_plan.model_name, config)],
        tags=tags, entrypoint_type=module,
        description=f"Retrain {serve_plan.model_name} on a schedule, on drift and on new labels: {config}")
    drift = RunnerDeployment.from_flow(
        drift_check, f"drift-check-{slug}", interval=serve_plan.drift_every, tags=tags, entrypoint_type=module,
        parameters={"config_path": config, "incoming": str(serve_plan.incoming), "trigger": "schedule"},
        description=f"Check {serve_plan.incoming} for drift against {serve_plan.model_name}'s reference")
    return [retrain, drift]


def serve_plan_deployments(serve_plan: ServePlan) -> None:
    """Serve on the configured server (checked by the caller), or on a local one started (and
    stopped) here."""
    from prefect.settings import PREFECT_API_URL

    from flows.local_server import local_prefect_server

    api_url = PREFECT_API_URL.value()
    if api_url:
        serve_on(serve_plan, api_url)
        return
    # `kill PID` while the server starts ends like Ctrl-C (then Prefect's runner handles SIGTERM itself):
    # either way the server is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    with local_prefect_server(Path(os.environ["PREFECT_HOME"])) as server:
        print(f"Started a local Prefect server (PID {server.pid}); UI at {server.ui_url}, "
              f"for other shells: export PREFECT_API_URL={server.api_url}", flush=True)
        serve_on(serve_plan, server.api_url)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_on(serve_plan: ServePlan, api_url: str) -> None:
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ["PREFECT_API_URL"] = api_url  # for the flow-run processes the runner starts
    with temporary_settings({PREFECT_API_URL: api_url}):
        serve(*build_deployments(serve_plan))
