"""Read a fine-tuning stage's validation curves and turn them into a decision with its reasons.

The declared metric decides; the losses explain. `decide_next_step` returns one action with
its reason and numbers; `tasks.steps.learn.gradual_unfreezing` carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from tasks.config.spec import MetricSpec, class_metric_key
from tasks.training.fit import FitResult
from tasks.training.metrics import Contract, Guard, is_improvement, meets_target

LAGGING_CLASS_GAP = 0.15  # a class's recall this far below the mean recall is called lagging


# What the curves say to do next (the fine-tuning issue's decision log). Pure: the numbers in,
# one action and its reason out; the loop that carries the actions out is built on top of it.
# `stop_no_gain` is only the first stage failing to beat the frozen baseline (the base model is
# likely unfit, so a tournament tries its next candidate); a later stage that stops improving below
# the target is `stop_stalled` (fine-tuning this base model has given what it can).
# `stop_max_stages` is never the curves' own answer: it replaces one that asks for another stage
# when `finetune.max_stages` stages have run (`capped_by_max_stages`), so the log says what was done.
# `extend_stage` comes before `stop_no_gain` once: a first stage too short to tell (its best epoch
# is its last, or its training loss still fell fast at the end) runs again from its own best weights.
Action = Literal["unfreeze_next", "retry_regularized", "stop_overfit", "stop_no_gain", "stop_stalled",
                 "class_weights_on", "lock_in", "stop_max_stages", "extend_stage"]
STILL_FALLING = 0.10  # the last epoch cut the training loss by at least this share: the stage was still learning


@dataclass(frozen=True)
class StageDecision:
    action: Action
    reason: str
    numbers: dict[str, float]  # what drove the decision, for decisions.json


@dataclass(frozen=True)
class StageContext:
    """What a decision needs besides the stage's own curves."""

    stage_number: int          # 1 for the first fine-tuning stage
    baseline_value: float      # the frozen baseline's validation metric
    best_before: float         # the best validation metric before this stage (baseline included)
    patience: int              # epochs without validation gain that count as a stall
    retried: bool              # this stage already had its regularized retry
    class_weights: bool        # the class-weighted loss is already on
    groups_left: int           # frozen layer groups that could still be unfrozen
    baseline_guard_ok: bool = True     # the baseline keeps the contract's guard
    best_before_guard_ok: bool = True  # the best result so far keeps it
    min_delta: float = 0.0             # a smaller gain is no gain (finetune.early_stopping.min_delta)
    may_weight_classes: bool = True    # False under `finetune.class_weights: off`: a lagging class is only named
    extended: bool = False             # this stage already ran again because it was too short to tell


def decide_next_step(stage: FitResult, context: StageContext, metric: MetricSpec,
                     classes: list[str], guard: Guard | None = None) -> StageDecision:
    """After a stage: overfitting and a lagging class act first; then no gain, unfreeze, lock in.
    A result that breaks the contract's guard counts as failing: it neither meets the target nor
    beats a result that keeps the guard."""
    history, best = stage.history, stage.history[stage.best_epoch - 1]
    guard_ok = Contract(metric, guard).guard_holds(best.val_scores)
    after_best = history[stage.best_epoch:]
    numbers = {"best_epoch": float(stage.best_epoch), "epochs": float(len(history)),
               "best_val_metric": stage.best_val_metric, "baseline_val_metric": context.baseline_value,
               "best_before": context.best_before, "target": metric.target}
    if len(after_best) >= context.patience and after_best[-1].train_loss < best.train_loss:
        numbers |= {"train_loss_at_best": best.train_loss, "train_loss_last": after_best[-1].train_loss,
                    "val_loss_at_best": best.val_loss, "val_loss_last": after_best[-1].val_loss}
        stalled = (f"train loss fell from {best.train_loss:.4f} to {after_best[-1].train_loss:.4f} while validation "
                   f"{metric.key} did not improve for {len(after_best)} epoch(s) after epoch {stage.best_epoch}")
        if not context.retried:
            return StageDecision("retry_regularized", f"overfitting: {stalled}; the best epoch is restored and the "
                                 "stage retried once with stronger regularization", numbers)
        return StageDecision("stop_overfit", f"overfitting again after the regularized retry: {stalled}; the best "
                             "epoch is kept and fine-tuning stops", numbers)
    lagging = lagging_classes(best.val_scores, metric, classes)
    if lagging and not context.class_weights and context.may_weight_classes:
        return StageDecision("class_weights_on", f"lagging class(es): {lagging}; a class-weighted loss (inverse "
                             "frequency, clipped) is switched on for the next stage and the baseline head", numbers)
    decision = _progress(stage, context, metric, guard, guard_ok, numbers)
    if lagging and not context.class_weights:
        return replace(decision, reason=decision.reason + f"; lagging class(es): {lagging}, left unweighted "
                                                            "(finetune.class_weights: off)")
    return decision


def _progress(stage: FitResult, context: StageContext, metric: MetricSpec, guard: Guard | None, guard_ok: bool,
              numbers: dict[str, float]) -> StageDecision:
    """No gain, lock in or unfreeze: what the metric's progress says once overfitting and a lagging
    class have been ruled out."""

    def beats(value: float, ok: bool, incumbent: float, incumbent_ok: bool) -> bool:
        if ok != incumbent_ok:
            return ok
        return is_improvement(value, incumbent + context.min_delta, metric)

    best = stage.history[stage.best_epoch - 1]
    improved = beats(stage.best_val_metric, guard_ok, context.best_before, context.best_before_guard_ok)
    if context.stage_number == 1 and not beats(stage.best_val_metric, guard_ok, context.baseline_value,
                                               context.baseline_guard_ok):
        still_learning = too_short_to_tell(stage)
        if still_learning and not context.extended:
            return StageDecision("extend_stage", f"no gain over the frozen baseline yet ({stage.best_val_metric:.4f} "
                                 f"vs {context.baseline_value:.4f}), but the stage was too short to tell: "
                                 f"{still_learning}; it runs once more, {len(stage.history)} more epoch(s) from its "
                                 "own best weights, before the base model is called unfit",
                                 numbers | {"extra_epochs": float(len(stage.history))})
        return StageDecision("stop_no_gain", f"no gain over the frozen baseline ({stage.best_val_metric:.4f} vs "
                             f"{context.baseline_value:.4f}): the base model is likely unfit for this data; the "
                             "baseline is kept", numbers)
    target_met = ((guard_ok and meets_target(stage.best_val_metric, metric))
                  or (context.best_before_guard_ok and meets_target(context.best_before, metric)))
    if guard is not None:
        numbers |= {"guard_floor": guard.floor, "guard_value": best.val_scores[guard.key]}
    if not improved:
        verdict = "the target is met" if target_met else "the target is not met"
        return StageDecision("lock_in" if target_met else "stop_stalled",
                             f"validation {metric.key} stopped improving ({stage.best_val_metric:.4f}, best so far "
                             f"{context.best_before:.4f}) and {verdict}: the best model so far is kept", numbers)
    if context.groups_left == 0:
        return StageDecision("lock_in", f"every layer group is unfrozen; validation {metric.key} "
                             f"{stage.best_val_metric:.4f} is the best so far and is kept", numbers)
    what = ("the target is met but the metric still improves" if target_met
            else f"train and validation improve together (validation {metric.key} {context.best_before:.4f} -> "
                 f"{stage.best_val_metric:.4f}) below the target {metric.target:g}")
    return StageDecision("unfreeze_next", f"{what}: unfreeze the next layer group(s)", numbers)


def too_short_to_tell(stage: FitResult) -> str:
    """'' or why the stage's curves had not settled: the best epoch is the last one, or the last
    epoch still cut the training loss by STILL_FALLING or more."""
    history = stage.history
    if stage.best_epoch == len(history):
        return f"its best epoch is its last ({stage.best_epoch} of {len(history)})"
    if len(history) >= 2 and history[-1].train_loss <= (1 - STILL_FALLING) * history[-2].train_loss:
        return (f"its training loss still fell {1 - history[-1].train_loss / history[-2].train_loss:.0%} in the last "
                "epoch")
    return ""


def capped_by_max_stages(decision: StageDecision, max_stages: int) -> StageDecision:
    """The decision carried out when `decision` asks for another stage but `finetune.max_stages`
    stages have run: stop, with what the curves alone said kept in the reason (a class-weighted
    loss they switched on still re-fits the baseline head: that costs no stage)."""
    refit = ("; the baseline head is still re-fit with the class-weighted loss"
             if decision.action == "class_weights_on" else "")
    return StageDecision("stop_max_stages", f"finetune.max_stages ({max_stages}) is reached, so fine-tuning stops "
                         f"here; the curves alone said `{decision.action}`: {decision.reason}{refit}",
                         decision.numbers | {"max_stages": float(max_stages)})


def lagging_classes(val_scores: dict[str, float], metric: MetricSpec, classes: list[str]) -> str:
    """'' or the classes that lag, in words: a recall well below the mean recall, or the contract's
    own class below target while every other class reaches it."""
    recalls = {c: val_scores[class_metric_key("recall", c)] for c in classes}
    mean_recall = sum(recalls.values()) / len(recalls)
    lagging = [f"{c} (recall {r:.2f}, mean {mean_recall:.2f})" for c, r in recalls.items()
               if r < mean_recall - LAGGING_CLASS_GAP]
    if metric.class_name and not lagging:
        own = val_scores[metric.key]
        others = [val_scores[class_metric_key(metric.name, c)] for c in classes if c != metric.class_name]
        if own < metric.target and all(score >= metric.target for score in others):
            lagging = [f"{metric.class_name} ({metric.key} {own:.2f} below the target {metric.target:g} while "
                       "every other class reaches it)"]
    return ", ".join(lagging)
