"""`retrain.start_from: champion`: a retraining run starts from the champion's fine-tuned backbone.

Re-fine-tuning is cheaper than starting over and is the usual answer to drift. The weights come
from the champion's registered artifacts (what its pyfunc serves), never from the workdir; only
the backbone is reused: the head is trained anew, since the classes may have changed. A
champion built on another base model cannot be a starting point, and the run says so before it
trains anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from tasks.config.families import model_spec
from tasks.config.spec import ModelSpec, OneModelSpec
from tasks.core.errors import SpecError

ENCODER_PREFIX = "encoder."  # how tasks.training.fit.Classifier names the backbone's parameters


@dataclass(frozen=True)
class StartingPoint:
    """The champion's backbone weights, saved as a state dict of the encoder alone."""

    version: str
    weights: Path
    sha256: str

    def describe(self) -> str:
        return f"champion v{self.version}"


def champion_starting_point(client: MlflowClient, spec: OneModelSpec, folder: Path,
                            test_ids: Callable[[], list[str]]) -> StartingPoint | None:
    """The champion's encoder weights written under `folder` (named by their hash), or None when
    there is no champion yet (the first run of a model starts from the pretrained weights). Refused when the champion
    or its warm-start lineage trained on any of this run's test examples (`test_ids`, read only
    when there is a champion)."""
    import hashlib
    import io

    from tasks.core.atomic import write_bytes_atomic
    from tasks.registry.champion import current_champion, registered_artifacts

    champion = current_champion(client, spec.registry.model_name, spec.registry.alias)
    if champion is None:
        return None
    check_never_saw_test(client, spec.registry.model_name, champion, test_ids())
    with registered_artifacts(client, str(champion.run_id)) as (config, weights):
        check_same_base_model(model_spec(config["model"], lenient=True), spec.model, spec.registry.model_name,
                              str(champion.version))
        state = torch.load(weights, map_location="cpu", weights_only=True)
    encoder = {name.removeprefix(ENCODER_PREFIX): tensor for name, tensor in state.items()
               if name.startswith(ENCODER_PREFIX)}
    # Named by content: a resumed run finds the same file, hence the same key for every step after it.
    buffer = io.BytesIO()
    torch.save(encoder, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    saved = write_bytes_atomic(folder / f"start-champion-v{champion.version}-{digest[:16]}.pt", buffer.getvalue())
    return StartingPoint(str(champion.version), saved, digest)


def check_never_saw_test(client: MlflowClient, model_name: str, champion: ModelVersion, test_ids: list[str]) -> None:
    """Weights that learned a test example would be scored on the answers they learned."""
    from tasks.registry.lineage import learned_from

    lineage = learned_from(client, model_name, champion)
    fix = ("Fix: set retrain.start_from: pretrained for this run (its weights then never saw this test split); "
           "the champion was trained under another split history (a reset, or one begun in another workdir).")
    if lineage.unreadable:
        raise SpecError(f"retrain.start_from: champion refused: what champion version {champion.version} of "
                        f"'{model_name}' trained on cannot be read ({lineage.unreadable}). {fix}")
    seen = len(lineage.ids & set(test_ids))
    if seen:
        raise SpecError(f"retrain.start_from: champion refused: champion version {champion.version} of '{model_name}' "
                        f"({lineage.describe()}) trained on {seen} of this run's {len(test_ids)} test examples. {fix}")


def check_same_base_model(champion: ModelSpec, config: ModelSpec, model_name: str, version: str) -> None:
    """Fine-tuned weights only fit the architecture they were trained in."""
    if (champion.family, champion.name) != (config.family, config.name):
        raise SpecError(
            f"retrain.start_from: champion, but champion version {version} of '{model_name}' was trained from "
            f"{champion.family} {champion.name} and this config names {config.family} {config.name}. Fix: set "
            "retrain.start_from: pretrained (a new base model starts from its pretrained weights), or set model: "
            "back to the champion's base model."
        )
