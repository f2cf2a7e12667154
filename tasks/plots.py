"""The two pictures a reviewer looks at first: the confusion matrix and the learning curves."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import confusion_matrix

from tasks.train import EpochRecord


def confusion_matrix_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], title: str) -> Any:
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(col, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black", fontsize=8)
    return figure


def learning_curves_figure(curves: dict[str, list[EpochRecord]], metric_key: str, baseline_value: float) -> Any:
    """Validation metric and losses per epoch for each stage, with the baseline as a reference line."""
    figure, (metric_axes, loss_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for stage, history in curves.items():
        epochs = [r.epoch for r in history]
        metric_axes.plot(epochs, [r.val_metric for r in history], marker="o", label=stage)
        loss_axes.plot(epochs, [r.train_loss for r in history], marker="o", label=f"{stage} train")
        loss_axes.plot(epochs, [r.val_loss for r in history], marker="x", linestyle="--", label=f"{stage} val")
    metric_axes.axhline(baseline_value, color="grey", linestyle=":", label="baseline (val)")
    metric_axes.set_title(f"validation {metric_key}")
    metric_axes.set_xlabel("epoch")
    loss_axes.set_title("loss")
    loss_axes.set_xlabel("epoch")
    metric_axes.legend(fontsize=8)
    loss_axes.legend(fontsize=8)
    return figure
