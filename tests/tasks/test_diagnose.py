"""Diagnosis reads per-class scores under the keys `classification_metrics` wrote them."""

import numpy as np

from tasks.diagnose import diagnose_stage
from tasks.metrics import classification_metrics
from tasks.spec import MetricSpec
from tasks.train import EpochRecord, FitResult

ACCURACY = MetricSpec(name="accuracy", target=0.9)
CLASSES = ["ok", "top-up failed!", "café"]


def test_labels_with_any_characters_are_read_back_with_their_real_recall():
    # recall ok = 2/2, "top-up failed!" = 2/2, café = 1/2; mean 5/6, so only café lags (by > 0.15).
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 0])
    scores = classification_metrics(y_true, y_pred, CLASSES)
    stage = FitResult([EpochRecord(1, 0.5, 0.4, scores, scores["accuracy"])], best_epoch=1,
                      best_val_metric=scores["accuracy"], stopped_early=False)
    text = diagnose_stage(stage, baseline_value=0.5, metric=ACCURACY, classes=CLASSES).text()
    assert "lagging class(es) by validation recall: café (0.50) (mean 0.83)" in text
    assert "top-up failed!" not in text
