"""The gate against the current champion: the rule, when a comparison is meaningful, and the
champion's score recomputed through its served pyfunc (a different path than the gate's)."""

import base64

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score

from tasks.config.spec import MetricSpec
from tasks.decisions.gate import ChampionComparison, Exposure, decide
from tasks.registry.champion import comparability, score_champion
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
    assert score_champion(store.client, "nobody", "champion", [], [], np.array([]), np.array([]), ["a"], MACRO_F1, 4,
                          1) == \
        ChampionComparison(None, None)


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (250, 250, 250), (5, 5, 5), (120, 60, 200)]


def image_files(folder, colours: list[tuple[int, int, int]]) -> list[str]:
    """One PNG per colour, written as a client's base64 bytes decode, for score_champion to read."""
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"{i}.png"
        path.write_bytes(base64.b64decode(png_base64(colour)))
        paths.append(str(path))
    return paths


def split_decision_checkpoint(folder, paths: list[str], low_threshold: bool = False):
    """An untrained head whose bias puts the decision boundary in the middle of these images, so
    the champion answers both classes (a constant answer would make any comparison trivial). With
    `low_threshold`, its stored operating point answers bees below that boundary too."""
    import torch

    from tasks.models.backbones import load_backbone
    from tasks.models.checkpoints import Checkpoint, save_checkpoint
    from tasks.models.classifier import Classifier, OperatingPoint, new_head

    backbone = load_backbone(SMALL_IMAGE_MODEL)
    classifier = Classifier(backbone, new_head(backbone.dim, 2, seed=0))
    with torch.no_grad():
        logits = classifier(backbone.preprocess(paths))
        classifier.head.bias[1] -= (logits[:, 1] - logits[:, 0]).median() + 1e-4
        p_bees = torch.softmax(classifier(backbone.preprocess(paths)), dim=1)[:, 1].sort().values
    point = OperatingPoint("bees", float(p_bees[1])) if low_threshold else None  # all but the lowest: bees
    return save_checkpoint(folder / "champion.pt", Checkpoint(
        model=SMALL_IMAGE_MODEL, classes=["ants", "bees"], weights=classifier.state_dict(), stage="baseline",
        operating_point=point))


@pytest.mark.parametrize("low_threshold", [False, True])
def test_the_champions_score_matches_its_served_predictions(tmp_path, low_threshold):
    """score_champion rebuilds the champion from its artifacts and reads image files; the served
    pyfunc gets the same images as base64 bytes. Both must give the same recall of bees, at the
    champion's own stored operating point when it has one."""
    import mlflow

    store = open_store(tmp_path)
    paths = image_files(tmp_path, COLOURS)
    colours = COLOURS
    register(store, split_decision_checkpoint(tmp_path, paths, low_threshold), SMALL_IMAGE_MODEL, ["ants", "bees"],
             "insects")
    y_true = np.array([0, 1, 0, 1, 1, 0])
    scored = score_champion(store.client, "insects", "champion", paths, paths, y_true, y_true, ["ants", "bees"],
                            RECALL_BEES, 4, 1)
    served = mlflow.pyfunc.load_model(store.client.get_model_version_download_uri("insects", "1")).predict(
        pd.DataFrame({"input": [png_base64(c) for c in colours]}))
    assert (served["label"] == "bees").sum() == (5 if low_threshold else 3)  # the threshold is what answers
    expected = recall_score(["ants" if t == 0 else "bees" for t in y_true], served["label"], pos_label="bees")
    assert 0 < expected <= 1
    assert scored.version == "1" and scored.value == pytest.approx(expected)
    reordered = score_champion(store.client, "insects", "champion", paths, paths, 1 - y_true, 1 - y_true,
                               ["bees", "ants"], RECALL_BEES, 4, 1)  # the challenger orders its classes otherwise
    assert reordered.value == pytest.approx(expected)


def test_a_champion_answering_bees_everywhere_is_scored_against_the_guard(tmp_path):
    """The champion's guarded score is computed on the same test split: breaking it, it blocks nobody."""
    from tasks.training.metrics import Guard

    store = open_store(tmp_path)
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (250, 250, 250)]):
        path = tmp_path / f"{i}.png"
        path.write_bytes(base64.b64decode(png_base64(colour)))
        paths.append(str(path))
    register(store, split_decision_checkpoint(tmp_path, paths, low_threshold=True), SMALL_IMAGE_MODEL,
             ["ants", "bees"], "insects")  # answers bees for all but one of these images
    scored = score_champion(store.client, "insects", "champion", paths, paths, np.array([0, 0, 0, 1]),
                            np.array([0, 0, 0, 1]), ["ants", "bees"], RECALL_BEES, 4, 1,
                            Guard("precision_bees", 0.6, explicit=False))
    assert scored.guard_value is not None and scored.guard_value <= 1 / 3  # 3 answers of bees, one bee
    assert scored.broken_guard == "precision_bees >= 0.6000 (default: halfway from the all-one-class predictor to 1)"
    assert scored.allows(0.5, 0.0)


def test_the_champion_is_compared_only_on_test_examples_it_never_trained_on(tmp_path):
    """The champion trained on two of six test images: both models are scored on the other four,
    recomputed here from the served pyfunc's answers; with too few left there is no comparison."""
    import mlflow

    store = open_store(tmp_path)
    paths = image_files(tmp_path, COLOURS)
    colours = COLOURS
    ids = [f"id-{i}" for i in range(6)]
    register(store, split_decision_checkpoint(tmp_path, paths), SMALL_IMAGE_MODEL, ["ants", "bees"], "insects",
             trained_on=["id-1", "id-4", "not-in-test"])
    y_true = np.array([0, 1, 0, 1, 1, 0])
    y_challenger = np.array([0, 1, 1, 1, 0, 0])
    scored = score_champion(store.client, "insects", "champion", ids, paths, y_true, y_challenger, ["ants", "bees"],
                            RECALL_BEES, 4, 4)
    served = mlflow.pyfunc.load_model(store.client.get_model_version_download_uri("insects", "1")).predict(
        pd.DataFrame({"input": [png_base64(c) for c in colours]}))["label"]
    kept = [0, 2, 3, 5]
    truth = ["ants" if y_true[i] == 0 else "bees" for i in kept]
    assert scored.left_out == 2
    assert scored.value == pytest.approx(recall_score(truth, [served[i] for i in kept], pos_label="bees"))
    challenger = ["ants" if y_challenger[i] == 0 else "bees" for i in kept]
    assert scored.challenger_value == pytest.approx(recall_score(truth, challenger, pos_label="bees"))
    decision = decide(0.1, RECALL_BEES, FRESH, None, 30, scored, 0.0)
    assert "on the test examples it never trained on (2 it trained on left out)" in decision.reason
    too_few = score_champion(store.client, "insects", "champion", ids, paths, y_true, y_challenger, ["ants", "bees"],
                             RECALL_BEES, 4, 5)
    assert too_few.value is None and too_few.left_out == 2
    assert "trained on 2 of the 6 test examples; the 4 left are fewer than gate.min_fresh_test (5)" in \
        too_few.skipped_because


def test_the_challenger_is_held_to_the_champion_on_the_same_examples():
    champion = ChampionComparison("3", 0.80, left_out=5, challenger_value=0.70)
    assert not champion.allows(0.95, 0.05)  # 0.95 on the whole split, but 0.70 where the champion has 0.80
    assert ChampionComparison("3", 0.80, left_out=5, challenger_value=0.78).allows(0.60, 0.05)
