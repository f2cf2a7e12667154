"""The one training loop, on small synthetic problems (the decisions: test_stage_decisions.py)."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from tasks.config.spec import MetricSpec
from tasks.models.classifier import new_head, predict_proba
from tasks.models.loader import Batches
from tasks.training.fit import FitResult, _train_mode, fit

ACCURACY = MetricSpec(name="accuracy", target=0.9)


def separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    features = torch.randn(n, 4, generator=generator) + labels[:, None] * 3.0
    return features, labels


@dataclass
class FlippedAfterFirstEpoch(Batches):
    """Training data whose labels invert after the first epoch: later epochs unlearn the task,
    so the first epoch is strictly the best one on validation, at an ordinary learning rate."""

    epochs_served: int = 0

    def iterate(self, generator=None):
        self.epochs_served += 1
        for inputs, targets in super().iterate(generator):
            yield inputs, (1 - targets if self.epochs_served > 1 else targets)


def fit_head(head: nn.Module, train: Batches, val: Batches, *, epochs: int, patience: int) -> FitResult:
    return fit(head, [head], train, val, lr=0.05, weight_decay=0.0, epochs=epochs, patience=patience,
               metric=ACCURACY, classes=["a", "b"], seed=0, description="test")


def accuracy(model: nn.Module, batches: Batches) -> float:
    predicted = torch.from_numpy(predict_proba(model, batches).argmax(1))
    return (predicted == batches.targets).double().mean().item()


def test_fit_learns_and_refreezes():
    head = new_head(4, 2, seed=0)
    result = fit_head(head, Batches(*separable(200, 0), 16), Batches(*separable(100, 1), 64), epochs=6, patience=6)
    assert result.best_val_metric >= 0.9 and len(result.history) == 6 and not result.stopped_early
    assert not any(p.requires_grad for p in head.parameters())


def test_fit_restores_the_best_epoch_not_the_last():
    head = new_head(4, 2, seed=0)
    epoch_weights: list[dict[str, torch.Tensor]] = []

    def record_weights(inputs):  # validation prepares one batch per epoch, with that epoch's weights
        epoch_weights.append({key: value.clone() for key, value in head.state_dict().items()})
        return inputs

    val = Batches(*separable(100, 1), 100, record_weights)
    result = fit_head(head, FlippedAfterFirstEpoch(*separable(200, 0), 16), val, epochs=5, patience=5)
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5] and len(epoch_weights) == 5
    assert result.best_epoch == 1 and result.history[0].val_metric > 0.8 and result.history[-1].val_metric < 0.5
    best, last = epoch_weights[0], epoch_weights[-1]
    assert all(torch.equal(head.state_dict()[key], best[key]) for key in best)
    assert not torch.equal(head.weight, last["weight"])
    assert accuracy(head, val) == pytest.approx(result.best_val_metric) == pytest.approx(result.history[0].val_metric)


def test_fit_stops_after_patience_without_gain():
    head = new_head(4, 2, seed=0)
    result = fit_head(head, FlippedAfterFirstEpoch(*separable(200, 0), 16), Batches(*separable(100, 1), 100),
                      epochs=20, patience=2)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_batchnorm_keeps_pretrained_statistics_while_its_block_trains():
    block = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model = nn.Sequential(nn.Linear(4, 4), block)
    _train_mode(model, [block])
    assert block[0].training and not block[1].training and not model[0].training


def with_pretrained_statistics(norm: nn.BatchNorm1d, seed: int) -> nn.BatchNorm1d:
    """Running statistics unlike both the defaults and the data, so any update would show."""
    generator = torch.Generator().manual_seed(seed)
    norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator))
    norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
    norm.num_batches_tracked.fill_(1000)
    return norm


def test_fit_trains_only_the_trainable_block_and_no_batchnorm_statistics_move():
    torch.manual_seed(0)
    frozen = nn.Sequential(nn.Linear(4, 8), with_pretrained_statistics(nn.BatchNorm1d(8), 1), nn.ReLU())
    block = nn.Sequential(nn.Linear(8, 8), with_pretrained_statistics(nn.BatchNorm1d(8), 2), nn.ReLU())
    head = nn.Linear(8, 2)
    model = nn.Sequential(frozen, block, head)
    frozen.requires_grad_(False)  # as Backbone.freeze leaves the groups that are not unfrozen
    before = {key: value.clone() for key, value in model.state_dict().items()}
    result = fit(model, [block, head], Batches(*separable(200, 0), 16), Batches(*separable(100, 1), 100),
                 lr=0.05, weight_decay=1e-4, epochs=3, patience=3, metric=ACCURACY, classes=["a", "b"], seed=0,
                 description="test")
    after = model.state_dict()
    assert result.best_val_metric >= 0.9
    assert all(torch.equal(after[f"0.{key}"], before[f"0.{key}"]) for key in frozen.state_dict())
    for norm in ("0.1", "1.1"):  # the frozen part's BatchNorm and the trainable block's
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(after[f"{norm}.{key}"], before[f"{norm}.{key}"]), f"{norm}.{key} moved"
    for key in ("1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias"):
        assert not torch.equal(after[key], before[key]), f"{key} did not learn"


class KilledAt(Exception):
    pass


@dataclass
class DiesAtEpoch(Batches):
    """Training batches whose `die_at`-th epoch raises before its first batch: a kill between epochs."""

    die_at: int = 0
    epochs_served: int = 0

    def iterate(self, generator=None):
        self.epochs_served += 1
        if self.epochs_served == self.die_at:
            raise KilledAt(f"killed before epoch {self.die_at}")
        yield from super().iterate(generator)


def noisy_model() -> nn.Module:
    """A small net with dropout, so the global random state matters as much as the shuffle generator."""
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))


def fit_noisy(model: nn.Module, train: Batches, val: Batches, folder=None, patience: int = 10) -> FitResult:
    return fit(model, [model], train, val, lr=0.05, weight_decay=0.01, epochs=6, patience=patience,
               metric=ACCURACY, classes=["a", "b"], seed=3, description="test", warmup=0.2, epochs_folder=folder)


def test_a_fit_killed_between_epochs_resumes_from_its_last_epoch_exactly_as_an_uninterrupted_one(tmp_path):
    from tasks.training.epoch_checkpoint import latest_epoch

    features, labels = separable(120, 0)
    labels = torch.where(torch.rand(120, generator=torch.Generator().manual_seed(1)) < 0.2, 1 - labels, labels)
    val = Batches(*separable(60, 1), 64)
    whole_model = noisy_model()
    whole = fit_noisy(whole_model, Batches(features, labels, 16), val)
    import random

    import numpy as np

    killed_model = noisy_model()
    with pytest.raises(KilledAt):
        fit_noisy(killed_model, DiesAtEpoch(features, labels, 16, die_at=4), val, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0003.pt"]  # only the last finished epoch is kept
    assert latest_epoch(tmp_path).epoch == 3
    torch.manual_seed(999), np.random.seed(999), random.seed(999)  # the new process's states differ
    resumed_model = noisy_model()  # fresh weights: everything must come from the checkpoint
    resumed = fit_noisy(resumed_model, Batches(features, labels, 16), val, tmp_path)
    assert [r.epoch for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert [r.train_loss for r in resumed.history] == pytest.approx([r.train_loss for r in whole.history], abs=1e-6)
    assert [r.val_loss for r in resumed.history] == pytest.approx([r.val_loss for r in whole.history], abs=1e-6)
    assert resumed.best_epoch == whole.best_epoch
    for key, value in whole_model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value, atol=1e-6, rtol=0)
    assert whole.history[3].train_loss != whole.history[2].train_loss  # the epochs after the kill really trained


def test_a_fit_killed_after_its_patience_ran_out_runs_no_further_epoch(tmp_path):
    """The checkpoint of the epoch that exhausted the patience ends the fit: resuming from it runs
    nothing more and returns the same best epoch and weights."""
    def run(head: nn.Module, train: Batches) -> FitResult:
        return fit(head, [head], train, Batches(*separable(100, 1), 100), lr=0.05, weight_decay=0.0, epochs=20,
                   patience=2, metric=ACCURACY, classes=["a", "b"], seed=0, description="test",
                   epochs_folder=tmp_path)

    first_head = new_head(4, 2, seed=0)
    first = run(first_head, FlippedAfterFirstEpoch(*separable(200, 0), 16))
    assert first.stopped_early and len(first.history) == 3 and [p.name for p in tmp_path.iterdir()] == ["epoch-0003.pt"]
    again_head = new_head(4, 2, seed=5)
    again = run(again_head, DiesAtEpoch(*separable(200, 0), 16, die_at=1))  # any epoch run would raise
    assert len(again.history) == 3 and again.best_epoch == 1 and again.stopped_early
    assert torch.equal(again_head.weight, first_head.weight)
