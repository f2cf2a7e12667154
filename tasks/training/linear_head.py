"""The classic families' head: a logistic regression on the fitted features, its regularization
chosen on validation by the contract, then written into the same `nn.Linear` every other model's
head is, so checkpoints, the operating point, the test read and serving treat it alike.

scikit-learn's LogisticRegression (lbfgs, multinomial) fits sparse tf-idf rows directly, in seconds,
where the torch probe would need them dense. The features are cached per fitted state and split
part under `<workdir>/classic_features/` (sparse .npz or dense .npy, written atomically), and so is
each fit (`fit-*.pt`: the head, C and the sweep, loaded with weights_only), keyed by everything it
was fitted from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tasks.training.fit import EpochRecord, FitResult
from tasks.training.metrics import Contract, classification_metrics

if TYPE_CHECKING:
    import pandas as pd

# Inverse regularization strengths tried, strongest first: on a tie the simpler model stays.
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
MAX_ITER = 1000


@dataclass(frozen=True)
class LinearFit:
    result: FitResult
    head: nn.Linear
    C: float
    sweep: dict[float, float]  # C -> the declared metric on validation


def probe_classic(backbone: Any, examples: dict[str, pd.DataFrame], classes: list[str], contract: Contract,
                  workdir: Path, seed: int, class_weights: bool = False) -> tuple[LinearFit, int, int]:
    """Fit the backbone's features on `examples["train"]` only, then the head on them, C chosen
    on `examples["val"]`. Returns the fit, and how many feature rows were computed and reused."""
    from tasks.models.classifier import class_indices

    backbone.reuse_embeddings(workdir, [i for frame in examples.values() for i in frame.index],  # a hybrid's base
                              [x for frame in examples.values() for x in frame["input"]])
    backbone.fit_to(list(examples["train"]["input"]))
    rows, computed = {}, 0
    for name, frame in examples.items():
        rows[name], newly = cached_features(workdir, backbone, list(frame.index), list(frame["input"]))
        computed += newly
    reused = sum(len(frame) for frame in examples.values()) - computed
    targets = {name: class_indices(frame["label"], classes).numpy() for name, frame in examples.items()}
    memo = fit_memo(workdir, backbone, examples, classes, contract, seed, class_weights)
    fit = read_fit(memo, len(classes))
    if fit is None:
        fit = fit_linear_head(rows["train"], targets["train"], rows["val"], targets["val"], classes, contract, seed,
                              class_weights)
        write_fit(memo, fit)
    return fit, computed, reused


def fit_memo(workdir: Path, backbone: Any, examples: dict[str, pd.DataFrame], classes: list[str],
             contract: Contract, seed: int, class_weights: bool) -> Path:
    """Where the logistic regression of these exact inputs is kept: the anchor, a tournament's
    classic candidate and its baseline fit the same one, so it runs once per run (and per resume)."""
    import json

    import sklearn

    from tasks.models.backbones import backbone_cache_key

    facts = {name: [list(map(str, frame.index)), list(map(str, frame["label"]))] for name, frame in examples.items()}
    key = json.dumps([facts, classes, contract.metric.model_dump_json(), repr(contract.guard), seed, class_weights,
                      C_GRID, MAX_ITER, sklearn.__version__])
    return (workdir / "classic_features" / backbone_cache_key(backbone)
            / f"fit-{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt")


def read_fit(memo: Path, n_classes: int) -> LinearFit | None:
    if not memo.exists():
        return None
    saved = torch.load(memo, map_location="cpu", weights_only=True)
    head = nn.Linear(saved["weight"].shape[1], n_classes)
    head.load_state_dict({"weight": saved["weight"], "bias": saved["bias"]})
    record = EpochRecord(1, saved["train_loss"], saved["val_loss"], saved["val_scores"], saved["val_metric"])
    return LinearFit(FitResult([record], 1, record.val_metric, False, dict(head.state_dict())), head, saved["C"],
                     {C: value for C, value in saved["sweep"]})


def write_fit(memo: Path, fit: LinearFit) -> None:
    from tasks.core.atomic import write_atomic

    record = fit.result.history[0]
    saved = {"weight": fit.head.weight.detach().clone(), "bias": fit.head.bias.detach().clone(), "C": float(fit.C),
             "sweep": [[float(C), float(value)] for C, value in fit.sweep.items()],  # plain floats: weights_only
             "train_loss": float(record.train_loss), "val_loss": float(record.val_loss),
             "val_scores": {key: float(value) for key, value in record.val_scores.items()},
             "val_metric": float(record.val_metric)}
    memo.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(memo, lambda handle: torch.save(saved, handle))


def fit_linear_head(train_x: Any, train_y: np.ndarray, val_x: Any, val_y: np.ndarray, classes: list[str],
                    contract: Contract, seed: int, class_weights: bool = False) -> LinearFit:
    """The logistic regression of each C in C_GRID; the best on validation by the contract."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    best: tuple[float, Any, dict[str, float]] | None = None
    sweep: dict[float, float] = {}
    for C in C_GRID:
        model = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed,
                                   class_weight="balanced" if class_weights else None).fit(train_x, train_y)
        scores = classification_metrics(val_y, model.predict(val_x), classes)
        sweep[C] = contract.value(scores)
        if best is None or contract.better(scores, best[2]):
            best = (C, model, scores)
    assert best is not None
    C, model, scores = best
    record = EpochRecord(1, float(log_loss(train_y, model.predict_proba(train_x), labels=model.classes_)),
                         float(log_loss(val_y, model.predict_proba(val_x), labels=model.classes_)),
                         scores, contract.value(scores))
    head = as_linear(model, len(classes))
    return LinearFit(FitResult([record], 1, record.val_metric, False, dict(head.state_dict())), head, C, sweep)


def as_linear(model: Any, n_classes: int) -> nn.Linear:
    """A fitted LogisticRegression as the `nn.Linear` whose softmax gives its probabilities. A
    binary model has one weight row w: logits (0, w.x + b) give sigmoid(w.x + b) for class 1.
    A class absent from training gets logit -inf's stand-in, a large negative bias."""
    dim = model.coef_.shape[1]
    weight, bias = np.zeros((n_classes, dim)), np.full(n_classes, -1e4)
    if len(model.classes_) == 2 and model.coef_.shape[0] == 1:
        first, second = model.classes_
        weight[second], bias[second], bias[first] = model.coef_[0], model.intercept_[0], 0.0
    else:
        weight[model.classes_], bias[model.classes_] = model.coef_, model.intercept_
    head = nn.Linear(dim, n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return head


def cached_features(workdir: Path, backbone: Any, ids: list[str], inputs: list[Any]) -> tuple[Any, int]:
    """The fitted features of these examples, from the cache when this fitted state computed them
    before (returns the rows and how many were computed: all or none)."""
    import scipy.sparse

    from tasks.core.atomic import write_atomic
    from tasks.models.backbones import backbone_cache_key

    part = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
    folder = workdir / "classic_features" / backbone_cache_key(backbone)
    sparse_file, dense_file = folder / f"{part}.npz", folder / f"{part}.npy"
    if sparse_file.exists():
        return scipy.sparse.load_npz(sparse_file).tocsr(), 0
    if dense_file.exists():
        return np.load(dense_file, allow_pickle=False), 0
    rows = backbone.features(inputs)
    folder.mkdir(parents=True, exist_ok=True)
    if scipy.sparse.issparse(rows):
        write_atomic(sparse_file, lambda handle: scipy.sparse.save_npz(handle, rows))
    else:
        write_atomic(dense_file, lambda handle: np.save(handle, rows, allow_pickle=False))
    return rows, len(ids)
