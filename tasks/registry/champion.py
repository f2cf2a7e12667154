"""The current champion, scored on the challenger's test split in the same single test read.

A challenger is promoted only if it meets the target AND is not worse than the champion by more
than `gate.max_regression` on the same test examples: passing the target alone could replace a
better model with a worse one. The champion is rebuilt from its registered artifacts (the same
checkpoint its pyfunc serves, answering at its own stored operating point), never from anything
in the workdir.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tasks.config.spec import AGGREGATE_METRICS, MetricSpec
from tasks.decisions.gate import ChampionComparison
from tasks.training.metrics import Guard, classification_metrics, contract_value

if TYPE_CHECKING:
    from tasks.models.checkpoints import Checkpoint
    from tasks.models.classifier import Classifier

LEGACY_CONFIG = "model_config.json"  # beside the bare state dict of a version registered by older code


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


def score_champion(client: MlflowClient, model_name: str, alias: str, test_ids: list[str], inputs: list[str],
                   y_true: np.ndarray, y_challenger: np.ndarray, classes: list[str], metric: MetricSpec,
                   batch_size: int, min_fresh: int, guard: Guard | None = None) -> ChampionComparison:
    """The champion's declared metric on these test examples (labels as indices into `classes`),
    its answers taken at its own stored operating point, as its pyfunc answers. Examples the
    champion or its warm-start lineage trained on (`tasks.registry.lineage`) are left out, and the
    challenger (`y_challenger`, its answers on all of them) is scored on the same rest; with fewer
    than `min_fresh` left there is no comparison."""
    version = current_champion(client, model_name, alias)
    if version is None:
        return ChampionComparison(None, None)
    import torch

    from tasks.models.classifier import apply_operating_point, predict_proba
    from tasks.models.loader import Batches
    from tasks.registry.lineage import learned_from

    lineage = learned_from(client, model_name, version)
    if lineage.unreadable:
        return ChampionComparison(str(version.version), None, f"what it trained on cannot be read "
                                  f"({lineage.unreadable}), so it cannot be scored only on examples it never saw")
    keep = np.array([i not in lineage.ids for i in test_ids], dtype=bool)
    left_out = int((~keep).sum())
    if left_out and keep.sum() < min_fresh:  # the whole split, when nothing is left out, as before
        return ChampionComparison(str(version.version), None, (
            f"it ({lineage.describe()}) trained on {left_out} of the {len(test_ids)} test examples; the "
            f"{int(keep.sum())} left are fewer than gate.min_fresh_test ({min_fresh})"), left_out=left_out)
    classifier, checkpoint = restore_registered(client, str(version.run_id))
    champion_classes = checkpoint.classes
    why_not = comparability(metric, champion_classes, classes)
    if why_not:
        return ChampionComparison(str(version.version), None, why_not)
    kept_inputs = [text for text, kept in zip(inputs, keep, strict=True) if kept]
    probabilities = predict_proba(classifier, Batches(kept_inputs, torch.zeros(len(kept_inputs), dtype=torch.long),
                                                      batch_size, classifier.backbone.preprocess))
    index = {label: i for i, label in enumerate(classes)}
    # A class the challenger does not know can only be a wrong answer here (-1 matches no label).
    y_pred = np.array([index.get(champion_classes[i], -1)
                       for i in apply_operating_point(probabilities, champion_classes, checkpoint.operating_point)])
    scores = classification_metrics(y_true[keep], y_pred, classes)
    challenger = (contract_value(classification_metrics(y_true[keep], y_challenger[keep], classes), metric)
                  if left_out else None)
    breaks = guard is not None and scores[guard.key] < guard.floor
    return ChampionComparison(str(version.version), contract_value(scores, metric),
                              broken_guard=guard.describe() if breaks and guard else "",
                              guard_value=scores[guard.key] if guard else None, left_out=left_out,
                              challenger_value=challenger)


def registered_checkpoint(client: MlflowClient, run_id: str) -> Checkpoint:
    """The checkpoint a registered version serves (see tasks.registry.serving.save_pyfunc), read from the
    version's own artifacts. A version registered before checkpoints described themselves holds a
    bare state dict beside model_config.json, which says the model and classes."""
    from tasks.models.checkpoints import read_checkpoint
    from tasks.registry.serving import download_model_files

    with tempfile.TemporaryDirectory() as folder:
        artifacts = download_model_files(client, run_id, "artifacts", folder)
        config = artifacts / LEGACY_CONFIG
        [weights] = [p for p in artifacts.iterdir() if p != config]
        return read_checkpoint(weights, json.loads(config.read_text()) if config.exists() else None)


@contextmanager
def registered_artifacts(client: MlflowClient, run_id: str) -> Iterator[tuple[dict, Path]]:
    """A registered version as (model config, bare state dict file): the model spec and classes in
    model_config.json's shape, and the weights in a file that lives for the block, for new and
    legacy versions alike. (The warm start reads this view; new readers use `registered_checkpoint`.)"""
    import torch

    from tasks.models.checkpoints import legacy_config

    checkpoint = registered_checkpoint(client, run_id)
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "weights.pt"
        torch.save(checkpoint.weights, weights)
        yield legacy_config(checkpoint.model, checkpoint.classes), weights


def restore_registered(client: MlflowClient, run_id: str) -> tuple[Classifier, Checkpoint]:
    """The registered classifier and its checkpoint (classes, operating point), from the version's artifacts."""
    from tasks.models.checkpoints import build_classifier

    checkpoint = registered_checkpoint(client, run_id)
    return build_classifier(checkpoint), checkpoint
