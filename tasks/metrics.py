"""Classification metrics, and the one metric the spec declares as the contract."""

from __future__ import annotations

import re

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_recall_fscore_support

from tasks.spec import MetricSpec


def safe_name(text: str) -> str:
    """MLflow metric names allow letters, digits, `_-./ `: anything else becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def metric_key(metric: MetricSpec) -> str:
    return safe_name(metric.key)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Aggregate scores plus precision / recall / f1 of every class (named `<name>_<class>`)."""
    labels = list(range(len(classes)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    scores = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
    }
    for index, name in enumerate(classes):
        scores[safe_name(f"precision_{name}")] = float(precision[index])
        scores[safe_name(f"recall_{name}")] = float(recall[index])
        scores[safe_name(f"f1_{name}")] = float(f1[index])
    return scores


def contract_value(scores: dict[str, float], metric: MetricSpec) -> float:
    """The value of the declared metric among computed scores."""
    return scores[metric_key(metric)]


def meets_target(value: float, metric: MetricSpec) -> bool:
    return value >= metric.target if metric.greater_is_better else value <= metric.target


def is_improvement(candidate: float, incumbent: float | None, metric: MetricSpec) -> bool:
    """Strictly better on the declared metric (ties keep the earlier, simpler model)."""
    if incumbent is None:
        return True
    return candidate > incumbent if metric.greater_is_better else candidate < incumbent
