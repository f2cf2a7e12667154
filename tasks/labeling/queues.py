"""Review queues: the examples a person should look at, with what the tool knows about each.

- `suspects`: the label audit's disputed labels from the newest data report (`label_issues.csv`),
  with the current label (the labels store applied) and cleanlab's suggestion and score;
- `incoming`: a batch `transferflow drift` kept for labelling, unlabelled;
- `cross-check`: a seeded, stratified sample for a second labeller, who sees no label at all: their
  answers are second opinions (`data.cross_check`), never corrections.

Each item says whether it is labelled blind, shown no model's opinion (neither the champion's
prediction nor the audit's suggestion). Test examples are: their labels decide the gate, so they
must not lean toward the champion it compares against. So is every example the split history
does not hold yet (a kept batch's inputs): the next run may put any of them in test. Only examples
recorded in train or validation get the champion's prediction as a pre-annotation.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pandas as pd

from tasks.config.data_kinds import DataKindOptions, reads_files
from tasks.core.atomic import write_text_atomic
from tasks.core.errors import DataError
from tasks.core.hashing import sha256_file, sha256_text
from tasks.data.labels_store import apply_store
from tasks.data.table import LoadedData, read_csv

QueueName = Literal["suspects", "incoming", "cross-check"]
QUEUES: tuple[QueueName, ...] = ("suspects", "incoming", "cross-check")
CROSS_CHECK_SAMPLE = 100  # the default size of a cross-check sample (`--limit` changes it)
SIGHTED_SPLITS = ("train", "val")  # the only splits whose examples may carry a pre-annotation


@dataclass(frozen=True)
class QueueItem:
    """One example to review or label."""

    example_id: str
    input: str                  # the text, or the local file's path
    current_label: str = ""     # "" when it has none (an incoming example)
    suggestion: str = ""        # the label audit's suggested label (suspects)
    score: float | None = None  # the label audit's score: low is most suspect
    split: str = ""             # "train", "val", "test", or "" when not yet split
    prediction: str = ""        # the champion's label, only for sighted items
    confidence: float | None = None

    @property
    def blind(self) -> bool:
        """Labelled without the champion's prediction: a test example, or one not yet split."""
        return self.split not in SIGHTED_SPLITS

    @property
    def shown_suggestion(self) -> tuple[str, float | None]:
        """The audit's suggestion and score as a reviewer may see them: none on a blind item, since
        the audit's probe reads the champion's base-model features, so it is a model's opinion too."""
        return ("", None) if self.blind else (self.suggestion, self.score)


@dataclass(frozen=True)
class Queue:
    name: QueueName
    modality: str
    source: str                 # the report or batch folder it was read from
    items: tuple[QueueItem, ...]


def suspects_queue(loaded: LoadedData, data: DataKindOptions, reports: Path, splits: Mapping[str, str]) -> Queue:
    """The newest data report's disputed labels, most suspect first, with each example's split."""
    found = sorted(reports.glob("*/label_issues.csv"), key=lambda path: path.stat().st_mtime) \
        if reports.is_dir() else []
    if not found:
        raise DataError(f"{reports}: no data report with label_issues.csv yet. Fix: run `transferflow validate` "
                        "(or `run`) on this config first.")
    issues = read_csv(found[-1])
    current, _ = apply_store(loaded, data)
    table = current.table.drop_duplicates("example_id").set_index("example_id")
    given = table["given_split"].fillna("").astype(str)
    items = []
    for row in issues.itertuples(index=False):
        example_id = str(row.example_id)
        if example_id not in table.index:
            continue  # gone from the data since the report
        score = getattr(row, "score", None)
        items.append(QueueItem(example_id, str(table.at[example_id, "input"]), str(table.at[example_id, "label"]),
                               str(getattr(row, "suggested_label", "") or ""),
                               None if score is None or pd.isna(score) else float(score),
                               splits.get(example_id) or given.get(example_id, "")))
    return Queue("suspects", data.MODALITY, str(found[-1]), tuple(items))


def latest_batch(workdir: Path, model_name: str) -> Path:
    """The newest batch `transferflow drift` kept for this model."""
    folder = workdir.resolve() / "incoming" / model_name
    batches = sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file()) if folder.is_dir() else []
    if not batches:
        raise DataError(f"{folder}: no kept batch. Fix: run `transferflow drift CONFIG --incoming FOLDER` first, "
                        "or pass --batch.")
    return batches[-1]


def incoming_queue(batch: Path, data: DataKindOptions) -> Queue:
    """A kept batch's inputs, unlabelled and not yet split (so all blind)."""
    try:
        manifest = json.loads((batch / "manifest.json").read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{batch}: not a batch kept by `transferflow drift` ({error}). Fix: pass a folder under "
                        "<workdir>/incoming/<model>/.") from None
    if manifest.get("modality") != data.MODALITY:
        raise DataError(f"{batch}: a batch of {manifest.get('modality')} inputs, but data.kind {data.kind} reads "
                        f"{data.MODALITY}. Fix: pass a batch kept for this config's model.")
    if reads_files(data.MODALITY):
        files = [batch / name for name in manifest["files"] if name.startswith("unlabeled/")]
        items = tuple(QueueItem(sha256_file(path), str(path)) for path in files if path.is_file())
    else:
        texts = read_csv(batch / "texts.csv")[data.csv_columns.text].dropna().astype(str)
        items = tuple(QueueItem(sha256_text(text), text) for text in texts)
    return Queue("incoming", data.MODALITY, str(batch), items)


def cross_check_queue(loaded: LoadedData, data: DataKindOptions, size: int, seed: int,
                      done: set[str]) -> Queue:
    """A sample of `size` examples no second labeller has answered yet (`done`), stratified by label
    where every class can give two, shown without their label or any model's opinion."""
    from sklearn.model_selection import train_test_split

    current, _ = apply_store(loaded, data)
    table = current.table.dropna(subset=["label"]).drop_duplicates("example_id")
    table = table[~table["example_id"].astype(str).isin(done)]
    if len(table) > size:
        counts = table["label"].value_counts()
        stratify = table["label"] if counts.min() >= 2 and size >= len(counts) else None
        table, _ = train_test_split(table, train_size=size, random_state=seed, stratify=stratify)
    items = tuple(QueueItem(str(row.example_id), str(row.input)) for row in table.itertuples(index=False))
    return Queue("cross-check", data.MODALITY, str(data.path), items)


def with_predictions(queue: Queue, predictions: Mapping[str, tuple[str, float]]) -> Queue:
    """The queue with the champion's (label, probability) on its sighted items; blind ones never get one."""
    items = tuple(replace(item, prediction=predictions[item.example_id][0],
                          confidence=predictions[item.example_id][1])
                  if not item.blind and item.example_id in predictions else item for item in queue.items)
    return replace(queue, items=items)


def write_queue(queue: Queue, out: Path) -> Path:
    """The queue as the CSV `label pull --from` reads back: queue, id, input, current_label,
    suggestion, score, prediction and an empty `label` column (a cross-check item's current label
    stays empty: the second labeller labels blind). For images and sounds, an `out` that is not a
    .csv is a folder: the files are copied under `files/` and its `queue.csv` points at them, so a
    reviewer can browse them. Returns the CSV written."""
    rows = pd.DataFrame({"queue": queue.name, "id": [i.example_id for i in queue.items],
                         "input": [i.input for i in queue.items],
                         "current_label": [i.current_label for i in queue.items],
                         "suggestion": [i.shown_suggestion[0] for i in queue.items],
                         "score": [i.shown_suggestion[1] for i in queue.items],
                         "prediction": [i.prediction for i in queue.items], "label": ""})
    csv = out
    if reads_files(queue.modality) and out.suffix.lower() != ".csv":
        if out.exists() and any(out.iterdir()):
            raise DataError(f"{out}: the folder exists and is not empty. Fix: pass a new folder or a .csv with --out.")
        relative = [f"files/{i.example_id[:16]}{Path(i.input).suffix.lower()}" for i in queue.items]
        for item, name in zip(queue.items, relative, strict=True):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.input, out / name)
        rows["input"] = relative
        csv = out / "queue.csv"
    return write_text_atomic(csv, rows.to_csv(index=False))
