"""Diagnosis reads per-class scores under the keys `classification_metrics` wrote them."""

import numpy as np

from tasks.config.spec import MetricSpec
from tasks.decisions.diagnose import lagging_classes
from tasks.training.metrics import classification_metrics

ACCURACY = MetricSpec(name="accuracy", target=0.9)
CLASSES = ["ok", "top-up failed!", "café"]


def test_labels_with_any_characters_are_read_back_with_their_real_recall():
    # recall ok = 2/2, "top-up failed!" = 2/2, café = 1/2; mean 5/6, so only café lags (by > 0.15).
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 0])
    scores = classification_metrics(y_true, y_pred, CLASSES)
    assert lagging_classes(scores, ACCURACY, CLASSES) == "café (recall 0.50, mean 0.83)"
