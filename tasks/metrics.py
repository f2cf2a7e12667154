"""Classification metrics, and the one metric the spec declares as the contract.

Per-class scores are named by `class_metric_key` everywhere (logging, the contract, diagnosis),
so a label with characters MLflow cannot name is still read back under the key it was written to.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from tasks.errors import DataError
from tasks.spec import PER_CLASS_METRICS, MetricSpec


def safe_name(text: str) -> str:
    """MLflow metric names allow letters, digits, `_-./ `: anything else becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def class_metric_key(name: str, label: str) -> str:
    """The key of a per-class score, e.g. `recall_spam`; `check_class_keys` keeps it one-to-one."""
    return f"{name}_{safe_name(label)}"


def metric_key(metric: MetricSpec) -> str:
    """The key the declared metric is logged and looked up under."""
    return class_metric_key(metric.name, metric.class_name) if metric.class_name else metric.name


def check_class_keys(classes: Iterable[str], source: Path | str) -> None:
    """Fail when two labels would share one metric key: their scores would overwrite each other."""
    labels_of: dict[str, list[str]] = defaultdict(list)
    for label in dict.fromkeys(classes):
        labels_of[safe_name(label)].append(label)
    clashes = [labels for labels in labels_of.values() if len(labels) > 1]
    if clashes:
        shown = "; ".join(" and ".join(repr(label) for label in labels) + f" -> '{safe_name(labels[0])}'"
                          for labels in clashes)
        raise DataError(
            f"{source}: labels that become the same metric name: {shown} (metric names keep letters, "
            "digits and `_-./ `; other characters become `_`). Fix: rename one label of each pair, "
            "or keep one of them with data.select_classes."
        )


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
    return scores[metric_key(metric)]


def meets_target(value: float, metric: MetricSpec) -> bool:
    return value >= metric.target if metric.greater_is_better else value <= metric.target


def is_improvement(candidate: float, incumbent: float | None, metric: MetricSpec) -> bool:
    """Strictly better on the declared metric (ties keep the earlier, simpler model)."""
    if incumbent is None:
        return True
    return candidate > incumbent if metric.greater_is_better else candidate < incumbent
