"""The chosen model against the classic anchor: compared by the contract on validation, said in one
plain line, and blocking the gate only under `gate.beat_classic: require`."""

import pytest

from tasks.config.spec import MetricSpec
from tasks.decisions.anchor import ClassicAnchor, check_against_anchor
from tasks.decisions.gate import ChampionComparison, Exposure, decide
from tasks.training.metrics import Contract, Guard

F1 = MetricSpec(name="macro_f1", target=0.6)
ANCHOR = ClassicAnchor("tfidf", 0.76, {"macro_f1": 0.76}, C=10.0, features=5000, seconds=1.0)


def gate(classic):
    """Everything else passes: the target is met, no champion, every test example fresh."""
    return decide(0.8, F1, Exposure(100, 0, 0, 0), None, 30, ChampionComparison(None, None), 0.0, classic=classic)


@pytest.mark.parametrize("chosen,beaten", [(0.61, False), (0.76, False), (0.77, True)])
def test_only_a_strictly_better_model_beats_the_anchor(chosen, beaten):
    check = check_against_anchor("finetune-1", {"macro_f1": chosen}, False, ANCHOR, Contract(F1), "warn")
    assert check.beaten is beaten
    assert ("does not beat the classic anchor tfidf" in check.line("macro_f1")) is not beaten


def test_a_model_that_breaks_the_guard_does_not_beat_an_anchor_that_keeps_it():
    recall = MetricSpec(name="recall", target=0.9, **{"class": "spam"})
    contract = Contract(recall, Guard("precision_spam", 0.5, explicit=False))
    anchor = ClassicAnchor("tfidf", 0.80, {"recall_spam": 0.80, "precision_spam": 0.9}, 1.0, 10, 1.0)
    check = check_against_anchor("baseline", {"recall_spam": 1.0, "precision_spam": 0.2}, False, anchor, contract,
                                 "require")
    assert not check.beaten and not check.allows()


@pytest.mark.parametrize("policy,passes", [("warn", True), ("off", True), ("require", False)])
def test_only_require_lets_an_unbeaten_anchor_block_the_gate(policy, passes):
    check = check_against_anchor("baseline", {"macro_f1": 0.61}, False, ANCHOR, Contract(F1), policy)
    decision = gate(check)
    assert decision.passed is passes
    assert gate(None).passed
    if policy != "off":
        assert "classic anchor (gate.beat_classic: " + policy + "): NOT beaten on validation" in decision.reason


def test_a_chosen_classic_model_needs_no_anchor_beaten():
    check = check_against_anchor("baseline", {"macro_f1": 0.76}, True, ANCHOR, Contract(F1), "require")
    assert check.beaten and gate(check).passed and "is a classic model itself" in check.line("macro_f1")
