"""Recipe step 4 as Prefect tasks: load the pretrained base model, or with several candidates run
the tournament measured on this machine (train and validation only; the test split is never read)."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tasks.config.families import FamilyOptions
from tasks.config.spec import OneModelSpec, Spec
from tasks.data.split import SplitRef
from tasks.decisions.tournament import CandidateResult, Tournament, constraint_failure, rank_candidates
from tasks.steps.refs import BaseModelRef, DatasetRef, TrackingRef
from tasks.steps.resume import cached
from tasks.steps.runners import task_runner
from tasks.steps.step import artifact_key, publish_table, step
from tasks.training.metrics import Contract

THROUGHPUT_SAMPLE = 64  # training inputs timed per candidate (after one warm-up batch)
ELIGIBLE = "eligible"   # measured within the constraints: probed next


@step("4 load base model", run_name="4 load base model {spec.model.name}")  # once per tournament candidate
def load_base_model(spec: OneModelSpec) -> BaseModelRef:
    from tasks.models.backbones import load_backbone

    backbone = load_backbone(spec.model)
    groups = len(backbone.layer_groups())
    if backbone.LEARNS_FEATURES:
        print(f"Base model {spec.model.describe()}: classic features fitted on the training split at step 5, "
              "no layer groups")
    else:
        print(f"Base model {backbone.source}: {backbone.dim}-d embeddings, {groups} layer groups, "
              f"{backbone.parameter_count:,} parameters")
    return BaseModelRef(backbone.source, backbone.dim, groups, spec.model.family, spec.model.name,
                        backbone.weights.description, backbone.weights_sha256, backbone.parameter_count)


def choose_base_model(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef,
                      contract: Contract, measured: list[CandidateResult]) -> Tournament:
    """The tournament, a flow-level step, after `measure_candidates` (and the eligible candidates'
    embeddings, step 3a's machinery): the probes of those the constraints keep, as parallel tasks
    on the run's task runner, then the ranking.

    Throughput and peak memory are measured in one task before any probe starts, each candidate
    alone on the machine: timed while other candidates' probes share its cores (or its GPU), a fast
    model would look slow, and `min_throughput` could drop the wrong one."""
    constraints = spec.tournament
    assert constraints is not None, "choose_base_model needs `model: {candidates: [...]}`"
    probing = [(model, result) for model, result in zip(constraints.candidates, measured, strict=True)
               if result.status == ELIGIBLE]
    with task_runner(spec.runtime) as run_all:
        probed = run_all(cached(probe_candidate), [{"spec": spec.with_model(model), "dataset": dataset, "split": split,
                                                    "contract": contract, "measured": result}
                                                   for model, result in probing])
    probes = iter(probed)  # in the candidates' order: each eligible one takes the next probe
    scored = [(model, next(probes) if result.status == ELIGIBLE else result)
              for model, result in zip(constraints.candidates, measured, strict=True)]
    return record_tournament(spec, tracking, contract, scored)


def eligible(measured: list[CandidateResult]) -> list[int]:
    """The indexes (in `spec.candidates`) of the candidates the constraints keep: each is probed."""
    return [index for index, result in enumerate(measured) if result.status == ELIGIBLE]


@step("4 measure candidates (one at a time)")
def measure_candidates(spec: Spec, dataset: DatasetRef, split: SplitRef) -> list[CandidateResult]:
    """Parameters, then throughput and peak memory on a sample of training inputs, for each candidate
    in turn; a candidate outside `max_params` or `min_throughput` is dropped with the reason."""
    from tasks.models.backbones import load_backbone
    from tasks.models.devices import on_runtime_device, resolve_num_workers

    constraints = spec.tournament
    assert constraints is not None
    sample = list(dataset.train_val_examples(split)["train"]["input"])[:THROUGHPUT_SAMPLE]
    results = []
    for model in constraints.candidates:
        started = time.perf_counter()
        one = spec.with_model(model)
        backbone = load_backbone(model)
        parameters, dim = backbone.parameter_count, backbone.dim
        throughput, peak = None, None
        dropped = constraint_failure(parameters, None, constraints)
        if not dropped:
            backbone.fit_to(sample)  # a classic family's fit is part of its cost (a pretrained one: nothing)
            device = on_runtime_device(one.runtime.device, backbone)
            throughput, peak = measure_embedding(backbone, sample, one.train.batch_size, device,
                                                 resolve_num_workers(one.runtime.num_workers))
            dim = backbone.dim  # a classic family's width is known once fitted
            dropped = constraint_failure(parameters, throughput, constraints)
        if dropped:
            print(f"{model.describe()}: {dropped}")
        results.append(CandidateResult(model.describe(), parameters, dim, throughput, peak, None, None, False,
                                       dropped or ELIGIBLE, time.perf_counter() - started))
        del backbone
    return results


@step("4 probe candidate", run_name="4 probe candidate {spec.model.name}")
def probe_candidate(spec: OneModelSpec, dataset: DatasetRef, split: SplitRef, contract: Contract,
                    measured: CandidateResult) -> CandidateResult:
    """The probe head on the candidate's frozen embeddings (cached), its best epoch on validation."""
    from tasks.models.backbones import load_backbone
    from tasks.models.devices import on_runtime_device, resolve_num_workers
    from tasks.training.probe import probe_head

    started = time.perf_counter()
    backbone = load_backbone(spec.model)
    device = on_runtime_device(spec.runtime.device, backbone)
    result = probe_head(backbone, dataset.train_val_examples(split), list(dataset.classes), spec.train,
                        contract, device, spec.workdir, resolve_num_workers(spec.runtime.num_workers)).result
    scores = result.best.val_scores
    guard_value = scores[contract.guard.key] if contract.guard else None
    print(f"{spec.model.describe()}: validation {spec.metric.key} {result.best_val_metric:.4f}, "
          f"{measured.throughput or 0:,.1f} inputs/s")
    return replace(measured, val_value=result.best_val_metric, guard_value=guard_value,
                   guard_ok=contract.guard_holds(scores), seconds=measured.seconds + time.perf_counter() - started)


@step("4 choose the base model (tournament)")
def record_tournament(spec: Spec, tracking: TrackingRef, contract: Contract,
                      scored: list[tuple[FamilyOptions, CandidateResult]]) -> Tournament:
    """Rank the probed candidates, keep the best eligible one, and log the table and its chart."""
    from tasks.core.errors import SpecError
    from tasks.registry.tracking import log_figure, log_text

    constraints = spec.tournament
    assert constraints is not None
    ranking = rank_candidates(scored)
    results = [replace(r, status="chosen" if ranking and m is ranking[0] else
                              (f"ranked {ranking.index(m) + 1}" if m in ranking else r.status)) for m, r in scored]
    tournament = Tournament(results, ranking)
    guard_key = contract.guard.key if contract.guard else None
    table = tournament.markdown(spec.metric.key, guard_key)
    client = tracking.client
    log_text(client, tracking.run_id, table, "tournament/candidates.md")
    log_text(client, tracking.run_id, json.dumps([asdict(r) for r in results], indent=2), "tournament/candidates.json")
    from tasks.reports.plots import tournament_figure

    log_figure(client, tracking.run_id, tournament_figure(results, spec.metric.key, spec.metric.target),
               "tournament/metric_vs_throughput.png")
    publish_table(artifact_key(spec.registry.model_name, "tournament"),
                  [r.row(spec.metric.key, guard_key) for r in results],
                  f"Base-model tournament on validation ({spec.metric.describe()}); the chart is the MLflow "
                  f"artifact tournament/metric_vs_throughput.png of run {tracking.run_id}")
    print("Tournament (validation, probe head):\n" + table)
    if not ranking:
        raise SpecError(f"model.candidates: no candidate is eligible under the constraints (max_params "
                        f"{constraints.max_params}, min_throughput {constraints.min_throughput}):\n{table}"
                        "Fix: relax max_params / min_throughput, or add smaller or faster candidates.")
    client.set_tag(tracking.run_id, "base_model", ranking[0].describe())
    print(f"Base model chosen: {ranking[0].describe()}")
    return tournament


def measure_embedding(backbone: Any, inputs: list[Any], batch_size: int, device: Any,
                      num_workers: int = 0) -> tuple[float, float | None]:
    """(inputs/s, peak memory in MiB) of the production extraction path (`embed_inputs`) on a
    sample, after one warm-up batch. Memory: on CUDA the peak allocated on the device; on Linux
    CPUs the process's peak resident set (VmHWM, reset first), else None."""
    import torch

    from tasks.models.features import embed_inputs

    embed_inputs(backbone, inputs[:batch_size], batch_size)  # warm-up: first-call allocations, lazy inits
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()
    started = time.perf_counter()
    embed_inputs(backbone, inputs, batch_size, num_workers)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mib()
    return len(inputs) / seconds, peak


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
