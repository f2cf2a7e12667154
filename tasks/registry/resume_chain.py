"""The MLflow side of resuming a killed run: which run to continue, what it left half-done in the
registry, and filling the resuming run with what the steps it took from the cache had logged.

A chain is the runs of one `transferflow run` and its `--resume`s: each parent run carries the tag
`transferflow.resume_chain` (the chain's id) and, once resumed, `resumed_from` (the run before it).
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag

from tasks.core.errors import TransferflowError

CHAIN_TAG = "transferflow.resume_chain"
RESUMED_FROM_TAG = "resumed_from"
HOST_TAG, PID_TAG = "transferflow.host", "transferflow.pid"
RESUMABLE = ("RUNNING", "FAILED")  # RUNNING: killed (nothing ended it); FAILED: stopped by an error


@dataclass(frozen=True)
class KilledRun:
    run_id: str
    chain_id: str
    earlier_runs: tuple[str, ...]   # this run and the chain's runs before it, oldest first
    status: str
    flow_run_id: str


def process_tags() -> dict[str, str]:
    """Where this run's process lives: `--resume` refuses to continue a run whose process still does."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def last_resumable_run(client: MlflowClient, experiment: str, chains: set[str], config: Path) -> KilledRun:
    """The newest parent run of a chain kept in this workdir (`chains`). It must have been killed
    or failed, and its process must be gone; anything else is a clear error naming the fix."""
    found = client.search_runs([experiment], filter_string=f"tags.`{CHAIN_TAG}` != ''",
                               order_by=["attributes.start_time DESC"], max_results=50)
    latest = next((run for run in found if run.data.tags.get(CHAIN_TAG) in chains), None)
    if latest is None:
        raise TransferflowError(f"{config}: --resume found no run to continue in this workdir (no killed or failed "
                                "run kept its results here). Fix: run without --resume.")
    tags, status = latest.data.tags, latest.info.status
    if status not in RESUMABLE:
        raise TransferflowError(f"{config}: --resume: the last run, {latest.info.run_id}, ended {status}: there is "
                                "nothing to resume. Fix: run without --resume.")
    if status == "RUNNING" and _still_alive(tags):
        raise TransferflowError(f"{config}: --resume: run {latest.info.run_id} is still running (PID {tags[PID_TAG]} "
                                "on this host). Fix: wait for it, or stop it first.")
    return KilledRun(latest.info.run_id, tags[CHAIN_TAG], (*_earlier(client, latest), latest.info.run_id), status,
                     tags.get("prefect_flow_run_id", ""))


def mark_killed(client: MlflowClient, killed: KilledRun, experiment: str) -> None:
    """A run nothing ended (its process was killed) is KILLED; one that failed stays FAILED. So is
    the stage run the kill left open (a stage run lives from its stage's start to its end)."""
    from tasks.registry.tracking import PARENT_TAG

    open_stages = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{killed.run_id}' and "
                                                                 "attributes.status = 'RUNNING'")
    for run in [*open_stages, *([client.get_run(killed.run_id)] if killed.status == "RUNNING" else [])]:
        client.set_terminated(run.info.run_id, "KILLED")


def half_registered_versions(client: MlflowClient, model_name: str, alias: str,
                             runs: tuple[str, ...]) -> tuple[list[str], str | None]:
    """(versions the chain's runs registered but never finished releasing, a version one of them did
    release). Finished: the run's `decision` tag says rejected, or promoted with the alias on it."""
    holder = _alias_holder(client, model_name, alias)
    half, released = [], None
    for run_id in runs:
        decision = client.get_run(run_id).data.tags.get("decision")
        for version in client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'"):
            done = decision == "rejected" or (decision == "promoted" and holder == str(version.version))
            if done:
                released = str(version.version)
            else:
                half.append(str(version.version))
    return half, released


def fill_from_earlier_runs(client: MlflowClient, run_id: str, earlier: tuple[str, ...]) -> dict[str, int]:
    """Copy into the resuming run what the chain's earlier runs logged and it did not log itself
    (the steps it took from the cache logged nothing this time): params, metric histories, tags and
    artifact files, newest run first. Never overwrites. Returns how many of each were copied."""
    current = client.get_run(run_id)
    params, metrics = dict(current.data.params), set(current.data.metrics)
    tags, files = dict(current.data.tags), set(_artifact_files(client, run_id))
    copied = {"params": 0, "metrics": 0, "tags": 0, "artifacts": 0}
    for source_id in reversed(earlier):
        source = client.get_run(source_id)
        new_params = [Param(k, v) for k, v in source.data.params.items() if k not in params]
        new_tags = [RunTag(k, v) for k, v in source.data.tags.items()
                    if k not in tags and not k.startswith("mlflow.") and k not in (HOST_TAG, PID_TAG)]
        new_metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in source.data.metrics
                       if key not in metrics for m in client.get_metric_history(source_id, key)]
        for start in range(0, max(len(new_metrics), 1), 1000):
            client.log_batch(run_id, metrics=new_metrics[start:start + 1000],
                             params=new_params if start == 0 else [], tags=new_tags if start == 0 else [])
        params |= {p.key: p.value for p in new_params}
        tags |= {t.key: t.value for t in new_tags}
        metrics |= {m.key for m in new_metrics}
        missing = [path for path in _artifact_files(client, source_id) if path not in files]
        with tempfile.TemporaryDirectory() as scratch:
            for path in missing:
                local = client.download_artifacts(source_id, path, scratch)
                client.log_artifact(run_id, local, str(Path(path).parent) if "/" in path else None)
        files |= set(missing)
        for key, count in (("params", len(new_params)), ("metrics", len({m.key for m in new_metrics})),
                           ("tags", len(new_tags)), ("artifacts", len(missing))):
            copied[key] += count
    return copied


def _earlier(client: MlflowClient, run: Run) -> tuple[str, ...]:
    chain: list[str] = []
    previous = run.data.tags.get(RESUMED_FROM_TAG)
    while previous and previous not in chain:
        chain.insert(0, previous)
        previous = client.get_run(previous).data.tags.get(RESUMED_FROM_TAG)
    return tuple(chain)


def _still_alive(tags: dict[str, str]) -> bool:
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    try:
        os.kill(int(tags[PID_TAG]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alias_holder(client: MlflowClient, model_name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def _artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    files: list[str] = []
    for entry in client.list_artifacts(run_id, path):
        files += _artifact_files(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return files
