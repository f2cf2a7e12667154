"""The one training loop and the curve diagnosis, on small synthetic problems."""

import pytest
import torch
from torch import nn

from tasks.diagnose import diagnose_stage
from tasks.spec import MetricSpec
from tasks.train import Batches, EpochRecord, FitResult, _train_mode, fit, new_head, predict_proba

ACCURACY = MetricSpec(name="accuracy", target=0.9)


def separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    features = torch.randn(n, 4, generator=generator) + labels[:, None] * 3.0
    return features, labels


def test_fit_learns_restores_the_best_epoch_and_refreezes():
    x_train, y_train = separable(200, 0)
    x_val, y_val = separable(100, 1)
    head = new_head(4, 2, seed=0)
    result = fit(head, [head], Batches(x_train, y_train, 16), Batches(x_val, y_val, 64), lr=0.05,
                 weight_decay=0.0, epochs=6, patience=6, metric=ACCURACY, classes=["a", "b"], seed=0,
                 description="test")
    assert result.best_val_metric >= 0.9 and len(result.history) == 6
    assert result.best_val_metric == max(r.val_metric for r in result.history)
    restored = predict_proba(head, Batches(x_val, y_val, 64)).argmax(1)
    assert (torch.from_numpy(restored) == y_val).double().mean().item() == pytest.approx(result.best_val_metric)
    assert torch.equal(head.weight, result.best_state["weight"])
    assert not any(p.requires_grad for p in head.parameters())


def test_fit_stops_after_patience_without_gain():
    x, y = separable(64, 0)
    random_labels = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(3))
    head = new_head(4, 2, seed=0)
    result = fit(head, [head], Batches(x, random_labels, 16), Batches(x, y, 64), lr=1e-9, weight_decay=0.0,
                 epochs=20, patience=2, metric=ACCURACY, classes=["a", "b"], seed=0, description="test")
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_batchnorm_keeps_pretrained_statistics_while_its_block_trains():
    block = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model = nn.Sequential(nn.Linear(4, 4), block)
    _train_mode(model, [block])
    assert block[0].training and not block[1].training and not model[0].training


def record(epoch: int, train_loss: float, val_loss: float, val_metric: float) -> EpochRecord:
    return EpochRecord(epoch, train_loss, val_loss, {"recall_a": 0.95, "recall_b": 0.5}, val_metric)


def test_diagnosis_names_overfitting_early_stop_no_gain_and_a_lagging_class():
    history = [record(1, 0.5, 0.40, 0.80), record(2, 0.3, 0.45, 0.79), record(3, 0.1, 0.60, 0.78)]
    stage = FitResult(history, best_epoch=1, best_val_metric=0.80, stopped_early=True)
    diagnosis = diagnose_stage(stage, baseline_value=0.85, metric=ACCURACY, classes=["a", "b"])
    text = diagnosis.text()
    assert not diagnosis.keep_stage
    assert "overfitting after epoch 1" in text and "stopped early after 3 epoch(s)" in text
    assert "no gain over the frozen baseline" in text and "lagging class(es) by validation recall: b (0.50)" in text


def test_diagnosis_keeps_a_stage_that_beats_the_baseline():
    history = [record(1, 0.5, 0.40, 0.86), record(2, 0.4, 0.35, 0.90)]
    stage = FitResult(history, best_epoch=2, best_val_metric=0.90, stopped_early=False)
    diagnosis = diagnose_stage(stage, baseline_value=0.85, metric=ACCURACY, classes=["a", "b"])
    assert diagnosis.keep_stage and "overfitting" not in diagnosis.text()
