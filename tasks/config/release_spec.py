"""The config's blocks about what happens after training: the gate, the drift check, where a
retrain starts and where the model is registered (re-exported by `tasks.config.spec`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config.block import ConfigBlock


class GateSpec(ConfigBlock):
    """The gate: promote when the test metric meets the target and does not fall behind the champion."""

    min_fresh_test: int = Field(
        30, ge=1, description="Report the metric on the test examples no earlier evaluation read, when "
                              "at least this many are fresh: evidence beside the decision on the whole split.")
    max_regression: float = Field(
        0.0, ge=0.0, le=1.0, description="A challenger that meets the target is still not promoted if it scores "
                                         "more than this below the current champion on the same test split.")
    beat_classic: Literal["warn", "require", "off"] = Field(
        "warn", description="When the chosen model does not beat the classic anchor (tasks/decisions/anchor.py) on "
                            "validation: warn says so in the run, the card and the decision log; require also "
                            "blocks promotion; off does not compare.")


class DriftSpec(ConfigBlock):
    """The drift check: incoming inputs vs a reference of examples the champion never trained on."""

    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="Significance level: drift when the MMD permutation "
                         "test's p-value is below it (no drift is flagged more often than this).")
    reference_size: int = Field(1000, ge=10, description="Examples the promoted weights never trained on "
                                                         "(validation, then test inputs) embedded and stored when a "
                                                         "version is promoted.")
    permutations: int = Field(500, ge=19, description="Permutations of the MMD test; p-values are multiples of "
                                                      "1/(permutations + 1).")
    keep_batches: int = Field(20, ge=1, description="Drifted batches kept for labeling per model; beyond it the "
                                                    "oldest that nobody has started labelling are removed.")
    seed: int = 0


class RetrainSpec(ConfigBlock):
    """Where a retraining run starts: the pretrained base model, or the champion's weights."""

    start_from: Literal["pretrained", "champion"] = Field(
        "pretrained",
        description="champion: start from the current champion's fine-tuned backbone (re-fine-tuning: cheaper, the "
                    "usual answer to drift); its base model must be this config's. pretrained when no champion exists.")


class RegistrySpec(ConfigBlock):
    """Where the gated model goes in the MLflow model registry."""

    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    alias: str = Field("champion", pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
