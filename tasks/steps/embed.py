"""3a. Embed once, before the checks: every example the label audit (3b), the leakage check (3c)
and the baseline (5) read, with the first base model, into the content-addressed cache; and, in a
tournament, each eligible candidate's training and validation examples before the probes (4).
Those steps then only read it.

The examples are cut into fixed shards of their sorted ids (`runtime.shard_size`). The flow opens
the cache once and gives each shard that lacks embeddings one `embed_shard` task with its missing
ids; the task writes them as its own cache shard when it finishes, without reading the others
(which would make every task's cost grow with the cache). A crash keeps every finished shard, and
a rerun runs tasks only for what is missing. The shards run one after another in
the flow's process, or in parallel on Dask (`runtime.task_runner`, tasks.steps.runners); on Dask
every worker process loads the backbone once, and the data must be on a path the workers can read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config.spec import ModelSpec, RuntimeSpec, Spec
from tasks.data.split import SplitRef
from tasks.steps.refs import DatasetRef, TrackingRef
from tasks.steps.runners import task_runner
from tasks.steps.step import step

if TYPE_CHECKING:
    from tasks.models.features import EmbeddingCache

_LOADED: dict[str, Any] = {}  # backbone per model and device, once per (worker) process


@dataclass(frozen=True)
class ShardDone:
    computed: int
    process: int       # the PID that embedded it: which worker, on Dask


@dataclass(frozen=True)
class Embedded:
    examples: int
    computed: int      # the rest were in the cache already
    shards: int        # fixed shards of all the ids; only those with missing ids ran a task
    processes: int     # distinct processes that ran a shard


def fixed_shards(ids: list[str], shard_size: int) -> list[list[str]]:
    """The sorted distinct ids cut every `shard_size`: the same data gives the same shards."""
    ordered = sorted(set(ids))
    return [ordered[start:start + shard_size] for start in range(0, len(ordered), shard_size)]


@step("3a embed shard", run_name=lambda parameters: (f"3a embed shard from {parameters['ids'][0][:8]} "
                                                    f"({len(parameters['ids'])} examples, {parameters['model'].name})"))
def embed_shard(model: ModelSpec, runtime: RuntimeSpec, workdir: Path, ids: list[str], inputs: list[str],
                batch_size: int) -> ShardDone:
    """Embed the shard's examples that were missing from the cache and write them as one cache
    shard (the cache's other shards are not read: the flow found what was missing)."""
    from tasks.models.features import embed_inputs, open_cache

    backbone = _backbone(model, runtime)
    open_cache(workdir, backbone, read_index=False).put(ids, embed_inputs(backbone, inputs, batch_size))
    return ShardDone(len(ids), os.getpid())


def missing_per_shard(cache: EmbeddingCache, ids: list[str], shard_size: int) -> list[list[str]]:
    """Each fixed shard's ids that the cache lacks; shards already complete are left out."""
    missing = set(cache.missing(ids))
    shards = [[i for i in shard if i in missing] for shard in fixed_shards(ids, shard_size)]
    return [shard for shard in shards if shard]


def _backbone(model: ModelSpec, runtime: RuntimeSpec) -> Any:
    from tasks.models.backbones import load_backbone
    from tasks.models.devices import on_runtime_device

    key = f"{model.model_dump_json()}|{runtime.device}"
    if key not in _LOADED:
        backbone = load_backbone(model)
        on_runtime_device(runtime.device, backbone)
        _LOADED[key] = backbone
    return _LOADED[key]


def embed_examples(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef | None,
                   candidate: int = 0) -> Embedded:
    """Every example a later step reads, embedded by the base model `spec.candidates[candidate]`. The
    first model (the audit's, the leakage check's, the baseline's): train, validation and the test
    inputs (for the leakage check: no labels, the read logged). A tournament's other eligible
    candidates: train and validation, which their probes read. A flow-level step: it maps
    `embed_shard` over the shards."""
    from tasks.audit.leakage import MIN_TRAIN_FOR_LEAKAGE
    from tasks.data.split import quarantined_test_ids, train_val_ids
    from tasks.data.table import read_examples
    from tasks.models.features import open_cache

    train_ids, val_ids = train_val_ids(split.manifest_path)
    test_ids = (quarantined_test_ids(split.manifest_path, reader="embed_examples: test inputs, no labels",
                                     purpose="leakage check")
                if candidate == 0 and len(train_ids) >= MIN_TRAIN_FOR_LEAKAGE else [])
    inputs = read_examples(dataset.table_path)["input"]
    ids, model = train_ids + val_ids + test_ids, spec.candidates[candidate]
    todo = missing_per_shard(open_cache(spec.workdir, _backbone(model, spec.runtime)), ids, spec.runtime.shard_size)
    calls = [{"model": model, "runtime": spec.runtime, "workdir": spec.workdir, "ids": shard,
              "inputs": list(inputs.loc[shard]), "batch_size": spec.train.batch_size} for shard in todo]
    done: list[ShardDone] = []
    if calls:  # a fully cached run starts no runner (on Dask: no cluster)
        with task_runner(spec.runtime) as run_all:
            done = run_all(embed_shard, calls)
    _LOADED.clear()  # this process's copy (the local runner's) is not needed again: free its memory
    shards = len(fixed_shards(ids, spec.runtime.shard_size))
    embedded = Embedded(len(set(ids)), sum(d.computed for d in done), shards, len({d.process for d in done}))
    print(f"Embeddings ({model.describe()}, {spec.runtime.task_runner} task runner): {embedded.examples} examples "
          f"in {shards} shard(s) of up to {spec.runtime.shard_size}, {len(done)} with examples to compute, "
          f"{embedded.computed} computed, the rest from the cache; {embedded.processes} process(es)")
    if tracking is not None:
        from tasks.registry.tracking import log_params

        suffix = f"_candidate_{candidate + 1}" if candidate else ""
        log_params(tracking.client, tracking.run_id, {
            "task_runner": spec.runtime.task_runner, f"embed_shards{suffix}": embedded.shards,
            f"embed_examples{suffix}": embedded.examples, f"embed_computed{suffix}": embedded.computed})
    return embedded
