import numpy as np
import pytest

from tasks.config.spec import MetricSpec, check_class_keys, class_metric_key
from tasks.core.errors import DataError
from tasks.training.metrics import classification_metrics, contract_value, is_improvement, meets_target

CLASSES = ["ham", "spam"]


def test_metrics_on_a_known_confusion():
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 0])
    scores = classification_metrics(y_true, y_pred, CLASSES)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["recall_spam"] == pytest.approx(0.5)
    assert scores["precision_spam"] == pytest.approx(0.5)
    assert scores["recall_ham"] == pytest.approx(0.75)
    assert scores["balanced_accuracy"] == pytest.approx((0.5 + 0.75) / 2)
    assert scores["macro_f1"] == pytest.approx((0.75 + 0.5) / 2)


def test_a_declared_class_absent_from_the_truth_counts_in_every_average():
    # Class c is declared but absent from y_true (and predicted once, wrongly). By hand:
    # recall a = 2/3, b = 1/2, c = 0 (nothing to find); precision a = 2/3, b = 1/1, c = 0/1;
    # f1 a = 2/3, b = 2*(1 * 1/2)/(1 + 1/2) = 2/3, c = 0.
    y_true = np.array([0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 2, 1, 0])
    scores = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert scores["recall_c"] == 0.0 and scores["precision_c"] == 0.0 and scores["f1_c"] == 0.0
    assert scores["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # sklearn's ignores c: 7/12
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert scores["accuracy"] == pytest.approx(3 / 5)


def test_contract_value_uses_the_declared_metric_and_class():
    scores = {"recall_spam": 0.8, "accuracy": 0.95}
    assert contract_value(scores, MetricSpec(name="recall", **{"class": "spam"}, target=0.9)) == 0.8
    assert contract_value(scores, MetricSpec(name="accuracy", target=0.9)) == 0.95


def test_labels_that_mlflow_cannot_name_are_made_safe():
    metric = MetricSpec(name="f1", **{"class": "reverted_card_payment?"}, target=0.5)
    scores = classification_metrics(np.array([0, 1]), np.array([0, 1]), ["other", "reverted_card_payment?"])
    assert metric.key == "f1_reverted_card_payment_" and contract_value(scores, metric) == 1.0


def test_one_key_per_class_label_everywhere():
    classes = ["top-up failed!", "café", "card/arrived 2.0"]
    scores = classification_metrics(np.array([0, 1, 2]), np.array([0, 1, 1]), classes)
    assert class_metric_key("recall", "top-up failed!") == "recall_top-up failed_"
    assert class_metric_key("recall", "café") == "recall_caf_"
    assert class_metric_key("recall", "card/arrived 2.0") == "recall_card/arrived 2.0"  # already MLflow-safe
    assert [scores[class_metric_key("recall", c)] for c in classes] == [1.0, 1.0, 0.0]
    metric = MetricSpec(name="recall", **{"class": "café"}, target=0.5)
    assert metric.key == "recall_caf_" and contract_value(scores, metric) == 1.0


def test_labels_that_share_a_metric_key_are_refused_naming_both():
    check_class_keys(["a b", "a-b", "a_b", "café"], "data.csv")  # distinct keys pass
    with pytest.raises(DataError) as caught:
        check_class_keys(["ok", "a b!", "a b?"], "data.csv")
    message = str(caught.value)
    assert message.startswith("data.csv: ") and "'a b!' and 'a b?' -> 'a b_'" in message
    assert "rename one label" in message and "data.select_classes" in message


def test_target_boundary_and_improvement():
    metric = MetricSpec(name="macro_f1", target=0.9)
    assert meets_target(0.9, metric) and not meets_target(0.8999, metric)
    assert is_improvement(0.5, None, metric)
    assert is_improvement(0.91, 0.9, metric) and not is_improvement(0.9, 0.9, metric)


SPAM = MetricSpec(name="recall", **{"class": "spam"}, target=0.9)


def gate_on(y_true: np.ndarray, y_pred: np.ndarray, metric: MetricSpec, prevalence: float):
    """The gate's decision on these test answers, with the guard resolved as the flow does."""
    from tasks.decisions.gate import ChampionComparison, Exposure, decide
    from tasks.training.metrics import resolve_guard

    scores = classification_metrics(y_true, y_pred, CLASSES)
    guard = resolve_guard(metric, prevalence)
    return decide(contract_value(scores, metric), metric, Exposure(len(y_true), 0, 0, 0), None, 30,
                  ChampionComparison(None, None), 0.0, guard, scores[guard.key] if guard else None)


def test_a_model_calling_everything_the_class_fails_the_default_guard_at_the_gate():
    y_true = np.array([0] * 80 + [1] * 20)
    everything_spam = gate_on(y_true, np.ones(100, dtype=int), SPAM, prevalence=0.2)
    assert everything_spam.test_value == 1.0 and not everything_spam.passed  # the target alone is met
    assert ("guard precision_spam >= 0.6000 (default: halfway from the all-one-class predictor to 1): test "
            "precision_spam = 0.2000, BROKEN: the contract is met by answering the class too often") in \
        everything_spam.reason
    honest = gate_on(y_true, np.array([0] * 75 + [1] * 5 + [1] * 19 + [0]), SPAM, prevalence=0.2)
    assert honest.passed and "test precision_spam = 0.7917, holds" in honest.reason


def test_a_precision_contract_met_by_answering_the_class_once_fails_its_recall_guard():
    precise = MetricSpec(name="precision", **{"class": "spam"}, target=0.9)
    once = gate_on(np.array([0] * 80 + [1] * 20), np.array([0] * 99 + [1]), precise, prevalence=0.2)
    assert once.test_value == 1.0 and not once.passed and "test recall_spam = 0.0500, BROKEN" in once.reason
    assert "answering the class too rarely" in once.reason and "too often" not in once.reason


def test_a_precision_contracts_default_recall_floor_does_not_grow_with_the_class_share():
    """Halfway from the trivial model to 1: for recall that model scores ~0, so the floor is 0.5,
    not the 0.935 a prevalence-based floor gave a class that is 87% of the data."""
    from tasks.training.metrics import resolve_guard

    precise = MetricSpec(name="precision", **{"class": "spam"}, target=0.9)
    assert resolve_guard(precise, prevalence=0.87).floor == 0.5 == resolve_guard(precise, prevalence=0.1).floor
    assert resolve_guard(SPAM, prevalence=0.2).floor == pytest.approx(0.6)  # recall contracts: unchanged
    # A precision-0.95 model finding 80% of a majority class passes (it failed the 0.935 floor).
    y_true = np.array([0] * 13 + [1] * 87)
    y_pred = np.array([0] * 12 + [1] + [1] * 70 + [0] * 17)
    assert gate_on(y_true, y_pred, precise, prevalence=0.87).passed


def test_a_declared_guard_is_the_floor_and_a_guard_needs_its_value():
    from tasks.decisions.gate import ChampionComparison, Exposure, decide
    from tasks.training.metrics import Guard

    declared = MetricSpec(name="recall", **{"class": "spam"}, target=0.9, guard={"precision": 0.3})
    assert gate_on(np.array([0] * 80 + [1] * 20), np.array([0] * 40 + [1] * 60), declared, prevalence=0.2).passed
    with pytest.raises(ValueError, match="without its test value"):
        decide(0.95, SPAM, Exposure(10, 0, 0, 0), None, 30, ChampionComparison(None, None), 0.0,
               Guard("precision_spam", 0.6, explicit=False))


def test_a_champion_that_breaks_the_guard_holds_no_challenger_back():
    from tasks.decisions.gate import ChampionComparison

    cheat = ChampionComparison("3", 1.0, broken_guard="precision_spam >= 0.6000", guard_value=0.2)
    assert cheat.allows(0.91, max_regression=0.0)
    assert "breaks the guard precision_spam >= 0.6000 there (0.2000)" in cheat.describe(0.91, 0.0)
