"""The model a run trains and a registered version serves: a backbone with a linear head, its
probabilities, and the operating point it answers with (chosen on validation by
tasks/decisions/operating_point.py, stored in the checkpoint, applied here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.models.backbones import Backbone
from tasks.models.devices import autocast, to_device
from tasks.models.loader import Batches


class Classifier(nn.Module):
    """Backbone encoder + head (linear, or a small MLP): raw inputs (preprocessed) -> class logits."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.encoder = backbone.module  # registered so parameters and state_dict include it
        self.head = head

    def forward(self, batch: Any) -> torch.Tensor:
        return self.head(self.backbone.embed(batch))


def predict_proba(model: nn.Module, batches: Batches) -> np.ndarray:
    """Class probabilities [n, classes] in input order, computed on the device the model is on."""
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode(), autocast(device):
        chunks = [torch.softmax(model(to_device(inputs, device)).float(), dim=1).cpu()
                  for inputs, _ in batches.iterate()]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class HeadShape:
    """What the head on the embeddings is: `linear`, or `mlp` (one hidden ReLU layer, dropout)."""

    kind: str = "linear"
    hidden: int = 0
    dropout: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The form a checkpoint stores (plain values)."""
        return {"kind": self.kind, "hidden": self.hidden, "dropout": self.dropout}

    @classmethod
    def from_dict(cls, stored: dict[str, Any] | None) -> HeadShape:
        """None (a checkpoint from before heads had shapes): linear."""
        return cls(str(stored["kind"]), int(stored["hidden"]), float(stored["dropout"])) if stored else cls()

    def describe(self) -> str:
        return "linear head" if self.kind == "linear" else f"MLP head ({self.hidden} hidden, dropout {self.dropout:g})"


LINEAR = HeadShape()


def new_head(dim: int, n_classes: int, seed: int, shape: HeadShape = LINEAR) -> nn.Module:
    torch.manual_seed(seed)
    if shape.kind == "mlp":
        return nn.Sequential(nn.Linear(dim, shape.hidden), nn.ReLU(), nn.Dropout(shape.dropout),
                             nn.Linear(shape.hidden, n_classes))
    return nn.Linear(dim, n_classes)


def class_indices(labels: Sequence[str], classes: list[str]) -> torch.Tensor:
    """Labels -> their positions in `classes` (the order of the model's outputs)."""
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[label] for label in labels], dtype=torch.long)


@dataclass(frozen=True)
class OperatingPoint:
    """Answer `class_name` when p(class_name) >= threshold, otherwise the likeliest other class."""

    class_name: str
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        """The form a checkpoint stores (plain values, so `torch.load(weights_only=True)` reads it)."""
        return {"class": self.class_name, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> OperatingPoint:
        return cls(str(stored["class"]), float(stored["threshold"]))

    def describe(self) -> str:
        return f"answer {self.class_name} when p({self.class_name}) >= {self.threshold:.4f}, else the likeliest other"


def apply_operating_point(probabilities: np.ndarray, classes: list[str],
                          operating_point: OperatingPoint | None) -> np.ndarray:
    """Predicted class indices: the class when p(class) >= threshold, otherwise the argmax of the
    other classes; plain argmax when there is no operating point. Probabilities are not changed."""
    if operating_point is None:
        return probabilities.argmax(axis=1)
    index = classes.index(operating_point.class_name)
    others = probabilities.astype(np.float64, copy=True)
    others[:, index] = -np.inf
    return np.where(probabilities[:, index] >= operating_point.threshold, index, others.argmax(axis=1))
