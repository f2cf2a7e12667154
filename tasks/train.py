"""The one training loop, used for the head on cached embeddings and for fine-tuning alike.

Each epoch trains the given modules, then scores the validation split with the declared metric;
the best epoch's weights are kept and training stops after `patience` epochs without gain.
Frozen modules stay in eval mode, and BatchNorm layers keep their pretrained statistics.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tasks.backbones import Backbone
from tasks.metrics import classification_metrics, contract_value, is_improvement
from tasks.spec import MetricSpec, ModelSpec


class Classifier(nn.Module):
    """Backbone encoder + linear head: raw inputs (preprocessed) -> class logits."""

    def __init__(self, backbone: Backbone, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.encoder = backbone.module  # registered so parameters and state_dict include it
        self.head = head

    def forward(self, batch: Any) -> torch.Tensor:
        return self.head(self.backbone.embed(batch))


@dataclass
class Batches:
    """Inputs and targets served in minibatches; `prepare` turns a slice of inputs into a batch."""

    inputs: Sequence[Any] | torch.Tensor
    targets: torch.Tensor
    batch_size: int
    prepare: Callable[[Any], Any] = lambda x: x

    def __len__(self) -> int:
        return (len(self.targets) + self.batch_size - 1) // self.batch_size

    def iterate(self, generator: torch.Generator | None = None) -> Iterator[tuple[Any, torch.Tensor]]:
        order = torch.randperm(len(self.targets), generator=generator) if generator else torch.arange(len(self.targets))
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            chunk: Any = (self.inputs[index] if isinstance(self.inputs, torch.Tensor)
                          else [self.inputs[i] for i in index.tolist()])
            yield self.prepare(chunk), self.targets[index]


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


def fit(model: nn.Module, trainable: list[nn.Module], train: Batches, val: Batches, *, lr: float,
        weight_decay: float, epochs: int, patience: int, metric: MetricSpec, classes: list[str],
        seed: int, description: str, class_weights: torch.Tensor | None = None,
        show_batches: bool = False) -> FitResult:
    """Train `trainable` inside `model`; keep and restore the best validation epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    parameters = [p for module in trainable for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    # Cosine decay to zero over the planned steps: late epochs make small, stable steps.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(train)))
    loss_fn = nn.CrossEntropyLoss(weight=class_weights)
    history: list[EpochRecord] = []
    best_state, best_value, best_epoch, stale = copy.deepcopy(model.state_dict()), None, 0, 0
    epoch_bar = tqdm(range(1, epochs + 1), desc=description, unit="epoch", disable=show_batches)
    for epoch in epoch_bar:
        _train_mode(model, trainable)
        losses = []
        batches = train.iterate(generator)
        if show_batches:
            batches = tqdm(batches, total=len(train), desc=f"{description} epoch {epoch}/{epochs}", unit="batch")
        for inputs, targets in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        record = _validate(model, val, loss_fn, metric, classes, epoch, float(np.mean(losses)))
        history.append(record)
        if is_improvement(record.val_metric, best_value, metric):
            best_state, best_value, best_epoch, stale = copy.deepcopy(model.state_dict()), record.val_metric, epoch, 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    for parameter in parameters:
        parameter.requires_grad_(False)
    assert best_value is not None, "fit ran no epoch"  # epochs >= 1 is checked by the spec
    return FitResult(history, best_epoch, best_value, len(history) < epochs, best_state)


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


def predict_proba(model: nn.Module, batches: Batches) -> np.ndarray:
    """Class probabilities [n, classes] in input order."""
    model.eval()
    with torch.inference_mode():
        chunks = [torch.softmax(model(inputs), dim=1) for inputs, _ in batches.iterate()]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


def _validate(model: nn.Module, val: Batches, loss_fn: nn.Module, metric: MetricSpec, classes: list[str],
              epoch: int, train_loss: float) -> EpochRecord:
    probabilities = torch.from_numpy(predict_proba(model, val))
    val_loss = nn.functional.nll_loss(torch.log(probabilities.clamp_min(1e-12)), val.targets,
                                      weight=getattr(loss_fn, "weight", None)).item()
    scores = classification_metrics(val.targets.numpy(), probabilities.argmax(1).numpy(), classes)
    return EpochRecord(epoch, train_loss, val_loss, scores, contract_value(scores, metric))


def new_head(dim: int, n_classes: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(dim, n_classes)


def class_indices(labels: Sequence[str], classes: list[str]) -> torch.Tensor:
    """Labels -> their positions in `classes` (the order of the model's outputs)."""
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[label] for label in labels], dtype=torch.long)


def restore_classifier(model: ModelSpec, n_classes: int, checkpoint: Path) -> Classifier:
    """A saved stage (backbone + head state dict) on top of a freshly loaded backbone, frozen."""
    from tasks.backbones import load_backbone

    backbone = load_backbone(model)
    classifier = Classifier(backbone, nn.Linear(backbone.dim, n_classes))
    classifier.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    classifier.head.requires_grad_(False)
    classifier.eval()
    return classifier
