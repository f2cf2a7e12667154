"""The fine-tuning loop's pieces: parameter groups, the lr schedule, class weights, and the loop
acting on each decision (run with stand-in stages, so every branch is reached in milliseconds)."""

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import tasks.steps.learn as learn
from tasks.config.spec import FinetuneSpec, MetricSpec
from tasks.steps.learn import gradual_unfreezing
from tasks.steps.refs import StageResult
from tasks.steps.select import choose_stage
from tasks.training.fit import EpochRecord, class_weights_for, parameter_groups, warmup_cosine
from tasks.training.metrics import Contract, Guard

ACCURACY = MetricSpec(name="accuracy", target=0.9)


def test_parameter_groups_give_each_module_its_lr_and_spare_biases_and_norms_from_decay():
    deep, shallow = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    groups = parameter_groups([deep, shallow], [0.25, 1.0], lr=0.1, weight_decay=0.01)
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert by_id[id(deep[0].weight)] == (0.025, 0.01) and by_id[id(shallow[0].weight)] == (0.1, 0.01)
    for parameter in (deep[0].bias, deep[1].weight, deep[1].bias, shallow[0].bias, shallow[1].weight):
        assert by_id[id(parameter)][1] == 0.0
    assert len(by_id) == sum(1 for m in (deep, shallow) for _ in m.parameters())  # every parameter, once


def test_warmup_then_cosine_decay():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, steps=10, warmup=0.2)  # 2 warm-up steps
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1 / 3) and lrs[1] == pytest.approx(2 / 3) and lrs[2] == pytest.approx(1.0)
    assert all(later < earlier for earlier, later in itertools.pairwise(lrs[2:]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_class_weights_are_inverse_frequency_and_clipped():
    targets = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    weights = class_weights_for(targets, 4, clip=10.0)
    expected = [100 / (4 * 90), 100 / (4 * 9), 100 / (4 * 1), 10.0]  # n / (k n_c); absent class -> the clip
    assert weights.tolist() == pytest.approx([max(min(w, 10.0), 0.1) for w in expected])


def result(name: str, value: float, scores: dict[str, float] | None = None) -> StageResult:
    history = [EpochRecord(1, 0.5, 0.5, {"accuracy": value, **(scores or {})}, value)]
    return StageResult(name, "run", value, {"accuracy": value, **(scores or {})}, Path(f"{name}.pt"), "sha",
                       history, "", True, value >= 0.9, best_epoch=1)


def test_selection_keeps_the_guard_first_then_the_metric_ties_to_the_earlier():
    guarded = Contract(MetricSpec(name="recall", class_name="spam", target=0.9), Guard("precision_spam", 0.5, False))
    baseline = result("baseline", 0.0, {"recall_spam": 0.80, "precision_spam": 0.70})
    everything_spam = result("finetune-1", 0.0, {"recall_spam": 1.00, "precision_spam": 0.13})
    same = result("finetune-2", 0.0, {"recall_spam": 0.80, "precision_spam": 0.90})
    assert choose_stage([baseline, everything_spam, same], guarded).name == "baseline"
    better = result("finetune-3", 0.0, {"recall_spam": 0.85, "precision_spam": 0.60})
    assert choose_stage([baseline, everything_spam, same, better], guarded).name == "finetune-3"


class StandInStages:
    """Replaces the two training steps: each fine-tuning stage returns the next scripted curve."""

    def __init__(self, curves: list[tuple[list[float], list[float], dict[str, float]]]) -> None:
        self.curves, self.plans, self.refits = list(curves), [], 0

    def fine_tune_stage(self, spec, dataset, split, start, plan, tracking, contract):
        self.plans.append((plan, start.name))
        values, train_losses, scores = self.curves.pop(0)
        history = [EpochRecord(i + 1, loss, 0.5, {"accuracy": v, "recall_a": 0.8, "recall_b": 0.8, **scores}, v)
                   for i, (v, loss) in enumerate(zip(values, train_losses, strict=True))]
        best = max(range(len(values)), key=lambda i: (values[i], -i))
        return StageResult(plan.name, "run", values[best], history[best].val_scores, Path("x.pt"), "sha", history,
                           "", True, values[best] >= 0.9, best_epoch=best + 1, unfrozen_groups=plan.groups)

    def train_baseline(self, spec, dataset, split, tracking, start, contract, class_weights=False, prefix=""):
        self.refits += 1
        return result("baseline-weighted", 0.71, {"recall_a": 0.8, "recall_b": 0.8})


def run_loop(monkeypatch, curves, **finetune):
    stand_in, _, log = run_loop_logged(monkeypatch, curves, **finetune)
    return stand_in, _, [(d["stage"], d["action"]) for d in log.entries]


def run_loop_logged(monkeypatch, curves, **finetune):
    stand_in = StandInStages(curves)
    monkeypatch.setattr(learn, "fine_tune_stage", stand_in.fine_tune_stage)
    monkeypatch.setattr(learn, "train_baseline", stand_in.train_baseline)
    monkeypatch.setattr(learn, "_layer_groups_of", lambda spec: [None] * 5)
    spec = SimpleNamespace(finetune=FinetuneSpec(**finetune), metric=ACCURACY)
    baseline = result("baseline", 0.70, {"recall_a": 0.8, "recall_b": 0.8})
    stages, decisions = gradual_unfreezing(spec, SimpleNamespace(classes=("a", "b")), None, baseline, None, None,
                                           Contract(ACCURACY))
    return stand_in, stages, decisions


def test_improving_stages_unfreeze_deeper_from_the_best_so_far_until_max_stages(monkeypatch):
    curves = [([0.75, 0.80], [0.6, 0.5], {}), ([0.82, 0.85], [0.5, 0.4], {}), ([0.86, 0.87], [0.4, 0.3], {})]
    stand_in, _, log = run_loop(monkeypatch, curves, max_stages=3, groups_per_stage=2)
    assert [(p.name, p.groups, start) for p, start in stand_in.plans] == [
        ("finetune-1", 2, "baseline"), ("finetune-2", 4, "finetune-1"), ("finetune-3", 5, "finetune-2")]
    assert log == [("finetune-1", "unfreeze_next"), ("finetune-2", "unfreeze_next"), ("finetune-3", "lock_in")]


def test_max_stages_stops_the_loop_and_the_log_records_the_stop_with_what_the_curves_said(monkeypatch):
    curves = [([0.75, 0.80], [0.6, 0.5], {}), ([0.82, 0.85], [0.5, 0.4], {})]
    stand_in, _, log = run_loop_logged(monkeypatch, curves, max_stages=1)
    assert len(stand_in.plans) == 1 and [(d["stage"], d["action"]) for d in log.entries] == [
        ("finetune-1", "stop_max_stages")]
    entry = log.entries[0]
    assert entry["reason"].startswith("finetune.max_stages (1) is reached, so fine-tuning stops here")
    assert "the curves alone said `unfreeze_next`" in entry["reason"] and entry["numbers"]["max_stages"] == 1


def test_a_lagging_class_at_max_stages_still_refits_the_weighted_baseline_and_stops(monkeypatch):
    lagging = ([0.75, 0.80], [0.6, 0.5], {"recall_a": 0.95, "recall_b": 0.55})
    stand_in, stages, log = run_loop_logged(monkeypatch, [lagging], max_stages=1)
    assert [(d["stage"], d["action"]) for d in log.entries] == [("finetune-1", "stop_max_stages")]
    assert "`class_weights_on`" in log.entries[0]["reason"] and "still re-fit" in log.entries[0]["reason"]
    assert stand_in.refits == 1 and stages[-1].name == "baseline-weighted" and len(stand_in.plans) == 1


def test_overfitting_retries_the_same_depth_regularized_once_then_stops(monkeypatch):
    overfit = ([0.80, 0.78, 0.77], [0.5, 0.3, 0.2], {})
    stand_in, _, log = run_loop(monkeypatch, [overfit, overfit], max_stages=3)
    assert [(p.name, p.groups, p.regularized) for p, _ in stand_in.plans] == [
        ("finetune-1", 1, False), ("finetune-1-retry", 1, True)]
    assert log == [("finetune-1", "retry_regularized"), ("finetune-1-retry", "stop_overfit")]
    assert stand_in.plans[1][1] == "finetune-1"  # the retry starts from the restored best epoch


def test_a_lagging_class_turns_on_class_weights_for_the_next_stage_and_a_baseline_refit(monkeypatch):
    lagging = ([0.75, 0.80], [0.6, 0.5], {"recall_a": 0.95, "recall_b": 0.55})
    curves = [lagging, ([0.82, 0.84], [0.5, 0.4], {})]
    stand_in, stages, log = run_loop(monkeypatch, curves, max_stages=2)
    assert log[0] == ("finetune-1", "class_weights_on") and stand_in.refits == 1
    assert "baseline-weighted" in [s.name for s in stages]
    assert [(p.name, p.class_weights) for p, _ in stand_in.plans] == [("finetune-1", False), ("finetune-2", True)]


def test_class_weights_on_weights_every_stage_from_the_first_and_off_never_turns_them_on(monkeypatch):
    lagging = ([0.75, 0.80], [0.6, 0.5], {"recall_a": 0.95, "recall_b": 0.55})
    improving = ([0.82, 0.84], [0.5, 0.4], {})
    stand_in, _, log = run_loop(monkeypatch, [lagging, improving], max_stages=2, class_weights="on")
    assert [p.class_weights for p, _ in stand_in.plans] == [True, True] and stand_in.refits == 0
    assert [action for _, action in log] == ["unfreeze_next", "stop_max_stages"]
    stand_in, _, log = run_loop(monkeypatch, [lagging, improving], max_stages=2, class_weights="off")
    assert [p.class_weights for p, _ in stand_in.plans] == [False, False] and stand_in.refits == 0
    assert "class_weights_on" not in [action for _, action in log]


def test_no_gain_after_the_first_stage_keeps_the_baseline_and_stops(monkeypatch):
    stand_in, stages, log = run_loop(monkeypatch, [([0.70, 0.69], [0.6, 0.58], {})], max_stages=3)
    assert log == [("finetune-1", "stop_no_gain")] and len(stand_in.plans) == 1
    assert choose_stage(stages, Contract(ACCURACY)).name == "baseline"


def test_a_first_stage_too_short_to_tell_goes_on_from_its_own_weights_once(monkeypatch):
    """Its best epoch was its last: the same depth runs again from that stage (not from the better
    baseline), and only then is no gain called; an extension that gains unfreezes on as usual."""
    short = ([0.66, 0.69], [0.6, 0.55], {})
    stand_in, _, log = run_loop(monkeypatch, [short, ([0.69, 0.68], [0.5, 0.49], {})], max_stages=3)
    assert [(p.name, p.groups, p.extended, start) for p, start in stand_in.plans] == [
        ("finetune-1", 1, False, "baseline"), ("finetune-1-extended", 1, True, "finetune-1")]
    assert log == [("finetune-1", "extend_stage"), ("finetune-1-extended", "stop_no_gain")]
    stand_in, _, log = run_loop(monkeypatch, [short, ([0.72, 0.76], [0.5, 0.45], {}), ([0.8, 0.8], [0.4, 0.4], {})],
                                max_stages=2)
    assert log[:2] == [("finetune-1", "extend_stage"), ("finetune-1-extended", "unfreeze_next")]
    assert stand_in.plans[2][0].name == "finetune-2" and stand_in.plans[2][1] == "finetune-1-extended"


def test_no_stage_runs_when_the_baseline_meets_the_target_or_fine_tuning_is_off(monkeypatch):
    stand_in = StandInStages([])
    monkeypatch.setattr(learn, "fine_tune_stage", stand_in.fine_tune_stage)
    spec = SimpleNamespace(finetune=FinetuneSpec(), metric=ACCURACY)
    met = result("baseline", 0.95)
    _, decisions = gradual_unfreezing(spec, None, None, met, None, None, Contract(ACCURACY))
    assert [e["action"] for e in decisions.entries] == ["lock_in"] and "no fine-tuning stage runs" in \
        decisions.entries[0]["reason"]
    off = SimpleNamespace(finetune=FinetuneSpec(max_stages=0), metric=ACCURACY)
    _, decisions = gradual_unfreezing(off, None, None, result("baseline", 0.5), None, None, Contract(ACCURACY))
    assert "max_stages: 0" in decisions.entries[0]["reason"] and not stand_in.plans

