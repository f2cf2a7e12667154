"""Resume after a kill: the steps a resumed run takes from Prefect's cache, where their persisted
results live, and the chain of runs they belong to.

Every training run belongs to a resume chain: a fresh `transferflow run` starts one, `run --resume`
continues the last killed (or failed) run's. A chain keeps, under `<workdir>/resume/<model>/<chain>/`:
- `results/`: the persisted results of the cached steps (2b, 3b, 3c, 4, 5, each finished stage, the
  selection), as JSON (Prefect's JSON serializer; never pickles), keyed by `ResumeKey`;
- `epochs/<stage key>/`: the last finished epoch of a fine-tuning stage (`tasks.training.epoch_checkpoint`),
  in a folder named by the stage's content, not by the run.
Never cached: loading the data (its fingerprint keys everything after it), tracking, the split and
the starting point (they read shared state: the split history, the champion), and step 7.

Retention: a chain's folder is removed when one of its runs completes; a killed or failed run's
stays for `--resume`, and a chain untouched for `KEEP_DAYS` is removed by the model's next run.
Only folders holding this tool's `chain.json` are ever removed.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import Task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects

from tasks.config.spec import Spec
from tasks.core.hashing import code_version
from tasks.steps.refs import TrackingRef
from tasks.steps.step import model_slug, step

P = ParamSpec("P")
R = TypeVar("R")

NOT_KEYED = frozenset({"tracking"})  # the MLflow run differs on every resume; the work does not
KEEP_DAYS = 14
MARKER = "chain.json"


@dataclass(frozen=True)
class ResumeChain:
    chain_id: str
    folder: Path
    resumed_from: str | None = None        # the MLflow parent run this run continues
    earlier_runs: tuple[str, ...] = ()     # every earlier parent run of the chain, oldest first

    @property
    def results(self) -> Path:
        return self.folder / "results"


ACTIVE: contextvars.ContextVar[ResumeChain | None] = contextvars.ContextVar("transferflow_resume_chain",
                                                                           default=None)


def resumed_runs() -> tuple[str, ...]:
    """The MLflow parent runs the running flow continues (empty unless it was resumed)."""
    chain = ACTIVE.get()
    return chain.earlier_runs if chain else ()


def step_key(fn: Callable[..., Any], inputs: dict[str, Any]) -> str:
    """The key of one step's work: its inputs (less `tracking`), its source, and the code version.
    Raises when an input does not hash: a silently dropped input would let a resumed run reuse a
    result computed from other inputs (Prefect issue 15861: a compound policy drops a failing part)."""
    kept = {name: value for name, value in inputs.items() if name not in NOT_KEYED}
    key = hash_objects(f"{fn.__module__}.{fn.__qualname__}", inspect.getsource(fn), kept, code_version(),
                       raise_on_failure=True)
    assert key is not None  # raise_on_failure: never None
    return key


@dataclass
class ResumeKey(CachePolicy):
    """INPUTS minus `tracking` + TASK_SOURCE + the code version, as one policy (see `step_key`)."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return step_key(task_ctx.task.fn, inputs)


def cached(task: Task[P, R]) -> Task[P, R]:
    """`task` as it runs in a training flow: its result persisted (JSON) in the chain's folder and
    read back by a resumed run of the chain. Unchanged outside a chain (`validate`, direct calls)."""
    chain = ACTIVE.get()
    if chain is None:
        return task
    return task.with_options(cache_policy=ResumeKey(), persist_result=True, result_storage=chain.results,
                             result_serializer="json")


def epochs_folder(stage: str, **content: Any) -> Path | None:
    """Where a fine-tuning stage keeps its last finished epoch: named by the stage's content (its
    inputs less tracking, and the code version), so a resumed run finds it. None outside a chain."""
    chain = ACTIVE.get()
    if chain is None:
        return None
    kept = {name: value for name, value in content.items() if name not in NOT_KEYED}
    key = hash_objects(stage, kept, code_version(), raise_on_failure=True)
    return chain.folder / "epochs" / str(key)


def chains_root(spec: Spec) -> Path:
    return spec.workdir / "resume" / model_slug(spec.registry.model_name)


def new_chain(spec: Spec) -> ResumeChain:
    """A fresh run's chain; removes chains of this model untouched for KEEP_DAYS."""
    root = chains_root(spec)
    _remove_stale(root)
    chain_id = uuid.uuid4().hex
    chain = ResumeChain(chain_id, root / chain_id)
    _touch(chain)
    return chain


def kept_chains(spec: Spec) -> set[str]:
    """The ids of this model's chains whose results this workdir holds."""
    root = chains_root(spec)
    return {path.parent.name for path in root.glob(f"*/{MARKER}")} if root.is_dir() else set()


def start_chain(spec: Spec, config_path: str, resume: bool) -> ResumeChain:
    """A fresh chain, or with `resume` the last killed run's, after putting its wreckage right: the
    killed MLflow run is marked KILLED and its Prefect flow run Crashed, and any version the chain
    registered without finishing its release (a kill inside step 7) is removed, so the chain still
    ends with exactly one version."""
    from tasks.core.errors import TransferflowError
    from tasks.registry.resume_chain import (
        half_registered_versions,
        last_resumable_run,
        mark_killed,
    )
    from tasks.registry.tracking import client_for, experiment_id

    if not resume:
        return new_chain(spec)
    client = client_for(spec.workdir)
    experiment = experiment_id(client, spec.registry.model_name, spec.workdir)
    killed = last_resumable_run(client, experiment, kept_chains(spec), Path(config_path))
    half, released = half_registered_versions(client, spec.registry.model_name, spec.registry.alias,
                                              killed.earlier_runs)
    if released:
        raise TransferflowError(f"{config_path}: --resume: run {killed.run_id} had already released version "
                                f"{released} of {spec.registry.model_name} before it stopped: nothing is left to "
                                "resume. Fix: run without --resume.")
    mark_killed(client, killed, experiment)
    _mark_crashed(killed.flow_run_id, killed.run_id)
    for version in half:
        client.delete_model_version(spec.registry.model_name, version)
        print(f"Removed version {version} of {spec.registry.model_name}: the killed run registered it but never "
              "finished its release")
    chain = ResumeChain(killed.chain_id, chains_root(spec) / killed.chain_id, killed.run_id, killed.earlier_runs)
    _touch(chain)
    print(f"Resuming run {killed.run_id} ({killed.status.lower()}): finished steps come from {chain.results}")
    return chain


def _mark_crashed(flow_run_id: str, run_id: str) -> None:
    """The killed run's Prefect flow run, left Running by the kill, becomes Crashed."""
    if not flow_run_id:
        return
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(uuid.UUID(flow_run_id)).state
        except ObjectNotFound:  # it ran against another Prefect server, or was deleted: nothing to mark
            print(f"The killed flow run {flow_run_id} is not on this Prefect server: left as it is")
            return
        if state is not None and not state.is_final():
            client.set_flow_run_state(uuid.UUID(flow_run_id), Crashed(
                message=f"killed; resumed by a new flow run (MLflow run {run_id} marked KILLED)"), force=True)


@contextmanager
def resuming(chain: ResumeChain) -> Iterator[ResumeChain]:
    """Cache the steps inside the block in `chain`; when the block completes, the chain's work is
    done and its folder is removed. A block stopped by an error keeps it, for `--resume`."""
    token = ACTIVE.set(chain)
    try:
        yield chain
    finally:
        ACTIVE.reset(token)
    remove_chain(chain.folder)


def remove_chain(folder: Path) -> None:
    if (folder / MARKER).is_file():
        shutil.rmtree(folder, ignore_errors=True)


def _touch(chain: ResumeChain) -> None:
    from tasks.core.atomic import write_text_atomic

    write_text_atomic(chain.folder / MARKER, json.dumps({"chain": chain.chain_id, "resumed_from": chain.resumed_from,
                                                         "touched": time.time()}))


def _remove_stale(root: Path) -> None:
    if not root.is_dir():
        return
    cutoff = time.time() - KEEP_DAYS * 86400
    for marker in root.glob(f"*/{MARKER}"):
        if marker.stat().st_mtime < cutoff:
            remove_chain(marker.parent)


@step("fill the resumed run from the killed one")
def fill_resumed_run(chain: ResumeChain, tracking: TrackingRef) -> dict[str, int]:
    """The steps a resumed run took from the cache logged nothing in its MLflow run: copy what the
    chain's earlier runs logged (params, metrics, tags, artifacts) and this run lacks, so the run
    that registers the version holds its whole story. Never overwrites what this run logged."""
    from tasks.registry.resume_chain import fill_from_earlier_runs

    copied = fill_from_earlier_runs(tracking.client, tracking.run_id, chain.earlier_runs)
    print("Filled from the killed run(s) " + ", ".join(chain.earlier_runs) + ": "
          + ", ".join(f"{count} {what}" for what, count in copied.items()))
    return copied
