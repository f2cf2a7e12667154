"""The current champion, scored on the challenger's test split in the same single test read.

A challenger is promoted only if it meets the target AND is not worse than the champion by more
than `gate.max_regression` on the same test examples: passing the target alone could replace a
better model with a worse one. The champion is rebuilt from its registered artifacts (the same
state dict and config its pyfunc serves), never from anything in the workdir.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tasks.metrics import classification_metrics, contract_value
from tasks.spec import AGGREGATE_METRICS, MetricSpec, ModelSpec

if TYPE_CHECKING:
    from tasks.train import Classifier


@dataclass(frozen=True)
class ChampionComparison:
    """What the gate knows about the current champion on this run's test split."""

    version: str | None           # None: no champion yet
    value: float | None           # its declared metric on this test split; None when not compared
    skipped_because: str = ""     # why a champion was not compared

    def allows(self, challenger: float, max_regression: float) -> bool:
        """Every supported metric is higher-is-better: the challenger may trail by max_regression."""
        return self.value is None or challenger >= self.value - max_regression

    def describe(self, challenger: float, max_regression: float) -> str:
        if self.version is None:
            return "no champion yet"
        if self.value is None:
            return f"champion version {self.version} not compared: {self.skipped_because}"
        margin = challenger - self.value
        verdict = "not worse beyond" if self.allows(challenger, max_regression) else "WORSE than allowed by"
        return (f"champion version {self.version} scores {self.value:.4f} on the same test split; the challenger is "
                f"{margin:+.4f} ({verdict} gate.max_regression {max_regression:g})")


def current_champion(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version holding the alias, or None when the model or the alias does not exist yet."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def comparability(metric: MetricSpec, champion_classes: list[str], challenger_classes: list[str]) -> str:
    """'' when the declared metric means the same for both models, else why not."""
    if metric.name in AGGREGATE_METRICS and sorted(champion_classes) != sorted(challenger_classes):
        return f"its classes differ from this run's, so {metric.key} is not defined the same way for both"
    if metric.class_name and metric.class_name not in champion_classes:
        return f"it has no class '{metric.class_name}', so {metric.key} is not defined for it"
    return ""


def score_champion(client: MlflowClient, model_name: str, alias: str, inputs: list[str], y_true: np.ndarray,
                   classes: list[str], metric: MetricSpec, batch_size: int) -> ChampionComparison:
    """The champion's declared metric on these test inputs (labels as indices into `classes`)."""
    version = current_champion(client, model_name, alias)
    if version is None:
        return ChampionComparison(None, None)
    import torch

    from tasks.train import Batches, predict_proba

    classifier, champion_classes = restore_registered(client, str(version.run_id))
    why_not = comparability(metric, champion_classes, classes)
    if why_not:
        return ChampionComparison(str(version.version), None, why_not)
    probabilities = predict_proba(classifier, Batches(inputs, torch.zeros(len(inputs), dtype=torch.long), batch_size,
                                                      classifier.backbone.preprocess))
    index = {label: i for i, label in enumerate(classes)}
    # A class the challenger does not know can only be a wrong answer here (-1 matches no label).
    y_pred = np.array([index.get(champion_classes[i], -1) for i in probabilities.argmax(axis=1)])
    value = contract_value(classification_metrics(y_true, y_pred, classes), metric)
    return ChampionComparison(str(version.version), value)


@contextmanager
def registered_artifacts(client: MlflowClient, run_id: str) -> Iterator[tuple[dict, Path]]:
    """The registered pyfunc's own artifacts (see tasks.serving.save_pyfunc): its config and the
    state dict file, downloaded into a folder that lives for the block."""
    with tempfile.TemporaryDirectory() as folder:
        artifacts = Path(client.download_artifacts(run_id, "model/artifacts", folder))
        [weights] = [p for p in artifacts.iterdir() if p.name != "model_config.json"]
        yield json.loads((artifacts / "model_config.json").read_text()), weights


def restore_registered(client: MlflowClient, run_id: str) -> tuple[Classifier, list[str]]:
    """The registered classifier and its classes, rebuilt from the version's artifacts."""
    from tasks.train import restore_classifier

    with registered_artifacts(client, run_id) as (config, weights):
        model = ModelSpec.model_validate(config["model"])
        return restore_classifier(model, len(config["classes"]), weights), list(config["classes"])
