"""What would close a per-class target missed on test: the fewest validation trials at which the
operating point's score has its lower bound at the target, and the confidence that accepts today's
evidence, each checked against the bound on both sides of the answer."""

import numpy as np
import pytest

from tasks.decisions.operating_point import closing_the_gap, confidence_to_accept, lower_bound, trials_to_reach


def bound(score, n, confidence):
    return float(lower_bound(np.array(score), np.array(n), 1.0, confidence))


@pytest.mark.parametrize("score,trials,target", [(0.95, 40, 0.90), (0.93, 100, 0.90), (1.0, 5, 0.9)])
def test_the_trials_needed_are_the_fewest_that_lift_the_bound_to_the_target(score, trials, target):
    needed = trials_to_reach(score, trials, 1.0, 0.8, target)
    assert bound(score, needed, 0.8) >= target > bound(score, needed - 1, 0.8)


def test_the_confidence_that_accepts_todays_evidence_is_the_highest_that_does():
    level = confidence_to_accept(0.95, 40, 1.0, 0.90, 0.8)
    assert 0.5 < level < 0.8
    assert bound(0.95, 40, level) >= 0.90 > bound(0.95, 40, level + 0.01)


def test_the_advice_names_the_sample_or_the_model_as_the_shortfall():
    short_sample = closing_the_gap(0.95, 40, 1.0, 0.8, 0.90, "spam", "recall", val_share=0.15)
    extra = trials_to_reach(0.95, 40, 1.0, 0.8, 0.90) - 40
    assert f"{extra} more (about {extra / 0.15:,.0f} more labelled spam examples in all)" in short_sample
    assert f"metric.confidence {confidence_to_accept(0.95, 40, 1.0, 0.90, 0.8):.2f}" in short_sample
    short_model = closing_the_gap(0.88, 40, 1.0, 0.8, 0.90, "spam", "recall", val_share=0.15)
    assert "itself below the target" in short_model and "would not close" in short_model


def test_the_card_says_how_far_a_missed_recall_contract_was_and_what_would_close_it(tmp_path):
    """From the operating point's validation numbers the run logged to MLflow (a real SQLite store)."""
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from tasks.config.spec import MetricSpec
    from tasks.steps.card import contract_gap
    from tasks.steps.refs import TrackingRef
    from tasks.training.metrics import Guard

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    experiment = client.create_experiment("gap", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    for key, value in {"val_at_threshold_recall_spam": 0.95, "val_at_threshold_lower_bound": 0.87,
                       "val_at_threshold_trials": 40, "val_at_threshold_precision_spam": 0.81}.items():
        client.log_metric(run_id, key, value)
    metric = MetricSpec(name="recall", target=0.9, confidence=0.8, **{"class": "spam"})
    spec = SimpleNamespace(metric=metric)
    prepared = SimpleNamespace(split=SimpleNamespace(sizes={"train": 700, "val": 150, "test": 150}))
    missed = SimpleNamespace(value=0.87, guard=Guard("precision_spam", 0.5, explicit=False))
    line = contract_gap(spec, prepared, missed, TrackingRef(run_id, experiment, store))
    assert line.startswith("test recall_spam 0.8700 missed the target 0.9 by 0.0300")
    assert "scored 0.9500 (lower bound 0.8700), keeping precision_spam 0.8100 there" in line
    assert closing_the_gap(0.95, 40, 1.0, 0.8, 0.9, "spam", "recall", 0.15) in line
    assert contract_gap(spec, prepared, SimpleNamespace(value=0.91, guard=None),
                        TrackingRef(run_id, experiment, store)) is None  # met: nothing to close
