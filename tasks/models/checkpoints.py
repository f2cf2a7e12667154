"""Self-describing checkpoints: one file says what model it is and how to resume its training.

A checkpoint carries the model spec, the classes, the stage that made it, how many layer groups
were unfrozen, the operating point, the weights, and (for resuming) the optimizer, scheduler,
epoch and random-number states. Restoring a model needs the file alone, never the config that
trained it. Everything in it is a tensor or a plain value, so `torch.load(path, weights_only=True)`
reads it: loading a checkpoint never runs code from the file.

Older transferflow versions saved a bare state dict (weights only), with the model spec and the
classes in a separate `model_config.json`; `read_checkpoint(path, legacy_config=...)` reads those.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tasks.config.families import model_spec
from tasks.config.spec import ModelSpec
from tasks.core.errors import TransferflowError
from tasks.models.classifier import OperatingPoint

if TYPE_CHECKING:
    from tasks.models.classifier import Classifier

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    model: ModelSpec
    classes: list[str]                      # the order of the model's outputs
    weights: dict[str, torch.Tensor]        # the classifier's state dict (backbone + head)
    stage: str                              # e.g. `baseline`, `finetune-2`
    unfrozen_groups: int | None = None      # layer groups trained in that stage; None: not recorded (legacy)
    epoch: int | None = None                # the epoch these weights are from; None: not recorded (legacy)
    operating_point: OperatingPoint | None = None  # None: the model answers by argmax
    optimizer: dict[str, Any] | None = None  # optimizer.state_dict(), for resuming
    scheduler: dict[str, Any] | None = None  # lr scheduler state_dict(), for resuming
    rng: dict[str, Any] | None = None        # capture_rng(), for resuming
    head: dict[str, Any] | None = None       # HeadShape.as_dict(); None: linear (checkpoints from before)
    format_version: int = FORMAT_VERSION    # 0: read from a legacy bare state dict

    def for_serving(self) -> Checkpoint:
        """Without the training state: a registered model needs weights, not optimizer moments."""
        return replace(self, optimizer=None, scheduler=None, rng=None)


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    """Write the checkpoint atomically (a reader sees the old file or the whole new one)."""
    from tasks.core.atomic import write_atomic

    stored = {
        "format_version": FORMAT_VERSION, "model": checkpoint.model.model_dump(mode="json"),
        "classes": list(checkpoint.classes), "stage": checkpoint.stage,
        "unfrozen_groups": checkpoint.unfrozen_groups, "epoch": checkpoint.epoch,
        "operating_point": checkpoint.operating_point.as_dict() if checkpoint.operating_point else None,
        "weights": checkpoint.weights, "optimizer": checkpoint.optimizer, "scheduler": checkpoint.scheduler,
        "rng": checkpoint.rng, "head": checkpoint.head,
    }
    return write_atomic(path, lambda handle: torch.save(stored, handle))


def read_checkpoint(path: Path, legacy_config: dict[str, Any] | None = None) -> Checkpoint:
    """The checkpoint at `path`. A legacy bare state dict needs `legacy_config`: the parsed
    `model_config.json` registered beside it ({"model": ..., "classes": [...]}), see `legacy_config`."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(stored, dict) and "format_version" in stored:
        return _from_stored(path, stored)
    if legacy_config is None:
        raise TransferflowError(
            f"{path}: a bare state dict (weights only, from an older transferflow): it does not say which model and "
            "classes it holds. Fix: pass the model_config.json registered beside it as legacy_config, or register "
            "the model again with `transferflow run`.")
    return Checkpoint(model=model_spec(legacy_config["model"], lenient=True), classes=list(legacy_config["classes"]),
                      weights=stored, stage="unknown (legacy checkpoint)", format_version=0)


def legacy_config(model: ModelSpec, classes: list[str]) -> dict[str, Any]:
    """What a legacy bare state dict does not say about itself, in model_config.json's shape."""
    return {"model": model.model_dump(mode="json"), "classes": list(classes)}


def _from_stored(path: Path, stored: dict[str, Any]) -> Checkpoint:
    if stored["format_version"] > FORMAT_VERSION:
        raise TransferflowError(
            f"{path}: checkpoint format_version {stored['format_version']} is newer than this transferflow reads "
            f"({FORMAT_VERSION}). Fix: upgrade transferflow.")
    point = stored["operating_point"]
    return Checkpoint(
        model=model_spec(stored["model"], lenient=True), classes=list(stored["classes"]), weights=stored["weights"],
        stage=stored["stage"], unfrozen_groups=stored["unfrozen_groups"], epoch=stored["epoch"],
        operating_point=OperatingPoint.from_dict(point) if point else None, optimizer=stored["optimizer"],
        scheduler=stored["scheduler"], rng=stored["rng"], head=stored.get("head"),
        format_version=stored["format_version"])


def build_classifier(checkpoint: Checkpoint) -> Classifier:
    """The checkpoint's classifier on a freshly loaded backbone: frozen, in eval mode."""
    from tasks.models.backbones import load_backbone
    from tasks.models.classifier import Classifier, HeadShape, new_head

    backbone = load_backbone(checkpoint.model)
    backbone.restore_fit(checkpoint.weights)  # a classic family's fitted state sizes its features
    classifier = Classifier(backbone, new_head(backbone.dim, len(checkpoint.classes), 0,
                                               HeadShape.from_dict(checkpoint.head)))
    classifier.load_state_dict(checkpoint.weights)  # strict: a checkpoint of another model fails here
    classifier.requires_grad_(False)
    classifier.eval()
    return classifier


def restore_classifier_from(path: Path, legacy_config: dict[str, Any] | None = None) -> tuple[Classifier, Checkpoint]:
    """The classifier a checkpoint file holds, and what the file says about it."""
    checkpoint = read_checkpoint(path, legacy_config)
    return build_classifier(checkpoint), checkpoint


_SELECTED: dict[tuple[str, str], tuple[Classifier, Checkpoint]] = {}
_SELECTED_LOCK = threading.Lock()


def restore_selected(path: Path, sha256: str,
                     legacy_config: dict[str, Any] | None = None) -> tuple[Classifier, Checkpoint]:
    """The selected stage's classifier, restored once per process and handed on: steps 6b, 7a and
    7d name its checkpoint by path and content hash (plain values, as Prefect's retries want) and
    get the same frozen classifier back. Another hash (another run, a rewritten file) restores anew
    and lets the previous one go. Shared and frozen: callers move it and read it, never train it."""
    key = (str(path.resolve()), sha256)
    with _SELECTED_LOCK:
        if key not in _SELECTED:
            _SELECTED.clear()
            _SELECTED[key] = restore_classifier_from(path, legacy_config)
        return _SELECTED[key]


def save_selected_answering_at(path: Path, sha256: str, path_out: Path, operating_point: OperatingPoint,
                               legacy_config: dict[str, Any] | None = None) -> tuple[Path, str]:
    """The selected checkpoint answering at `operating_point`, written to `path_out` from the restored
    copy (the file is not read again); the classifier stays shared under the new file's hash, since
    its weights are the same. Returns the new file and its sha256."""
    from tasks.core.hashing import sha256_file

    classifier, checkpoint = restore_selected(path, sha256, legacy_config)
    described = replace(checkpoint, operating_point=operating_point)
    written = save_checkpoint(path_out, described)
    written_sha256 = sha256_file(written)
    with _SELECTED_LOCK:
        _SELECTED[(str(written.resolve()), written_sha256)] = (classifier, described)
    return written, written_sha256
