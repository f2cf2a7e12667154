"""The decision after a fine-tuning stage, on synthetic curves: every branch, and the order in
which they apply when several do (overfitting and a lagging class act first)."""

import pytest

from tasks.config.spec import MetricSpec
from tasks.decisions.diagnose import StageContext, decide_next_step, lagging_classes
from tasks.training.fit import EpochRecord, FitResult

ACCURACY = MetricSpec(name="accuracy", target=0.9)
CLASSES = ["a", "b"]
BALANCED = {"recall_a": 0.85, "recall_b": 0.83, "precision_a": 0.8, "precision_b": 0.8, "f1_a": 0.8, "f1_b": 0.8}


def stage(val_metrics: list[float], train_losses: list[float], scores: dict[str, float] | None = None) -> FitResult:
    """Curves of a stage; the best epoch is the first with the highest validation metric."""
    history = [EpochRecord(i + 1, train, 0.5, {**BALANCED, **(scores or {}), "accuracy": value}, value)
               for i, (value, train) in enumerate(zip(val_metrics, train_losses, strict=True))]
    best = max(range(len(val_metrics)), key=lambda i: (val_metrics[i], -i))
    return FitResult(history, best + 1, val_metrics[best], stopped_early=False)


def context(**changes) -> StageContext:
    values = dict(stage_number=1, baseline_value=0.70, best_before=0.70, patience=2, retried=False,
                  class_weights=False, groups_left=3)
    return StageContext(**{**values, **changes})


def test_improving_together_below_target_unfreezes_the_next_group():
    decision = decide_next_step(stage([0.75, 0.80, 0.82], [0.6, 0.5, 0.4]), context(), ACCURACY, CLASSES)
    assert decision.action == "unfreeze_next" and "0.7000 -> 0.8200" in decision.reason
    assert decision.numbers["best_val_metric"] == 0.82 and decision.numbers["best_epoch"] == 3


def test_overfitting_retries_once_with_regularization_then_stops():
    overfit = stage([0.80, 0.78, 0.77], [0.5, 0.3, 0.2])  # train keeps falling, validation peaked at epoch 1
    first = decide_next_step(overfit, context(), ACCURACY, CLASSES)
    assert first.action == "retry_regularized" and "after epoch 1" in first.reason
    assert first.numbers["train_loss_last"] == 0.2
    assert decide_next_step(overfit, context(retried=True), ACCURACY, CLASSES).action == "stop_overfit"


def test_a_stall_shorter_than_patience_is_not_overfitting():
    short = stage([0.78, 0.80, 0.79], [0.5, 0.3, 0.2])  # one epoch after the best, patience 2
    assert decide_next_step(short, context(), ACCURACY, CLASSES).action == "unfreeze_next"
    flat_train = stage([0.80, 0.78, 0.77], [0.5, 0.5, 0.6])  # validation stalls but train does not improve
    assert decide_next_step(flat_train, context(), ACCURACY, CLASSES).action != "retry_regularized"


def test_no_gain_over_the_baseline_after_the_first_stage_stops():
    settled = stage([0.70, 0.69], [0.5, 0.47])  # best epoch not the last, training loss no longer falling fast
    decision = decide_next_step(settled, context(), ACCURACY, CLASSES)
    assert decision.action == "stop_no_gain" and "base model is likely unfit" in decision.reason
    later = decide_next_step(stage([0.74, 0.75], [0.5, 0.45]), context(stage_number=2, best_before=0.80),
                             ACCURACY, CLASSES)
    # A later stage stalling below the target is another event: the base model did gain over its
    # baseline, so a tournament must not call it unfit and move on to its next candidate.
    assert later.action == "stop_stalled" and "stopped improving" in later.reason
    assert "unfit" not in later.reason


def test_a_lagging_class_switches_class_weights_on_once():
    lagging = {"recall_a": 0.95, "recall_b": 0.55}
    decision = decide_next_step(stage([0.75, 0.80], [0.6, 0.5], lagging), context(), ACCURACY, CLASSES)
    assert decision.action == "class_weights_on" and "b (recall 0.55" in decision.reason
    already = decide_next_step(stage([0.75, 0.80], [0.6, 0.5], lagging), context(class_weights=True),
                               ACCURACY, CLASSES)
    assert already.action == "unfreeze_next"


def test_under_class_weights_off_a_lagging_class_is_named_but_the_curves_decide():
    lagging = {"recall_a": 0.95, "recall_b": 0.55}
    decision = decide_next_step(stage([0.75, 0.80], [0.6, 0.5], lagging), context(may_weight_classes=False),
                                ACCURACY, CLASSES)
    assert decision.action == "unfreeze_next"
    assert "b (recall 0.55" in decision.reason and "finetune.class_weights: off" in decision.reason


def test_overfitting_acts_before_a_lagging_class_and_a_lagging_class_before_no_gain():
    lagging = {"recall_a": 0.95, "recall_b": 0.55}
    overfit_and_lagging = stage([0.80, 0.78, 0.77], [0.5, 0.3, 0.2], lagging)
    assert decide_next_step(overfit_and_lagging, context(), ACCURACY, CLASSES).action == "retry_regularized"
    no_gain_and_lagging = stage([0.68, 0.69], [0.5, 0.45], lagging)
    assert decide_next_step(no_gain_and_lagging, context(), ACCURACY, CLASSES).action == "class_weights_on"


def test_target_met_and_no_longer_improving_locks_in():
    decision = decide_next_step(stage([0.90, 0.91], [0.5, 0.45]), context(stage_number=2, best_before=0.93),
                                ACCURACY, CLASSES)
    assert decision.action == "lock_in" and "the target is met" in decision.reason


def test_target_met_and_still_improving_unfreezes_until_no_group_is_left():
    improving = stage([0.91, 0.94], [0.5, 0.45])
    assert decide_next_step(improving, context(best_before=0.85), ACCURACY, CLASSES).action == "unfreeze_next"
    last = decide_next_step(improving, context(best_before=0.85, groups_left=0), ACCURACY, CLASSES)
    assert last.action == "lock_in" and "every layer group is unfrozen" in last.reason


@pytest.mark.parametrize(("spam", "ham", "expected"), [(0.70, 0.95, True), (0.70, 0.85, False), (0.92, 0.95, False)])
def test_the_contracts_own_class_lags_when_only_it_misses_the_target(spam, ham, expected):
    metric = MetricSpec(name="f1", **{"class": "spam"}, target=0.9)
    scores = {"recall_ham": 0.9, "recall_spam": 0.85, "f1_spam": spam, "f1_ham": ham}  # recalls close: no gap
    assert bool(lagging_classes(scores, metric, ["ham", "spam"])) is expected


@pytest.mark.parametrize("curves,why", [
    (([0.66, 0.70], [0.6, 0.55]), "its best epoch is its last (2 of 2)"),
    (([0.70, 0.69], [0.6, 0.5]), "its training loss still fell 17% in the last epoch"),
])
def test_a_first_stage_too_short_to_tell_runs_once_more_before_no_gain_is_called(curves, why):
    short = stage(*curves)
    first = decide_next_step(short, context(), ACCURACY, CLASSES)
    assert first.action == "extend_stage" and why in first.reason and first.numbers["extra_epochs"] == 2
    assert "2 more epoch(s) from its own best weights" in first.reason
    again = decide_next_step(short, context(extended=True), ACCURACY, CLASSES)
    assert again.action == "stop_no_gain"  # extended once only
