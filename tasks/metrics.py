"""Classification metrics, and the one metric the spec declares as the contract.

Per-class scores are named by `tasks.spec.class_metric_key` everywhere (logging, the contract, diagnosis),
so a label with characters MLflow cannot name is still read back under the key it was written to.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from tasks.spec import PER_CLASS_METRICS, MetricSpec, class_metric_key


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
