"""Recipe steps 5-6 as Prefect tasks: the frozen-backbone baseline on cached embeddings, a
fine-tuning stage when the baseline falls short, and model selection on validation only.

Every stage saves the full classifier (backbone + head) as a checkpoint, so selection, the test
evaluation and registration treat all stages alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from tasks.prepare import DatasetRef, TrackingRef
from tasks.spec import MetricSpec, Spec
from tasks.split import SplitRef
from tasks.step import step
from tasks.train import EpochRecord

if TYPE_CHECKING:
    from tasks.warm_start import StartingPoint


@dataclass(frozen=True)
class StageResult:
    name: str
    run_id: str
    val_value: float
    val_scores: dict[str, float]
    checkpoint: Path
    checkpoint_sha256: str
    history: list[EpochRecord]
    notes: str
    keep: bool
    meets_target: bool
    started_from: str = "pretrained"  # the backbone weights training began with


@step("5a starting point")
def starting_point(spec: Spec, tracking: TrackingRef) -> StartingPoint | None:
    """`retrain.start_from: champion`: the champion's fine-tuned backbone, when there is a champion."""
    from tasks.tracking import client_for, log_params
    from tasks.warm_start import champion_starting_point

    client = client_for(spec.workdir)
    start = None
    if spec.retrain.start_from == "champion":
        start = champion_starting_point(client, spec, spec.workdir / "checkpoints" / tracking.run_id)
        print(f"Starting from the fine-tuned backbone of {start.describe()}" if start else
              "retrain.start_from: champion, but there is no champion yet: starting from the pretrained weights")
    client.set_tag(tracking.run_id, "started_from", start.describe() if start else "pretrained")
    if start:
        log_params(client, tracking.run_id, {"start_weights_sha256": start.sha256})
    return start


@step("5 feature-extraction baseline")
def train_baseline(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef,
                   start: StartingPoint | None = None) -> StageResult:
    """Frozen backbone, embeddings computed once (cached), a new linear head trained on them. From
    a champion's backbone (`start`), the head is new too: the classes may have changed."""
    from tasks.backbones import load_backbone
    from tasks.features import cached_embeddings, open_cache
    from tasks.metrics import meets_target
    from tasks.train import Batches, Classifier, class_indices, fit, new_head

    backbone = load_backbone(spec.model)
    if start:
        backbone.load_starting_point(start.weights, start.sha256, start.describe())
    examples, classes = _train_val_examples(dataset, split)
    cache = open_cache(spec.workdir, backbone)
    features, computed = {}, 0
    for name, frame in examples.items():
        embeddings, newly = cached_embeddings(cache, backbone, list(frame.index), list(frame["input"]),
                                              spec.train.batch_size)
        features[name], computed = torch.from_numpy(embeddings), computed + newly
    reused = sum(len(f) for f in examples.values()) - computed
    print(f"Embeddings: {computed} computed, {reused} reused from the cache")
    head = new_head(backbone.dim, len(classes), spec.train.seed)
    targets = {name: class_indices(frame["label"], classes) for name, frame in examples.items()}
    result = fit(head, [head], Batches(features["train"], targets["train"], spec.train.batch_size),
                 Batches(features["val"], targets["val"], 1024),
                 lr=spec.train.head_learning_rate, weight_decay=spec.train.weight_decay,
                 epochs=spec.train.head_epochs, patience=spec.train.head_patience,
                 metric=spec.metric, classes=classes, seed=spec.train.seed, description="baseline head")
    meets = meets_target(result.best_val_metric, spec.metric)
    origin = start.describe() if start else "pretrained"
    notes = (f"frozen {spec.model.name} ({origin}), linear head; {computed} embeddings computed, {reused} reused; "
             + ("meets the target on validation: fine-tuning skipped" if meets else "below target on validation"))
    return _record_stage(spec, tracking, "baseline", Classifier(backbone, head), result, notes, True, {
        "embeddings_computed": computed, "embeddings_reused": reused, "lr": spec.train.head_learning_rate,
        "started_from": origin}, origin)


@step("6 fine-tune last layer group")
def fine_tune(spec: Spec, dataset: DatasetRef, split: SplitRef, baseline: StageResult,
              tracking: TrackingRef) -> StageResult:
    """Unfreeze the last layer group, start from the baseline head, lr 10x lower, keep the best epoch."""
    from tasks.diagnose import diagnose_stage
    from tasks.train import Batches, class_indices, fit, restore_classifier

    examples, classes = _train_val_examples(dataset, split)
    classifier = restore_classifier(spec.model, len(classes), baseline.checkpoint)
    backbone = classifier.backbone
    unfrozen = backbone.layer_groups()[-1:]
    lr = spec.train.head_learning_rate / spec.train.finetune_lr_divisor  # ~10x lower: adapt, don't forget
    result = fit(classifier, [*unfrozen, classifier.head],
                 *(Batches(list(frame["input"]), class_indices(frame["label"], classes), spec.train.batch_size,
                           backbone.preprocess) for frame in (examples["train"], examples["val"])),
                 lr=lr, weight_decay=spec.train.weight_decay, epochs=spec.train.finetune_epochs,
                 patience=spec.train.patience, metric=spec.metric, classes=classes, seed=spec.train.seed,
                 description="fine-tune", show_batches=True)
    diagnosis = diagnose_stage(result, baseline.val_value, spec.metric, classes)
    print("Diagnosis: " + diagnosis.text())
    return _record_stage(spec, tracking, "finetune-1", classifier, result, diagnosis.text(), diagnosis.keep_stage,
                         {"unfrozen_groups": 1, "lr": lr, "layer_groups_total": len(backbone.layer_groups())},
                         baseline.started_from)


@step("select on validation")
def select_on_validation(spec: Spec, stages: list[StageResult], tracking: TrackingRef) -> StageResult:
    """The best kept stage by the declared metric on validation; ties keep the earlier, simpler one.
    The learning curves the choice rests on are logged with it."""
    from tasks.plots import learning_curves_figure
    from tasks.tracking import client_for, log_figure

    selected = choose_stage(stages, spec.metric)
    figure = learning_curves_figure({s.name: s.history for s in stages}, spec.metric.key, stages[0].val_value)
    log_figure(client_for(spec.workdir), tracking.run_id, figure, "plots/learning_curves.png")
    print(f"Selected {selected.name} (validation {spec.metric.key} {selected.val_value:.4f})")
    return selected


def choose_stage(stages: list[StageResult], metric: MetricSpec) -> StageResult:
    """The baseline unless a kept stage beats the best so far on validation (ties keep the
    earlier, simpler model)."""
    from tasks.metrics import is_improvement

    selected = stages[0]
    for stage in stages[1:]:
        if stage.keep and is_improvement(stage.val_value, selected.val_value, metric):
            selected = stage
    return selected


def _train_val_examples(dataset: DatasetRef, split: SplitRef) -> tuple[dict[str, pd.DataFrame], list[str]]:
    from tasks.data import read_table
    from tasks.split import train_val_ids

    table = read_table(dataset.table_path).drop_duplicates("example_id").set_index("example_id")
    train_ids, val_ids = train_val_ids(split.manifest_path)
    return {"train": table.loc[train_ids], "val": table.loc[val_ids]}, list(dataset.classes)


def _record_stage(spec: Spec, tracking: TrackingRef, name: str, classifier: torch.nn.Module, result,
                  notes: str, keep: bool, params: dict[str, object], started_from: str) -> StageResult:
    """Checkpoint the stage and log it as a nested MLflow run under the flow's parent run."""
    from tasks.atomic import write_atomic
    from tasks.data import sha256_file
    from tasks.metrics import meets_target
    from tasks.tracking import client_for, end_run, log_history, log_params, log_scores, log_text, start_run

    checkpoint = write_atomic(spec.workdir / "checkpoints" / tracking.run_id / f"{name}.pt",
                              lambda handle: torch.save(classifier.state_dict(), handle))
    best_scores = result.history[result.best_epoch - 1].val_scores
    client = client_for(spec.workdir)
    run_id = start_run(client, tracking.experiment_id, name, parent_run_id=tracking.run_id, tags={"stage": name})
    log_params(client, run_id, {**params, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                                "stopped_early": result.stopped_early, "batch_size": spec.train.batch_size})
    log_history(client, run_id, result.history, spec.metric.key)
    log_scores(client, run_id, best_scores, prefix="best_val_")
    log_text(client, run_id, notes, "notes.txt")
    end_run(client, run_id, succeeded=True)
    print(f"{name}: validation {spec.metric.key} {result.best_val_metric:.4f} (epoch {result.best_epoch})")
    return StageResult(name, run_id, result.best_val_metric, best_scores, checkpoint, sha256_file(checkpoint),
                       result.history, notes, keep, meets_target(result.best_val_metric, spec.metric), started_from)
