"""Per-epoch checkpoints inside one `fit`, so a stage killed mid-way resumes at its last finished
epoch and continues exactly as an uninterrupted run would.

One file per epoch (`epoch-0003.pt`), written atomically; once it is whole the earlier ones are
removed, so a folder holds the last finished epoch (and, for a moment, the one before). A file
holds the weights, the optimizer and scheduler states, every random state (the batch-shuffle
generator included), the validation history, the best epoch's weights and scores, and the
patience counter: tensors and plain values only, read back with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tasks.core.atomic import write_atomic
from tasks.training.fit import EpochRecord

EPOCH_FILE = re.compile(r"^epoch-(\d{4,})\.pt$")


@dataclass
class EpochState:
    """Everything `fit` needs to continue after `epoch`."""

    epoch: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    history: list[EpochRecord]
    best_state: dict[str, torch.Tensor]
    best_scores: dict[str, float] | None
    best_epoch: int
    stale: int  # epochs since the last gain (the patience counter)


def save_epoch(folder: Path, state: EpochState) -> Path:
    """Write `folder/epoch-NNNN.pt` atomically, then remove the earlier epochs' files."""
    stored = {**{key: value for key, value in vars(state).items() if key != "history"},
              "history": [asdict(record) for record in state.history]}
    path = write_atomic(folder / f"epoch-{state.epoch:04d}.pt", lambda handle: torch.save(stored, handle))
    for earlier, epoch in _epoch_files(folder):
        if epoch < state.epoch:
            earlier.unlink(missing_ok=True)
    return path


def latest_epoch(folder: Path) -> EpochState | None:
    """The last finished epoch saved in `folder`, or None when there is none."""
    files = _epoch_files(folder)
    if not files:
        return None
    path, _ = max(files, key=lambda item: item[1])
    stored = torch.load(path, map_location="cpu", weights_only=True)
    stored["history"] = [EpochRecord(**record) for record in stored["history"]]
    return EpochState(**stored)


def _epoch_files(folder: Path) -> list[tuple[Path, int]]:
    if not folder.is_dir():
        return []
    return [(path, int(match.group(1))) for path in folder.iterdir() if (match := EPOCH_FILE.match(path.name))]
