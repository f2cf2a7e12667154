"""The gate against the current champion: the rule, when a comparison is meaningful, and the
champion's score recomputed through its served pyfunc (a different path than the gate's)."""

import base64

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score

from tasks.champion import ChampionComparison, comparability, score_champion
from tasks.gate import Exposure, decide
from tasks.spec import MetricSpec
from tests.registered_models import SMALL_IMAGE_MODEL, open_store, png_base64, register

MACRO_F1 = MetricSpec(name="macro_f1", target=0.8)
RECALL_BEES = MetricSpec(name="recall", **{"class": "bees"}, target=0.5)
FRESH = Exposure(100, 0, 0, 0)


@pytest.mark.parametrize("value,champion,max_regression,passed", [
    (0.85, ChampionComparison(None, None), 0.0, True),                # no champion: the target decides
    (0.85, ChampionComparison("3", 0.84), 0.0, True),                 # better than the champion
    (0.85, ChampionComparison("3", 0.85), 0.0, True),                 # a tie is not a regression
    (0.85, ChampionComparison("3", 0.86), 0.0, False),                # meets the target, but worse
    (0.85, ChampionComparison("3", 0.86), 0.02, True),                # within the allowed regression
    (0.75, ChampionComparison("3", 0.60), 0.0, False),                # better, but misses the target
    (0.85, ChampionComparison("3", None, "classes differ"), 0.0, True),  # not comparable: target decides
])
def test_promotion_needs_the_target_and_no_regression_beyond_the_allowed(value, champion, max_regression, passed):
    decision = decide(value, MACRO_F1, FRESH, None, 30, champion, max_regression)
    assert decision.passed is passed


def test_the_reason_states_the_champion_comparison():
    worse = decide(0.85, MACRO_F1, FRESH, None, 30, ChampionComparison("3", 0.90), 0.01)
    assert "champion version 3 scores 0.9000 on the same test split; the challenger is -0.0500 (WORSE than " \
           "allowed by gate.max_regression 0.01)" in worse.reason
    assert "0.8500 >= target 0.8" in worse.reason and worse.verdict == "rejected"
    assert "no champion yet" in decide(0.85, MACRO_F1, FRESH, None, 30, ChampionComparison(None, None), 0).reason
    skipped = decide(0.85, MACRO_F1, FRESH, None, 30, ChampionComparison("2", None, "its classes differ"), 0)
    assert "champion version 2 not compared: its classes differ" in skipped.reason


def test_a_comparison_needs_a_metric_defined_the_same_way_for_both():
    assert comparability(MACRO_F1, ["ants", "bees"], ["bees", "ants"]) == ""
    assert "classes differ" in comparability(MACRO_F1, ["ants", "bees"], ["ants", "bees", "wasps"])
    assert comparability(RECALL_BEES, ["ants", "bees"], ["ants", "bees", "wasps"]) == ""  # per class: enough
    assert "no class 'bees'" in comparability(RECALL_BEES, ["ants", "wasps"], ["ants", "bees"])


def test_no_registered_model_means_no_champion(tmp_path):
    store = open_store(tmp_path)
    assert score_champion(store.client, "nobody", "champion", [], np.array([]), ["a"], MACRO_F1, 4) == \
        ChampionComparison(None, None)


def split_decision_checkpoint(folder, paths: list[str]):
    """An untrained head whose bias puts the decision boundary in the middle of these images, so
    the champion answers both classes (a constant answer would make any comparison trivial)."""
    import torch

    from tasks.backbones import load_backbone
    from tasks.train import Classifier, new_head

    backbone = load_backbone(SMALL_IMAGE_MODEL)
    classifier = Classifier(backbone, new_head(backbone.dim, 2, seed=0))
    with torch.no_grad():
        logits = classifier(backbone.preprocess(paths))
        classifier.head.bias[1] -= (logits[:, 1] - logits[:, 0]).median() + 1e-4
    checkpoint = folder / "champion.pt"
    torch.save(classifier.state_dict(), checkpoint)
    return checkpoint


def test_the_champions_score_matches_its_served_predictions(tmp_path):
    """score_champion rebuilds the champion from its artifacts and reads image files; the served
    pyfunc gets the same images as base64 bytes. Both must give the same recall of bees."""
    import mlflow

    store = open_store(tmp_path)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (250, 250, 250), (5, 5, 5), (120, 60, 200)]
    paths = []
    for i, colour in enumerate(colours):
        path = tmp_path / f"{i}.png"
        path.write_bytes(base64.b64decode(png_base64(colour)))
        paths.append(str(path))
    register(store, split_decision_checkpoint(tmp_path, paths), SMALL_IMAGE_MODEL, ["ants", "bees"], "insects")
    y_true = np.array([0, 1, 0, 1, 1, 0])
    scored = score_champion(store.client, "insects", "champion", paths, y_true, ["ants", "bees"], RECALL_BEES, 4)
    served = mlflow.pyfunc.load_model(store.client.get_model_version_download_uri("insects", "1")).predict(
        pd.DataFrame({"input": [png_base64(c) for c in colours]}))
    assert set(served["label"]) == {"ants", "bees"}
    expected = recall_score(["ants" if t == 0 else "bees" for t in y_true], served["label"], pos_label="bees")
    assert 0 < expected < 1
    assert scored.version == "1" and scored.value == pytest.approx(expected)
    reordered = score_champion(store.client, "insects", "champion", paths, 1 - y_true, ["bees", "ants"],
                               RECALL_BEES, 4)  # the challenger lists its classes in another order
    assert reordered.value == pytest.approx(expected)
