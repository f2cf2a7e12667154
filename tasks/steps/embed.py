"""3a. Embed once, before the checks: every example the label audit (3b), the leakage check (3c)
and the baseline (5) read, with the first base model, into the content-addressed cache. Those
steps then only read it.

The examples are cut into fixed shards of their sorted ids (`runtime.shard_size`), one
`embed_shard` task each, which writes its own cache shard as it finishes: a crash keeps every
finished shard, and a rerun computes only what is missing. The shards run one after another in
the flow's process, or in parallel on Dask (`runtime.task_runner`, tasks.steps.runners); on Dask
every worker process loads the backbone once, and the data must be on a path the workers can read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.config.spec import ModelSpec, RuntimeSpec, Spec
from tasks.data.split import SplitRef
from tasks.steps.refs import DatasetRef, TrackingRef
from tasks.steps.runners import task_runner
from tasks.steps.step import step

_LOADED: dict[str, Any] = {}  # backbone per model and device, once per (worker) process


@dataclass(frozen=True)
class ShardDone:
    examples: int
    computed: int      # the rest were in the cache already
    process: int       # the PID that embedded it: which worker, on Dask


@dataclass(frozen=True)
class Embedded:
    examples: int
    computed: int
    shards: int
    processes: int     # distinct processes that ran a shard


def fixed_shards(ids: list[str], shard_size: int) -> list[list[str]]:
    """The sorted distinct ids cut every `shard_size`: the same data gives the same shards."""
    ordered = sorted(set(ids))
    return [ordered[start:start + shard_size] for start in range(0, len(ordered), shard_size)]


@step("3a embed shard")
def embed_shard(model: ModelSpec, runtime: RuntimeSpec, workdir: Path, ids: list[str], inputs: list[str],
                batch_size: int) -> ShardDone:
    """Embed the shard's examples missing from the cache and write them as one cache shard."""
    from tasks.models.features import cached_embeddings, open_cache

    backbone = _backbone(model, runtime)
    _, computed = cached_embeddings(open_cache(workdir, backbone), backbone, ids, inputs, batch_size)
    return ShardDone(len(ids), computed, os.getpid())


def _backbone(model: ModelSpec, runtime: RuntimeSpec) -> Any:
    from tasks.models.backbones import load_backbone
    from tasks.models.devices import on_runtime_device

    key = f"{model.model_dump_json()}|{runtime.device}"
    if key not in _LOADED:
        backbone = load_backbone(model)
        on_runtime_device(runtime.device, backbone)
        _LOADED[key] = backbone
    return _LOADED[key]


def embed_examples(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef | None) -> Embedded:
    """Every train, validation and (for the leakage check: inputs only, the read logged) test example,
    embedded with the first base model. A flow-level step: it maps `embed_shard` over the shards."""
    from tasks.audit.leakage import MIN_TRAIN_FOR_LEAKAGE
    from tasks.data.split import quarantined_test_ids, train_val_ids
    from tasks.data.table import read_examples

    train_ids, val_ids = train_val_ids(split.manifest_path)
    test_ids = (quarantined_test_ids(split.manifest_path, reader="embed_examples: test inputs, no labels",
                                     purpose="leakage check") if len(train_ids) >= MIN_TRAIN_FOR_LEAKAGE else [])
    inputs = read_examples(dataset.table_path)["input"]
    shards = fixed_shards(train_ids + val_ids + test_ids, spec.runtime.shard_size)
    model = spec.candidates[0]
    calls = [{"model": model, "runtime": spec.runtime, "workdir": spec.workdir, "ids": shard,
              "inputs": list(inputs.loc[shard]), "batch_size": spec.train.batch_size} for shard in shards]
    with task_runner(spec.runtime) as run_all:
        done: list[ShardDone] = run_all(embed_shard, calls)
    _LOADED.clear()  # this process's copy (the local runner's) is not needed again: free its memory
    embedded = Embedded(sum(d.examples for d in done), sum(d.computed for d in done), len(done),
                        len({d.process for d in done}))
    print(f"Embeddings ({model.describe()}, {spec.runtime.task_runner} task runner): {embedded.examples} examples "
          f"in {embedded.shards} shard(s) of up to {spec.runtime.shard_size}, {embedded.computed} computed, the rest "
          f"from the cache; {embedded.processes} process(es)")
    if tracking is not None:
        from tasks.registry.tracking import log_params

        log_params(tracking.client, tracking.run_id, {
            "task_runner": spec.runtime.task_runner, "embed_shards": embedded.shards,
            "embed_examples": embedded.examples, "embed_computed": embedded.computed})
    return embedded
