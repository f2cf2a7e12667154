"""The gate: the decision that alone may move the `champion` alias, from one test read.

It passes when the whole test split meets the target, keeps the guard, and the challenger does not
trail the current champion by more than `gate.max_regression` on the same test examples. How much
of the test split earlier evaluations already read (tasks/registry/ledger.py) is evidence beside
it, with the metric on the fresh part alone when there is enough of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tasks.config.spec import MetricSpec
from tasks.decisions.anchor import ClassicCheck
from tasks.training.metrics import Guard, classification_metrics, contract_value, meets_target


@dataclass(frozen=True)
class Exposure:
    """How much of this run's test split earlier evaluations already read."""

    n_test: int
    seen_before: int        # test examples at least one earlier evaluation read
    prior_evaluations: int  # earlier evaluations that read any of them
    max_prior_uses: int     # the most times one of them was read before

    @property
    def fresh(self) -> int:
        return self.n_test - self.seen_before

    def describe(self) -> str:
        if not self.seen_before:
            return f"all {self.n_test} test examples are fresh (no earlier evaluation read them)"
        return (f"{self.seen_before} of {self.n_test} test examples were used by {self.prior_evaluations} earlier "
                f"evaluation(s), up to {self.max_prior_uses} time(s) each; {self.fresh} are fresh")


@dataclass(frozen=True)
class ChampionComparison:
    """What the gate knows about the current champion on this run's test split."""

    version: str | None           # None: no champion yet
    value: float | None           # its declared metric on this test split; None when not compared
    skipped_because: str = ""     # why a champion was not compared
    broken_guard: str = ""        # the guard the champion breaks on this test split, if it does
    guard_value: float | None = None  # the champion's guarded score there
    left_out: int = 0             # test examples the champion (or its warm-start lineage) trained on
    challenger_value: float | None = None  # the challenger on the examples the champion was scored on,
    #                                        when some were left out (else its whole-split value applies)

    def allows(self, challenger: float, max_regression: float) -> bool:
        """Every supported metric is higher-is-better: the challenger may trail by max_regression,
        both scored on the same examples (those the champion never trained on). A champion that
        breaks the guard blocks nobody: its score is bought by answering the class everywhere (a
        challenger that breaks it too fails the gate on its own guard)."""
        if self.value is None or self.broken_guard:
            return True
        return self.compared(challenger) >= self.value - max_regression

    def compared(self, challenger: float) -> float:
        """The challenger's score on the champion's comparison examples."""
        return challenger if self.challenger_value is None else self.challenger_value

    def describe(self, challenger: float, max_regression: float) -> str:
        if self.version is None:
            return "no champion yet"
        if self.value is None:
            return f"champion version {self.version} not compared: {self.skipped_because}"
        where = ("the same test split" if not self.left_out else
                 f"the test examples it never trained on ({self.left_out} it trained on left out)")
        if self.broken_guard:
            return (f"champion version {self.version} scores {self.value:.4f} on {where}, but breaks the "
                    f"guard {self.broken_guard} there ({self.guard_value:.4f}), so it cannot hold back the challenger")
        margin = self.compared(challenger) - self.value
        verdict = "not worse beyond" if self.allows(challenger, max_regression) else "WORSE than allowed by"
        return (f"champion version {self.version} scores {self.value:.4f} on {where}; the challenger is "
                f"{margin:+.4f} ({verdict} gate.max_regression {max_regression:g})")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    metric: str
    test_value: float
    target: float
    exposure: Exposure
    fresh_value: float | None  # the metric on the fresh test examples, when there are enough
    min_fresh: int
    champion: ChampionComparison
    max_regression: float
    guard: Guard | None = None      # the floor on the complementary score of a recall/precision contract
    guard_value: float | None = None  # that score on the test split
    classic: ClassicCheck | None = None  # the chosen model against the classic anchor, on validation

    @property
    def verdict(self) -> str:
        return "promoted" if self.passed else "rejected"

    @property
    def guard_holds(self) -> bool:
        return self.guard is None or (self.guard_value is not None and self.guard_value >= self.guard.floor)

    @property
    def reason(self) -> str:
        relation = ">=" if self.test_value >= self.target else "<"
        text = f"test {self.metric} = {self.test_value:.4f} {relation} target {self.target:g}; "
        if self.guard is not None:
            verdict = "holds" if self.guard_holds else f"BROKEN: the contract is met by {self.guard.broken_by()}"
            text += f"guard {self.guard.describe()}: test {self.guard.key} = {self.guard_value:.4f}, {verdict}; "
        text += f"{self.champion.describe(self.test_value, self.max_regression)}; {self.exposure.describe()}"
        if self.exposure.seen_before and self.fresh_value is not None:
            text += f"; on the {self.exposure.fresh} fresh examples alone: {self.fresh_value:.4f}"
        elif self.exposure.seen_before and self.exposure.fresh:
            text += f" (too few for a fresh-only metric: gate.min_fresh_test is {self.min_fresh})"
        if self.classic is not None and self.classic.policy != "off":
            text += f"; classic anchor (gate.beat_classic: {self.classic.policy}): " + (
                "beaten on validation" if self.classic.beaten else
                f"NOT beaten on validation ({self.classic.chosen_value:.4f} against {self.classic.anchor_value:.4f})")
        if self.exposure.seen_before == self.exposure.n_test:
            text += ("; WARNING: every test example has informed earlier choices: treat this test split as a "
                     "validation set and add fresh labeled data")
        return text


def fresh_part_metric(y_true: np.ndarray, y_pred: np.ndarray, prior_uses: list[int], classes: list[str],
                      metric: MetricSpec, min_fresh: int) -> float | None:
    """The declared metric on the test examples no earlier evaluation read: worth reporting only
    when some were read before and enough are fresh to say something."""
    fresh = np.array(prior_uses) == 0
    if fresh.all() or fresh.sum() < min_fresh:
        return None
    return contract_value(classification_metrics(y_true[fresh], y_pred[fresh], classes), metric)


def decide(test_value: float, metric: MetricSpec, exposure: Exposure, fresh_value: float | None, min_fresh: int,
           champion: ChampionComparison, max_regression: float, guard: Guard | None = None,
           guard_value: float | None = None, classic: ClassicCheck | None = None) -> GateDecision:
    """Pass when the whole test split meets the target, keeps the guard (`guard_value`, the guarded
    score on test, >= its floor), the challenger does not trail the champion by more than
    `max_regression` there, and (under `gate.beat_classic: require`) it beat the classic anchor on
    validation; exposure and the fresh-only metric are evidence beside it."""
    if guard is not None and guard_value is None:
        raise ValueError(f"guard {guard.key} given without its test value")
    decision = GateDecision(False, metric.key, test_value, metric.target, exposure, fresh_value, min_fresh,
                            champion, max_regression, guard, guard_value, classic)
    passed = (meets_target(test_value, metric) and decision.guard_holds and champion.allows(test_value, max_regression)
              and (classic is None or classic.allows()))
    return replace(decision, passed=passed)
