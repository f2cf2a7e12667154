"""The classic anchor: what a bag of words (or raw pixels, or MFCCs) with a regularized linear
head scores on validation, and whether the chosen transferred model beats it.

Transfer learning earns its cost only by beating the obvious classic model on the same split.
Every run scores the anchor on validation (never on test: the quarantine holds), and says in one
plain line when the chosen model does not beat it; `gate.beat_classic` decides whether that blocks
promotion (`warn`: it is said and logged; `require`: the gate fails; `off`: not checked).
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.training.metrics import Contract


@dataclass(frozen=True)
class ClassicAnchor:
    """The anchor's result on validation (trained on train only)."""

    model: str                    # the classic family's description, e.g. `tfidf`
    val_value: float              # the declared metric
    val_scores: dict[str, float]
    C: float                      # the logistic regression's inverse regularization, chosen on validation
    features: int
    seconds: float

    def describe(self, metric_key: str) -> str:
        return (f"{self.model} ({self.features:,} features fitted on the training split) + logistic regression "
                f"(C={self.C:g}, chosen on validation): validation {metric_key} {self.val_value:.4f}")


@dataclass(frozen=True)
class ClassicCheck:
    """The chosen model against the anchor, on validation, and what `gate.beat_classic` makes of it."""

    policy: str          # warn | require | off
    anchor: str
    anchor_value: float
    chosen: str          # the selected stage
    chosen_value: float
    beaten: bool         # the chosen model is better by the contract (guard first, then the metric)
    chosen_is_classic: bool = False

    def allows(self) -> bool:
        """Whether the gate may promote as far as the anchor is concerned."""
        return self.policy != "require" or self.beaten

    def line(self, metric_key: str) -> str:
        """The one plain line a run says about the anchor."""
        scores = f"validation {metric_key} {self.chosen_value:.4f} against {self.anchor_value:.4f}"
        if self.chosen_is_classic:
            return f"The chosen model ({self.chosen}) is a classic model itself ({scores} for the anchor)."
        if self.beaten:
            return f"The chosen model ({self.chosen}) beats the classic anchor {self.anchor} ({scores})."
        consequence = {"require": "gate.beat_classic: require blocks its promotion",
                       "warn": "gate.beat_classic: warn lets the gate decide on the target alone",
                       "off": "gate.beat_classic is off"}[self.policy]
        return (f"The chosen model ({self.chosen}) does not beat the classic anchor {self.anchor} ({scores}): "
                f"{consequence}; consider the classic model (add it to model.candidates) or a hybrid.")


def check_against_anchor(chosen: str, chosen_scores: dict[str, float], chosen_is_classic: bool,
                         anchor: ClassicAnchor, contract: Contract, policy: str) -> ClassicCheck:
    """Compare on validation with the contract; a tie does not beat the anchor (it is the simpler model)."""
    beaten = chosen_is_classic or contract.better(chosen_scores, anchor.val_scores)
    return ClassicCheck(policy, anchor.model, anchor.val_value, chosen, contract.value(chosen_scores), beaten,
                        chosen_is_classic)
