"""Classification metrics, and the one metric the spec declares as the contract.

Per-class scores are named by `tasks.config.spec.class_metric_key` everywhere (logging, the contract, diagnosis),
so a label with characters MLflow cannot name is still read back under the key it was written to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from tasks.config.spec import PER_CLASS_METRICS, MetricSpec, class_metric_key


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Aggregate scores plus precision / recall / f1 of every class (see `class_metric_key`).

    Every declared class counts, present in `y_true` or not (a class never seen scores 0), so
    macro F1 and balanced accuracy (the mean recall) average over the same classes."""
    labels = list(range(len(classes)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    scores = {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "balanced_accuracy": float(np.mean(recall)),
    }
    for index, label in enumerate(classes):
        for name, values in zip(PER_CLASS_METRICS, (precision, recall, f1), strict=True):
            scores[class_metric_key(name, label)] = float(values[index])
    return scores


def contract_value(scores: dict[str, float], metric: MetricSpec) -> float:
    """The value of the declared metric among computed scores."""
    return scores[metric.key]


def meets_target(value: float, metric: MetricSpec) -> bool:
    return value >= metric.target if metric.greater_is_better else value <= metric.target


def is_improvement(candidate: float, incumbent: float | None, metric: MetricSpec) -> bool:
    """Strictly better on the declared metric (ties keep the earlier, simpler model)."""
    if incumbent is None:
        return True
    return candidate > incumbent if metric.greater_is_better else candidate < incumbent


@dataclass(frozen=True)
class Guard:
    """A floor on the complementary score of a per-class recall/precision contract."""

    key: str        # e.g. `precision_spam`
    floor: float
    explicit: bool  # declared in the config, or the default derived from the class's prevalence

    def describe(self) -> str:
        trivial = "the all-one-class predictor" if self.key.startswith("precision") else "answering the class once"
        origin = "declared" if self.explicit else f"default: halfway from {trivial} to 1"
        return f"{self.key} >= {self.floor:.4f} ({origin})"

    def broken_by(self) -> str:
        """How a model meets its contract while breaking this guard."""
        return "answering the class too often" if self.key.startswith("precision") else \
            "answering the class too rarely"


def resolve_guard(metric: MetricSpec, prevalence: float) -> Guard | None:
    """The guard of a recall/precision contract; `prevalence` is the class's share of the training
    split. Each default floor sits halfway between the trivial model that meets the contract and 1:
    a recall contract's all-one-class predictor has precision = prevalence; a precision contract's
    "answer the class once" model has recall ~ 0, so its recall floor is 0.5 whatever the prevalence
    (halfway from the prevalence would demand a recall of 0.935 of a class that is 87% of the data)."""
    name = metric.guard_name
    if name is None or metric.class_name is None:
        return None
    key = class_metric_key(name, metric.class_name)
    if metric.guard is not None:
        return Guard(key, metric.guard[name], explicit=True)  # type: ignore[index]
    trivial = prevalence if name == "precision" else 0.0
    return Guard(key, trivial + (1.0 - trivial) / 2, explicit=False)


@dataclass(frozen=True)
class Contract:
    """The declared metric with its guard: the one way every decision ranks and judges results."""

    metric: MetricSpec
    guard: Guard | None = None

    def value(self, scores: dict[str, float]) -> float:
        return contract_value(scores, self.metric)

    def guard_holds(self, scores: dict[str, float]) -> bool:
        return self.guard is None or scores[self.guard.key] >= self.guard.floor

    def meets(self, scores: dict[str, float]) -> bool:
        """The target is reached and the guard holds: what the gate and "target met" mean."""
        return meets_target(self.value(scores), self.metric) and self.guard_holds(scores)

    def better(self, candidate: dict[str, float], incumbent: dict[str, float] | None, min_delta: float = 0.0) -> bool:
        """A result that keeps the guard beats one that breaks it; otherwise strictly higher by more
        than `min_delta` (ties keep the earlier, simpler model)."""
        if incumbent is None:
            return True
        if self.guard_holds(candidate) != self.guard_holds(incumbent):
            return self.guard_holds(candidate)
        return self.value(candidate) > self.value(incumbent) + min_delta


def contract_for(metric: MetricSpec, train_labels: Sequence[object]) -> Contract:
    """The declared metric with its guard; the guard's default follows the class's share of the
    training labels (the all-one-class predictor's precision)."""
    if metric.guard_name is None:
        return Contract(metric)
    prevalence = sum(label == metric.class_name for label in train_labels) / max(len(train_labels), 1)
    return Contract(metric, resolve_guard(metric, prevalence))
