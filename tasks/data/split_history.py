"""Where a registry model's split history lives, and how it is changed without losing an assignment.

A split history is one table (example id -> split) per registry model, with an id and a
generation number. It lives where the registry lives: in the workdir for the default SQLite store
(`FolderHistoryStore`, here), on the tracking server when there is one
(`tasks.registry.split_history_store.MlflowHistoryStore`). Both are changed the same way, an
optimistic write: read the table and its generation, add the new assignments, and write generation
n + 1 only if the stored one is still n; a writer that lost the race re-reads and tries again. So
two runs that share a store never lose an assignment, whichever lock they hold or lack.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from tasks.core.atomic import exclusive_lock, write_text_atomic

HISTORY_FILE = "assignments.json"


@dataclass(frozen=True)
class History:
    """One generation of a split history: `splits` maps every example ever assigned to its split."""

    id: str
    started: str
    generation: int = 0  # 0: nothing stored yet
    splits: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def new() -> History:
        return History(uuid.uuid4().hex, datetime.now(UTC).isoformat())

    def next(self, splits: dict[str, str]) -> History:
        return History(self.id, self.started, self.generation + 1, splits)

    def to_json(self) -> str:
        return json.dumps({"history": self.id, "started": self.started, "generation": self.generation,
                           "splits": self.splits})

    @staticmethod
    def from_json(text: str) -> History:
        stored = json.loads(text)
        return History(stored["history"], stored["started"], int(stored.get("generation", 1)), stored["splits"])


class HistoryStore(Protocol):
    """What the split needs from wherever the history is kept."""

    def read(self) -> History:
        """The newest generation, or a new empty history (generation 0) when none is stored."""

    def write(self, history: History) -> bool:
        """Store `history` (generation n + 1) if the stored generation is still n; False if another
        writer stored generation n + 1 first (the caller re-reads and tries again)."""

    def retire(self) -> str | None:
        """Start a new history (nothing deleted); where the old one is kept, or None if there was none."""

    def describe(self) -> str:
        """Where the history is kept, for messages."""


class FolderHistoryStore:
    """`<folder>/assignments.json`, written atomically under a file lock: the workdir's own store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / HISTORY_FILE

    def read(self) -> History:
        return History.from_json(self.path.read_text()) if self.path.exists() else History.new()

    def write(self, history: History) -> bool:
        with exclusive_lock(self.folder / ".lock"):
            stored = self.read().generation if self.path.exists() else 0
            if stored != history.generation - 1:
                return False
            write_text_atomic(self.path, history.to_json())
            return True

    def retire(self) -> str | None:
        """The current table is renamed as retired (nothing is deleted)."""
        with exclusive_lock(self.folder / ".lock"):
            if not self.path.exists():
                return None
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            retired = self.folder / f"assignments-retired-{stamp}.json"
            os.replace(self.path, retired)
            return str(retired)

    def describe(self) -> str:
        return str(self.path)
