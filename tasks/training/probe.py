"""The probe: a new linear head fit on a frozen backbone's cached embeddings, best epoch on
validation (for a classic family: a logistic regression on its fitted features, C chosen on
validation). It is the feature-extraction baseline (step 5), and the score the base-model
tournament (step 4) ranks every candidate by, with the same settings and seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tasks.config.spec import TrainSpec
from tasks.models.classifier import HeadShape
from tasks.training.fit import FitResult
from tasks.training.metrics import Contract

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Probe:
    result: FitResult
    head: torch.nn.Module
    shape: HeadShape  # which head `train.head` chose (auto: the better on validation)
    computed: int     # embeddings (or classic feature rows) computed, and reused from the cache
    reused: int
    choice: str = ""  # auto: the two heads' validation scores, in words


def probe_head(backbone: Any, examples: dict[str, pd.DataFrame], classes: list[str], train: TrainSpec,
               contract: Contract, device: torch.device, workdir: Path, num_workers: int = 0,
               class_weights: bool = False) -> Probe:
    """Fit the head on `examples["train"]`, keep its best epoch on `examples["val"]` (input and
    label columns, indexed by example id). Embeddings come from the content-addressed cache under
    `workdir` (computed once per model, weights and preprocessing). `train.head: auto` fits a
    linear and an MLP head on them and keeps the better on validation (a tie keeps linear). A
    classic family (`LEARNS_FEATURES`) is fitted on the training inputs first and gets a logistic
    regression with its C chosen on validation instead (`tasks.training.linear_head`)."""
    from tasks.models.classifier import LINEAR, class_indices
    from tasks.models.features import cached_embeddings, open_cache

    if backbone.LEARNS_FEATURES:
        from tasks.training.linear_head import probe_classic

        linear, computed, reused = probe_classic(backbone, examples, classes, contract, workdir, train.seed,
                                                 class_weights)
        print(f"{backbone.spec.describe()}: {backbone.dim} features fitted on {len(examples['train'])} training "
              f"examples; logistic regression C={linear.C:g} chosen on validation "
              f"({', '.join(f'C={c:g}: {v:.4f}' for c, v in linear.sweep.items())})")
        return Probe(linear.result, linear.head, LINEAR, computed, reused)
    cache = open_cache(workdir, backbone)
    features, computed = {}, 0
    for name, frame in examples.items():
        embeddings, newly = cached_embeddings(cache, backbone, list(frame.index), list(frame["input"]),
                                              train.batch_size, num_workers)
        features[name], computed = torch.from_numpy(embeddings), computed + newly
    reused = sum(len(f) for f in examples.values()) - computed
    print(f"Embeddings: {computed} computed, {reused} reused from the cache")
    targets = {name: class_indices(frame["label"], classes) for name, frame in examples.items()}
    mlp = HeadShape("mlp", train.mlp_hidden, train.mlp_dropout)
    shapes = {"linear": [LINEAR], "mlp": [mlp], "auto": [LINEAR, mlp]}[train.head]
    fitted = [(shape, *_fit_head(shape, backbone, features, targets, classes, train, contract, device, class_weights))
              for shape in shapes]
    best = fitted[0]
    for candidate in fitted[1:]:
        if contract.better(candidate[1].best.val_scores, best[1].best.val_scores):
            best = candidate
    choice = ""
    if len(fitted) > 1:
        choice = (f"train.head auto: {best[0].describe()} kept ("
                  + ", ".join(f"{shape.kind} {result.best_val_metric:.4f}" for shape, result, _ in fitted)
                  + f" on validation {contract.metric.key})")
        print(choice)
    return Probe(best[1], best[2], best[0], computed, reused, choice)


def _fit_head(shape: HeadShape, backbone: Any, features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
              classes: list[str], train: TrainSpec, contract: Contract, device: torch.device,
              class_weights: bool) -> tuple[FitResult, torch.nn.Module]:
    from tasks.models.classifier import new_head
    from tasks.models.loader import Batches
    from tasks.training.fit import class_weights_for, fit

    head = new_head(backbone.dim, len(classes), train.seed, shape)
    weights = class_weights_for(targets["train"], len(classes)) if class_weights else None
    result = fit(head, [head], Batches(features["train"], targets["train"], train.batch_size),
                 Batches(features["val"], targets["val"], 1024),
                 lr=train.head_learning_rate, weight_decay=train.weight_decay,
                 epochs=train.head_epochs, patience=train.head_patience,
                 metric=contract.metric, guard=contract.guard, classes=classes, seed=train.seed,
                 description=f"{backbone.spec.name} {shape.kind} head" + (" (class-weighted)" if class_weights else ""),
                 class_weights=weights, device=device)
    return result, head
