"""The one training loop, used for the head on cached embeddings and for fine-tuning alike.

Each epoch trains the given modules, then scores the validation split with the declared metric;
the best epoch's weights are kept and training stops after `patience` epochs without gain.
Frozen modules stay in eval mode, and BatchNorm layers keep their pretrained statistics.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tasks.config.spec import MetricSpec
from tasks.models.classifier import predict_proba
from tasks.models.devices import autocast, to_device
from tasks.models.loader import Batches
from tasks.training.metrics import Contract, Guard, classification_metrics


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_scores: dict[str, float]
    val_metric: float


@dataclass
class FitResult:
    history: list[EpochRecord]
    best_epoch: int
    best_val_metric: float
    stopped_early: bool
    best_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    # The last finished epoch, kept beside the best so a killed run could resume from it.
    last_state: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch - 1]


def fit(model: nn.Module, trainable: list[nn.Module], train: Batches, val: Batches, *, lr: float,
        weight_decay: float, epochs: int, patience: int, metric: MetricSpec, classes: list[str],
        seed: int, description: str, class_weights: torch.Tensor | None = None,
        show_batches: bool = False, guard: Guard | None = None, lr_scales: Sequence[float] | None = None,
        warmup: float = 0.0, label_smoothing: float = 0.0, min_delta: float = 0.0,
        device: torch.device | None = None, epochs_folder: Path | None = None) -> FitResult:
    """Train `trainable` inside `model`; keep and restore the best validation epoch.

    `lr_scales` (one per trainable module, default 1) give discriminative learning rates: the head
    at `lr`, deeper layer groups lower. The best epoch is the best on the declared metric among
    epochs that keep the guard (`Contract.better`); a gain under `min_delta` is no gain.

    With `epochs_folder`, every finished epoch is saved there (`tasks.training.epoch_checkpoint`),
    and a fit that finds one there continues after it: a killed stage loses at most one epoch."""
    from tasks.training.epoch_checkpoint import EpochState, latest_epoch, save_epoch
    from tasks.training.rng import capture_rng, restore_rng

    contract = Contract(metric, guard)
    device = device or torch.device("cpu")
    model.to(device)
    class_weights = class_weights.to(device) if class_weights is not None else None
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    scales = list(lr_scales) if lr_scales is not None else [1.0] * len(trainable)
    optimizer = torch.optim.AdamW(parameter_groups(trainable, scales, lr, weight_decay))
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for parameter in parameters:
        parameter.requires_grad_(True)
    scheduler = warmup_cosine(optimizer, max(1, epochs * len(train)), warmup)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
    history: list[EpochRecord] = []
    best_state, best_scores, best_epoch, stale = copy.deepcopy(model.state_dict()), None, 0, 0
    first = 1
    saved = latest_epoch(epochs_folder) if epochs_folder else None
    if saved:
        model.load_state_dict(saved.weights)
        optimizer.load_state_dict(saved.optimizer)
        scheduler.load_state_dict(saved.scheduler)
        restore_rng(saved.rng, {"shuffle": generator})
        history, best_state, best_scores = saved.history, saved.best_state, saved.best_scores
        best_epoch, stale, first = saved.best_epoch, saved.stale, saved.epoch + 1
        print(f"{description}: resumed after epoch {saved.epoch} (its checkpoint in {epochs_folder})")
    epoch_bar = tqdm(range(first, epochs + 1), desc=description, unit="epoch", disable=show_batches)
    for epoch in epoch_bar:
        if stale >= patience:
            break
        _train_mode(model, trainable)
        losses = []
        batches = train.iterate(generator)
        if show_batches:
            batches = tqdm(batches, total=len(train), desc=f"{description} epoch {epoch}/{epochs}", unit="batch")
        for inputs, targets in batches:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                logits = model(to_device(inputs, device))
            loss = loss_fn(logits.float(), targets.to(device))
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        record = _validate(model, val, class_weights, contract, classes, epoch, float(np.mean(losses)))
        history.append(record)
        if contract.better(record.val_scores, best_scores, min_delta if best_scores is not None else 0.0):
            best_state, best_scores, best_epoch, stale = copy.deepcopy(model.state_dict()), record.val_scores, epoch, 0
        else:
            stale += 1
        if epochs_folder:
            save_epoch(epochs_folder, EpochState(
                epoch, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(),
                capture_rng({"shuffle": generator}), history, best_state, best_scores, best_epoch, stale))
    last_state = {"weights": copy.deepcopy(model.state_dict()), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "epoch": len(history),
                  "rng": capture_rng({"shuffle": generator})}
    model.load_state_dict(best_state)
    model.eval()
    for parameter in parameters:
        parameter.requires_grad_(False)
    assert best_scores is not None, "fit ran no epoch"  # epochs >= 1 is checked by the spec
    return FitResult(history, best_epoch, contract.value(best_scores), len(history) < epochs, best_state, last_state)


NO_DECAY_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.Embedding)


def parameter_groups(modules: Sequence[nn.Module], scales: Sequence[float], lr: float,
                     weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups per module (its lr = `lr` x its scale): weights with decay, and biases and
    normalization parameters without (decaying a norm's scale or a bias only shrinks it towards
    a value nothing asked for)."""
    groups = []
    for module, scale in zip(modules, scales, strict=True):
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for layer in module.modules():
            for name, parameter in layer.named_parameters(recurse=False):
                (no_decay if isinstance(layer, NO_DECAY_LAYERS) or name == "bias" else decay).append(parameter)
        groups += [{"params": decay, "lr": lr * scale, "weight_decay": weight_decay},
                   {"params": no_decay, "lr": lr * scale, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first `warmup` fraction of the steps (freshly unfrozen layers meet
    a head trained without them: large early steps would undo pretraining), then cosine decay to 0."""
    import math

    warm = round(steps * warmup)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weights_for(targets: torch.Tensor, n_classes: int, clip: float = 10.0) -> torch.Tensor:
    """Inverse-frequency class weights (n / (k x n_c)), clipped to [1/clip, clip] so one tiny class
    cannot dominate the loss; a class absent from training gets the clip."""
    counts = torch.bincount(targets, minlength=n_classes).double()
    weights = len(targets) / (n_classes * counts.clamp_min(1e-9))
    return weights.clamp(1.0 / clip, clip).float()


def _train_mode(model: nn.Module, trainable: list[nn.Module]) -> None:
    """Train mode for the trainable modules only, and BatchNorm in inference mode everywhere.

    BatchNorm keeps its pretrained running statistics even where unfrozen (its affine weights
    still learn): switching it to batch statistics shifts every feature the head was trained on
    and, with small batches, wipes out the baseline in the first epoch (measured on the demo).
    """
    model.eval()
    for module in trainable:
        module.train()
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()


def _validate(model: nn.Module, val: Batches, class_weights: torch.Tensor | None, contract: Contract,
              classes: list[str], epoch: int, train_loss: float) -> EpochRecord:
    """Validation loss is the plain (weighted) cross-entropy, without label smoothing, so stages
    trained with and without it stay comparable."""
    probabilities = torch.from_numpy(predict_proba(model, val))
    val_loss = nn.functional.nll_loss(torch.log(probabilities.clamp_min(1e-12)), val.targets,
                                      weight=class_weights.cpu() if class_weights is not None else None).item()
    scores = classification_metrics(val.targets.numpy(), probabilities.argmax(1).numpy(), classes)
    return EpochRecord(epoch, train_loss, val_loss, scores, contract.value(scores))
