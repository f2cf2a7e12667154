"""Recipe steps 5-6 as Prefect tasks: the frozen-backbone baseline on cached embeddings, then
gradual unfreezing driven by the validation curves (selection and the decision log: `select.py`).

After each fine-tuning stage `tasks.decisions.diagnose.decide_next_step` reads the curves and returns
one action with its reason; `gradual_unfreezing` carries it out (unfreeze the next groups, retry
once regularized, switch on a class-weighted loss, or stop) and keeps the decision log. Every stage
saves the full classifier (backbone + head) as a checkpoint, so selection, the test evaluation and
registration treat all stages alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from tasks.config.spec import OneModelSpec
from tasks.data.split import SplitRef
from tasks.decisions.log import Decisions
from tasks.models.devices import on_runtime_device
from tasks.steps.refs import DatasetRef, StageResult, TrackingRef
from tasks.steps.resume import cached, epochs_folder
from tasks.steps.step import step
from tasks.training.fit import FitResult
from tasks.training.metrics import Contract

if TYPE_CHECKING:
    from tasks.decisions.diagnose import StageDecision
    from tasks.registry.warm_start import StartingPoint


AUGMENT_LEVELS = ("none", "light", "standard")


@dataclass(frozen=True)
class StagePlan:
    """What one fine-tuning stage does: how deep it unfreezes and with which remedies."""

    number: int
    name: str
    groups: int
    regularized: bool = False
    class_weights: bool = False
    extended: bool = False  # the same stage again from its own best weights: the first run was too short to tell


def baseline_name(prefix: str, class_weights: bool) -> str:
    """The baseline stage's name: `baseline`, `baseline-weighted` (re-fit with a class-weighted
    loss), each after a tournament's later candidate's prefix (`efficientnet-baseline`)."""
    return prefix + ("baseline-weighted" if class_weights else "baseline")


@step("5a starting point", run_name="5a starting point {spec.model.name}")
def starting_point(spec: OneModelSpec, split: SplitRef, tracking: TrackingRef,
                   tournament: bool = False) -> StartingPoint | None:
    """`retrain.start_from: champion`: the champion's fine-tuned backbone, when there is a champion
    that never trained on this run's test examples (their ids are read, logged as a "lineage
    check": no input, no label). In a tournament only the candidate the champion was trained from
    can start from it; the others start from their pretrained weights (and say so)."""
    from tasks.core.errors import SpecError
    from tasks.data.split import quarantined_test_ids
    from tasks.registry.tracking import log_params
    from tasks.registry.warm_start import champion_starting_point

    client = tracking.client
    start = None
    if spec.retrain.start_from == "champion":
        try:
            start = champion_starting_point(client, spec, spec.workdir / "checkpoints" / "starting-points", lambda: (
                quarantined_test_ids(split.manifest_path, reader=f"starting_point run {tracking.run_id}: test ids only",
                                     purpose="lineage check")))
        except SpecError as error:
            if not tournament or "was trained from" not in str(error):
                raise
            print(f"retrain.start_from: champion, but {spec.model.describe()} is not the champion's base model: "
                  "this candidate starts from its pretrained weights")
            return None
        print(f"Starting from the fine-tuned backbone of {start.describe()}" if start else
              "retrain.start_from: champion, but there is no champion yet: starting from the pretrained weights")
    client.set_tag(tracking.run_id, "started_from", start.describe() if start else "pretrained")
    if start:
        log_params(client, tracking.run_id, {"start_weights_sha256": start.sha256})
    return start


@step("5 feature-extraction baseline", run_name=lambda parameters: "5 feature-extraction " + baseline_name(
    parameters["prefix"], parameters["class_weights"]))
def train_baseline(spec: OneModelSpec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef,
                   start: StartingPoint | None, contract: Contract,
                   class_weights: bool = False, prefix: str = "") -> StageResult:
    """Frozen backbone, embeddings computed once (cached), a new linear head trained on them. From
    a champion's backbone (`start`), the head is new too: the classes may have changed. With
    `class_weights` (a lagging class), the head is re-fit with a class-weighted loss: cheap, the
    embeddings come from the cache. `prefix` names the stages of a tournament's later candidates."""
    from tasks.models.backbones import load_backbone
    from tasks.models.classifier import Classifier, class_indices
    from tasks.models.devices import resolve_num_workers
    from tasks.training.fit import class_weights_for
    from tasks.training.probe import probe_head

    name = baseline_name(prefix, class_weights)
    with _stage_run(tracking, name) as run_id:
        examples, classes = dataset.train_val_examples(split), list(dataset.classes)  # read once, used twice
        backbone = load_backbone(spec.model)
        if start:
            backbone.load_starting_point(start.weights, start.sha256, start.describe())
        device = on_runtime_device(spec.runtime.device, backbone)
        probe = probe_head(backbone, examples, classes, spec.train, contract, device, spec.workdir,
                           resolve_num_workers(spec.runtime.num_workers), class_weights)
        result, head, computed, reused = probe.result, probe.head, probe.computed, probe.reused
        weights = (class_weights_for(class_indices(examples["train"]["label"], classes), len(classes))
                   if class_weights else None)
        backbone.module.to("cpu")
        head.to("cpu")
        meets = contract.meets(result.best.val_scores)
        origin = start.describe() if start else "pretrained"
        head_words = ("logistic regression, C chosen on validation" if backbone.LEARNS_FEATURES
                      else probe.shape.describe())
        notes = (f"frozen {spec.model.name} ({origin}), {head_words}" + (f" ({probe.choice})" if probe.choice else "")
                 + (", class-weighted loss" if class_weights else "")
                 + f"; {computed} embeddings computed, {reused} reused; "
                 + ("meets the target on validation" if meets else "below target on validation"))
        params: dict[str, object] = {"embeddings_computed": computed, "embeddings_reused": reused,
                                     "lr": spec.train.head_learning_rate, "started_from": origin,
                                     "class_weights": class_weights, "unfrozen_groups": 0, "head": probe.shape.kind}
        if weights is not None:
            params["class_weight_values"] = ",".join(f"{w:.3f}" for w in weights.tolist())
        return _record_stage(spec, tracking, run_id, name, Classifier(backbone, head), result, notes, params,
                             origin, contract, unfrozen_groups=0, classes=classes, head=probe.shape.as_dict())


@step("6 fine-tuning stage", run_name="6 fine-tuning {plan.name}")  # one run per stage: finetune-2, ...
def fine_tune_stage(spec: OneModelSpec, dataset: DatasetRef, split: SplitRef, start: StageResult, plan: StagePlan,
                    tracking: TrackingRef, contract: Contract) -> StageResult:
    """Unfreeze the last `plan.groups` layer groups of the best model so far and train them with
    the head: discriminative lrs (head at head lr x lr_ratio, each deeper group x group_lr_decay),
    warm-up then cosine decay, the best epoch kept. A regularized retry raises augmentation one
    level, weight decay x10 and label smoothing."""
    from tasks.models.checkpoints import legacy_config, restore_classifier_from
    from tasks.models.classifier import class_indices
    from tasks.models.devices import resolve_device, resolve_num_workers
    from tasks.training.fit import class_weights_for, fit

    with _stage_run(tracking, plan.name) as run_id:
        settings = spec.finetune
        device = resolve_device(spec.runtime.device)
        examples, classes = dataset.train_val_examples(split), list(dataset.classes)
        classifier, restored = restore_classifier_from(start.checkpoint, legacy_config(spec.model, classes))
        backbone = classifier.backbone
        groups = backbone.layer_groups()
        depth = min(plan.groups, len(groups))
        unfrozen = groups[-depth:]
        augment: str = settings.augment
        weight_decay, smoothing = settings.weight_decay, settings.label_smoothing
        if plan.regularized:
            augment = AUGMENT_LEVELS[min(AUGMENT_LEVELS.index(augment) + 1, len(AUGMENT_LEVELS) - 1)]
            weight_decay, smoothing = weight_decay * 10, smoothing or 0.1
        lr = spec.train.head_learning_rate * settings.lr_ratio
        # The group next to the head gets lr x decay, the one below it lr x decay^2, ...
        scales = [settings.group_lr_decay ** (depth - index) for index in range(depth)] + [1.0]
        train_targets = class_indices(examples["train"]["label"], classes)
        val_targets = class_indices(examples["val"]["label"], classes)
        weights = class_weights_for(train_targets, len(classes)) if plan.class_weights else None
        model, train, val, prefix_note = _stage_inputs(spec, classifier, depth, augment, examples,
                                                       {"train": train_targets, "val": val_targets}, device)
        result = fit(model, [*unfrozen, classifier.head], train, val,
                     lr=lr, lr_scales=scales, weight_decay=weight_decay, epochs=settings.epochs_per_stage,
                     patience=settings.early_stopping.patience, min_delta=settings.early_stopping.min_delta,
                     warmup=settings.warmup, label_smoothing=smoothing, metric=spec.metric, guard=contract.guard,
                     classes=classes, seed=spec.train.seed + plan.number, description=plan.name,
                     show_batches=True, class_weights=weights, device=device,
                     epochs_folder=epochs_folder("6 fine-tuning stage", spec=spec, dataset=dataset, split=split,
                                                 start=start, plan=plan, contract=contract))
        classifier.to("cpu")  # checkpoints and later steps read CPU tensors
        notes = (f"last {depth} of {len(groups)} layer group(s) unfrozen from {start.name}; lr {lr:g} (head) down to "
                 f"{lr * scales[0]:g}; augment {augment}, weight decay {weight_decay:g}, label smoothing {smoothing:g}"
                 + (", class-weighted loss" if plan.class_weights else "") + (" (regularized retry)" if plan.regularized
                                                                               else "") + f"; {prefix_note}")
        params: dict[str, object] = {
            "unfrozen_groups": depth, "layer_groups_total": len(groups), "lr": lr,
            "group_lrs": ",".join(f"{lr * scale:.3g}" for scale in scales), "weight_decay": weight_decay,
            "augment": augment, "label_smoothing": smoothing, "warmup": settings.warmup,
            "class_weights": plan.class_weights, "regularized_retry": plan.regularized,
            "started_from_stage": start.name,
            "device": str(device), "num_workers": resolve_num_workers(spec.runtime.num_workers),
            "prefix_cache": prefix_note.startswith("frozen prefix cached")}
        return _record_stage(spec, tracking, run_id, plan.name, classifier, result, notes, params, start.started_from,
                             contract, unfrozen_groups=depth, classes=classes, head=restored.head)  # the same head


def _stage_inputs(spec: OneModelSpec, classifier: Any, depth: int, augment: str, examples: dict[str, pd.DataFrame],
                  targets: dict[str, torch.Tensor], device: torch.device) -> tuple[Any, Any, Any, str]:
    """What `fit` trains on: without random augmentation, the still-frozen prefix's outputs are
    computed once per stage (in RAM, or memory-mapped under `<workdir>/prefix_cache` when large)
    and each epoch runs only the unfrozen part; with augmentation the whole network runs."""
    from tasks.models.backbones import ImageBackbone
    from tasks.models.devices import prepare_module, resolve_num_workers
    from tasks.models.loader import Batches
    from tasks.training.prefix_cache import PrefixBatches, SuffixClassifier, can_cache_prefix, compute_prefix_outputs

    backbone, size, pin = classifier.backbone, spec.train.batch_size, device.type == "cuda"
    prepare_module(classifier, device, convnet=isinstance(backbone, ImageBackbone))
    if can_cache_prefix(backbone, augment, depth):
        outputs = {name: compute_prefix_outputs(backbone, list(frame.index), list(frame["input"]), depth,
                                                batch_size=size, cache_dir=spec.workdir / "prefix_cache")
                   for name, frame in examples.items()}
        return (SuffixClassifier(classifier, depth), PrefixBatches(outputs["train"], targets["train"], size, pin),
                PrefixBatches(outputs["val"], targets["val"], size, pin),
                f"frozen prefix cached ({backbone.frozen_groups(depth)} group(s) computed once per stage)")
    loading: dict[str, Any] = {"num_workers": resolve_num_workers(spec.runtime.num_workers), "pin_memory": pin}
    train_prepare = backbone.training_preprocess(augment)
    return (classifier, Batches(list(examples["train"]["input"]), targets["train"], size, train_prepare, **loading),
            Batches(list(examples["val"]["input"]), targets["val"], size, backbone.preprocess, **loading),
            "whole backbone run every epoch" + (f" (random augmentation: {augment})"
                                                 if backbone.is_random(augment) else ""))


def gradual_unfreezing(spec: OneModelSpec, dataset: DatasetRef, split: SplitRef, baseline: StageResult,
                       tracking: TrackingRef, start: StartingPoint | None,
                       contract: Contract, prefix: str = "") -> tuple[list[StageResult], Decisions]:
    """Fine-tune a little, read the validation curves, act: until a decision says stop or
    `finetune.max_stages` is reached. Each stage starts from the best weights so far."""
    from tasks.decisions.diagnose import StageContext, capped_by_max_stages, decide_next_step

    settings, decisions, stages = spec.finetune, Decisions(), [baseline]
    if baseline.meets_target:
        decisions.add(baseline.name, "lock_in", f"the frozen baseline meets the target on validation "
                      f"({spec.metric.key} {baseline.val_value:.4f} >= {spec.metric.target:g}"
                      + (", guard kept" if contract.guard else "") + "): no fine-tuning stage runs",
                      {"best_val_metric": baseline.val_value, "target": spec.metric.target})
        return stages, decisions
    if settings.max_stages == 0:
        decisions.add(baseline.name, "lock_in", "fine-tuning is disabled (finetune.max_stages: 0): the baseline is "
                      "kept although it is below the target on validation", {"best_val_metric": baseline.val_value})
        return stages, decisions
    total_groups = len(_layer_groups_of(spec))
    if total_groups == 0:  # a classic family: its features were fitted, there is nothing pretrained to unfreeze
        decisions.add(baseline.name, "no_layer_groups", f"{spec.model.describe()} has no layer groups to unfreeze: "
                      f"its validation {spec.metric.key} {baseline.val_value:.4f} is below the target "
                      f"{spec.metric.target:g}, and no fine-tuning stage can change that",
                      {"best_val_metric": baseline.val_value, "target": spec.metric.target})
        return stages, decisions
    plan = StagePlan(1, f"{prefix}finetune-1", min(settings.groups_per_stage, total_groups),
                     class_weights=settings.class_weights == "on")
    best, class_weights = baseline, settings.class_weights == "on"
    from_stage = best
    while True:
        stage = cached(fine_tune_stage)(spec, dataset, split, from_stage, plan, tracking, contract)
        stages.append(stage)
        context = StageContext(
            stage_number=plan.number, baseline_value=baseline.val_value, best_before=best.val_value,
            patience=settings.early_stopping.patience, retried=plan.regularized, class_weights=class_weights,
            groups_left=total_groups - plan.groups, baseline_guard_ok=contract.guard_holds(baseline.val_scores),
            best_before_guard_ok=contract.guard_holds(best.val_scores), min_delta=settings.early_stopping.min_delta,
            may_weight_classes=settings.class_weights != "off", extended=plan.extended)
        decision = decide_next_step(stage.as_fit(), context, spec.metric, list(dataset.classes), contract.guard)
        if contract.better(stage.val_scores, best.val_scores):
            best = stage
        next_plan = _next_plan(decision, plan, settings.groups_per_stage, total_groups, class_weights, prefix)
        done = decision
        if next_plan and next_plan.number > settings.max_stages:  # the log says what was done: stop
            done, next_plan = capped_by_max_stages(decision, settings.max_stages), None
        decisions.add(stage.name, done.action, done.reason, done.numbers)
        if decision.action == "class_weights_on":
            class_weights = True
            refit = cached(train_baseline)(spec, dataset, split, tracking, start, contract, class_weights=True,
                                   prefix=prefix)
            stages.append(refit)
            if contract.better(refit.val_scores, best.val_scores):
                best = refit
        if next_plan is None:
            return stages, decisions
        from_stage = stage if next_plan.extended else best  # an extended stage goes on from where it stopped
        plan = next_plan


def _next_plan(decision: StageDecision, plan: StagePlan, per_stage: int, total_groups: int,
               class_weights: bool, prefix: str = "") -> StagePlan | None:
    """The stage a decision asks for, or None when it says stop."""
    deeper = min(plan.groups + per_stage, total_groups)
    if decision.action == "extend_stage":
        return StagePlan(plan.number, f"{plan.name}-extended", plan.groups, regularized=plan.regularized,
                         class_weights=class_weights, extended=True)
    if decision.action == "retry_regularized":
        return StagePlan(plan.number, f"{plan.name}-retry", plan.groups, regularized=True,
                         class_weights=class_weights)
    if decision.action == "unfreeze_next":
        return StagePlan(plan.number + 1, f"{prefix}finetune-{plan.number + 1}", deeper, class_weights=class_weights)
    if decision.action == "class_weights_on":
        return StagePlan(plan.number + 1, f"{prefix}finetune-{plan.number + 1}", deeper, class_weights=True)
    return None  # stop_overfit, stop_no_gain, stop_stalled, lock_in


def _layer_groups_of(spec: OneModelSpec) -> list[torch.nn.Module]:
    from tasks.models.backbones import load_backbone

    return load_backbone(spec.model).layer_groups()


@contextmanager
def _stage_run(tracking: TrackingRef, name: str) -> Iterator[str]:
    """The stage's nested MLflow run, open from the stage's start to its end (so the UI shows how
    long it trained), FAILED if the stage fails. A stage a resumed run takes from the cache runs
    nothing here, so it opens no run: its result names the run that trained it."""
    from tasks.registry.tracking import child_run

    with child_run(tracking.client, tracking.experiment_id, name, tracking.run_id, tags={"stage": name}) as run_id:
        yield run_id


def _record_stage(spec: OneModelSpec, tracking: TrackingRef, run_id: str, name: str, classifier: torch.nn.Module,
                  result: FitResult, notes: str, params: dict[str, object], started_from: str, contract: Contract,
                  unfrozen_groups: int, classes: list[str], head: dict[str, Any] | None = None) -> StageResult:
    """Checkpoint the stage (its best epoch, and its last epoch beside it with the optimizer,
    scheduler and random states, so a later version can resume a killed run) and log it in its
    nested MLflow run `run_id` (`_stage_run`) under the flow's parent run."""
    from dataclasses import replace

    from tasks.core.hashing import sha256_file
    from tasks.models.checkpoints import Checkpoint, save_checkpoint
    from tasks.registry.tracking import log_history, log_params, log_scores, log_text

    folder = spec.workdir / "checkpoints" / tracking.run_id
    best = Checkpoint(model=spec.model, classes=classes, weights=_own_weights(classifier), stage=name,
                      unfrozen_groups=unfrozen_groups, epoch=result.best_epoch, head=head)
    checkpoint = save_checkpoint(folder / f"{name}.pt", best)
    if result.last_state:
        last = result.last_state
        save_checkpoint(folder / f"{name}.last.pt", replace(
            best, weights=_own_weights(classifier, last["weights"]), epoch=last["epoch"], optimizer=last["optimizer"],
            scheduler=last["scheduler"], rng=last["rng"]))
    best_scores = result.best.val_scores
    client = tracking.client
    log_params(client, run_id, {**params, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                                "stopped_early": result.stopped_early, "batch_size": spec.train.batch_size})
    log_history(client, run_id, result.history, spec.metric.key)
    log_scores(client, run_id, best_scores, prefix="best_val_")
    log_text(client, run_id, notes, "notes.txt")
    guard = "" if contract.guard_holds(best_scores) else f" (breaks the guard {contract.guard.describe()})"  # type: ignore[union-attr]
    print(f"{name}: validation {spec.metric.key} {result.best_val_metric:.4f} (epoch {result.best_epoch}){guard}")
    return StageResult(name, run_id, result.best_val_metric, best_scores, checkpoint, sha256_file(checkpoint),
                       result.history, notes, True, contract.meets(best_scores), started_from, result.best_epoch,
                       result.stopped_early, unfrozen_groups)


def _own_weights(classifier: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The classifier's state dict, with `state` (the trained model's, at another epoch) put in.
    That model may be the classifier, the frozen-prefix cache's wrapper around it (keys
    `classifier.*`) or the head alone (the baseline trains it on cached embeddings)."""
    weights = dict(classifier.state_dict())
    if state is None:
        return weights
    for mapped in (state, {k.removeprefix("classifier."): v for k, v in state.items()},
                   {f"head.{k}": v for k, v in state.items()}):
        if set(mapped) <= set(weights):
            return weights | mapped
    raise ValueError(f"weights of another model: {sorted(state)[:3]}... are not the classifier's")
