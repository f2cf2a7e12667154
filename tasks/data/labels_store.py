"""The labels store: reviewed labels kept as append-only records beside the data, and applied when
the data loads (step 2a).

People review suspects and label kept batches outside the tool; their answers come back through
`transferflow label pull`. The user's data files are never rewritten (they may be read-only, or
shared): each pull writes one new JSON-lines file of records in the store folder
(`data.labels_folder`), atomically, and nothing in the store is ever edited. A bad pull is undone by
a revert file whose records name the pull; the loader then skips that pull's records.

A record says: the example id, the old and the new label, who, when (UTC ISO), its source (project
or file) and task (id or row), and its kind: `correction` (a known example's label changed), `new`
(an example the data lacks: its text, or a file the pull copied into the store's `files/` folder),
`revert`, or `second` (a second labeller's blind answer from the cross-check queue: it never changes
a label, it is what `data.cross_check` measures agreement with). The loader applies them in pull
order, the last one per example winning; a pull that contradicts an earlier reviewer's applied
label is refused (`record_answers` says why). Ids never change with a correction, so the sticky
split keeps a corrected test example in test; new examples under given splits go to training.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from tasks.config.data_kinds import DataKindOptions, reads_files
from tasks.core.atomic import write_text_atomic
from tasks.core.errors import DataError
from tasks.core.hashing import sha256_file, sha256_text
from tasks.data.table import LoadedData

RecordKind = Literal["correction", "new", "revert", "second"]
PULL_SUFFIX = ".jsonl"
FILES_FOLDER = "files"
SHOWN_ROWS = 5


@dataclass(frozen=True)
class LabelRecord:
    """One answer (or one revert), as the store keeps it."""

    example_id: str
    old_label: str | None
    new_label: str | None
    who: str
    when: str
    source: str
    task: str
    kind: RecordKind
    pull: str
    input: str | None = None   # a new example: its text, or its file relative to the store folder
    reverts: str | None = None  # a revert: the pull it undoes


@dataclass(frozen=True)
class StoreCounts:
    """What the store changed in the loaded data, for the log and the data report."""

    corrected: int = 0
    added: int = 0
    pulls: int = 0
    reverted_pulls: int = 0


@dataclass(frozen=True)
class PullResult:
    """What `label pull` did: its id (None when nothing needed recording) and its counts."""

    pull: str | None
    corrected: int
    confirmed: int
    new: int
    skipped: int
    corrected_ids: tuple[str, ...] = ()
    second: int = 0  # second opinions recorded (cross-check)


def read_records(folder: Path) -> list[LabelRecord]:
    """Every record in the store, pull by pull in the order they were written (names sort by time)."""
    if not folder.is_dir():
        return []
    records: list[LabelRecord] = []
    for path in sorted(folder.glob(f"pull-*{PULL_SUFFIX}")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(LabelRecord(**json.loads(line)))
            except (ValueError, TypeError) as error:
                raise DataError(f"{path}: line {number} is not a labels-store record ({error}). Fix: restore the "
                                "file as `label pull` wrote it; the store is append-only.") from None
    return records


def pull_ids(folder: Path) -> list[str]:
    """The pulls in the store, oldest first."""
    return [path.name.removesuffix(PULL_SUFFIX) for path in sorted(folder.glob(f"pull-*{PULL_SUFFIX}"))] \
        if folder.is_dir() else []


def apply_store(loaded: LoadedData, data: DataKindOptions) -> tuple[LoadedData, StoreCounts]:
    """The loaded data with the store's corrections and new examples applied (the records of
    reverted pulls skipped), and the counts. The table's ids are kept, so nothing re-splits."""
    folder = data.labels_folder
    records = read_records(folder)
    if not records:
        return loaded, StoreCounts()
    reverted = {r.reverts for r in records if r.kind == "revert" and r.reverts}
    latest = applied_records(folder)
    table = loaded.table.copy()
    position = {example_id: i for i, example_id in enumerate(table["example_id"])}
    corrected = 0
    new_rows = []
    given = table["given_split"].fillna("").astype(bool).any()
    for example_id, record in latest.items():
        if example_id in position:
            row = table.index[position[example_id]]
            if table.at[row, "label"] != record.new_label:
                table.at[row, "label"] = record.new_label
                corrected += 1
        elif record.kind == "new" and record.input is not None:
            source = f"{folder.name}/{record.pull} ({record.task})"
            new_input = str(folder / record.input) if reads_files(data.MODALITY) else record.input
            new_rows.append({"example_id": example_id, "input": new_input, "label": record.new_label,
                             "given_split": "train" if given else "", "source": source})
    if new_rows:
        table = pd.concat([table, pd.DataFrame(new_rows, columns=table.columns)], ignore_index=True)
    pulls = {r.pull for r in records if r.kind in ("correction", "new")}
    counts = StoreCounts(corrected, len(new_rows), len(pulls), len(reverted & pulls))
    return LoadedData(table, loaded.declared_classes, loaded.skipped_files, loaded.quarantined), counts


@dataclass(frozen=True)
class Answer:
    """One person's answer to one queue item, from a filled-in CSV row or a Label Studio annotation.
    `example_id` names a known example; a new one comes with `new_input` instead (its text, or its
    file: a path, relative paths resolved against the `base` given to `record_answers`)."""

    where: str                  # for messages and the record's `task`: "row 7", "task 12"
    label: str | None           # None: not answered yet (skipped, counted)
    example_id: str | None = None
    new_input: str | None = None
    who: str | None = None
    source: str | None = None   # where it came from, when not the pull's own source (a server's project)
    second: bool = False        # a cross-check answer: a second opinion, recorded, never applied


def record_answers(loaded: LoadedData, data: DataKindOptions, answers: Sequence[Answer], source: str,
                   base: Path, who: str | None = None, now: datetime | None = None) -> PullResult:
    """Check every answer against the data as it loads now (the store applied), then write one pull
    file. Any bad answer refuses them all, so nothing is half-applied. An answer that agrees with
    the current label is a confirmation: counted, not recorded.

    A conflict is an answer that contradicts a reviewed label already applied from another task or
    row (two people disagreeing). The applied label wins and the pull is refused: a reviewed label
    is changed by a deliberate revert, never by whichever pull happens to come last. The same task
    or row answered again (a person editing their own answer) is not a conflict: the edit wins."""
    current, _ = apply_store(loaded, data)
    labels = dict(zip(current.table["example_id"].astype(str), current.table["label"], strict=True))
    classes = list(loaded.declared_classes or sorted(current.table["label"].dropna().unique()))
    applied, opinions = applied_records(data.labels_folder), second_opinions(data.labels_folder)
    folder = data.labels_folder
    stamp = now or datetime.now(UTC)
    pull = f"pull-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:6]}"
    when = stamp.isoformat(timespec="seconds")
    default_who = who or os.environ.get("USER") or "unknown"
    problems: list[str] = []
    records: list[LabelRecord] = []
    copies: list[tuple[Path, Path]] = []
    confirmed = skipped = 0
    for answer in answers:
        label = answer.label
        if label is None:
            skipped += 1
            continue
        if label not in classes:
            problems.append(f"{answer.where}: label '{label}' is not a class (write one of {', '.join(classes[:12])})")
            continue
        example_id, new_input = answer.example_id, None
        if (example_id is None or example_id not in labels) and answer.new_input is not None:
            found_id, new_input, copy = _new_example(answer.new_input, data, folder, base)
            if found_id is None:
                problems.append(f"{answer.where}: '{answer.new_input}' is not a file (give a path relative to {base})")
                continue
            if example_id is not None and example_id != found_id:
                problems.append(f"{answer.where}: id '{example_id}' is not the id of its input (the input changed "
                                "since the queue was written); export the queue again")
                continue
            example_id = found_id
            if copy:
                copies.append(copy)
        if example_id is None:
            problems.append(f"{answer.where}: no id (give the example id, or the input of a new one)")
            continue
        if example_id not in labels and new_input is None:
            problems.append(f"{answer.where}: id '{example_id}' names no example of the data ({data.path}); "
                            "export the queue again")
            continue
        old = labels.get(example_id)
        if answer.second:
            if new_input is not None:
                problems.append(f"{answer.where}: a cross-check answer for an example the data lacks (id '{example_id}'"
                                "); export the cross-check queue again")
            elif opinions.get(example_id, None) is None or opinions[example_id].new_label != label:
                records.append(LabelRecord(example_id, old, label, answer.who or default_who, when,
                                           answer.source or source, answer.where, "second", pull))
                opinions[example_id] = records[-1]
            continue
        if old == label:
            confirmed += 1
            continue
        earlier, origin = applied.get(example_id), answer.source or source
        same_task = earlier is not None and (earlier.source, earlier.task) == (origin, answer.where)
        if earlier is not None and earlier.new_label == old and not same_task:
            problems.append(f"{answer.where}: says '{label}', but {earlier.who} set '{old}' in {earlier.pull} "
                            f"({earlier.source}, {earlier.task}); the applied label stands, since a reviewed label "
                            f"changes only by a deliberate revert. If '{label}' is right: transferflow label revert "
                            f"--pull {earlier.pull}, then pull again")
            continue
        kind: RecordKind = "correction" if example_id in labels else "new"
        records.append(LabelRecord(example_id, old, label, answer.who or default_who, when, origin, answer.where,
                                   kind, pull, new_input if kind == "new" else None))
        labels[example_id] = label  # a later answer for the same example sees this one
    if problems:
        more = f" (+{len(problems) - SHOWN_ROWS} more)" if len(problems) > SHOWN_ROWS else ""
        raise DataError(f"{source}: {len(problems)} bad answer(s), nothing applied: "
                        f"{'; '.join(problems[:SHOWN_ROWS])}{more}. Fix: correct them and pull again.")
    corrected, second = (sum(r.kind == kind for r in records) for kind in ("correction", "second"))
    if not records:
        return PullResult(None, 0, confirmed, 0, skipped)
    for file_source, target in copies:  # the new files first: a record never names a missing file
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file_source, target)
    _write_pull(folder, pull, records)
    return PullResult(pull, corrected, confirmed, len(records) - corrected - second, skipped,
                      tuple(r.example_id for r in records if r.kind == "correction"), second)


def applied_records(folder: Path) -> dict[str, LabelRecord]:
    """The record in force per example: the last correction or new example of a pull not reverted."""
    return _in_force(folder, ("correction", "new"))


def second_opinions(folder: Path) -> dict[str, LabelRecord]:
    """The second labeller's answer in force per example (cross-check), the last of a pull not reverted."""
    return _in_force(folder, ("second",))


def _in_force(folder: Path, kinds: tuple[RecordKind, ...]) -> dict[str, LabelRecord]:
    records = read_records(folder)
    reverted = {r.reverts for r in records if r.kind == "revert" and r.reverts}
    return {r.example_id: r for r in records if r.kind in kinds and r.pull not in reverted}


def revert_pull(data: DataKindOptions, pull: str, who: str | None = None, now: datetime | None = None) -> int:
    """Undo a pull by a new revert file (never an edit); returns how many records it undoes."""
    folder = data.labels_folder
    if pull not in pull_ids(folder):
        raise DataError(f"{folder}: no pull '{pull}' in the labels store. Fix: name one of "
                        f"{', '.join(pull_ids(folder)) or '(none yet)'}.")
    records = read_records(folder)
    if any(r.kind == "revert" and r.reverts == pull for r in records):
        raise DataError(f"{folder}: pull '{pull}' is already reverted. Fix: nothing to do.")
    undone = [r for r in records if r.pull == pull]
    stamp = now or datetime.now(UTC)
    revert_id = f"pull-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:6]}"
    when, who = stamp.isoformat(timespec="seconds"), who or os.environ.get("USER") or "unknown"
    _write_pull(folder, revert_id, [LabelRecord(r.example_id, r.new_label, r.old_label, who, when, "revert",
                                                r.task, "revert", revert_id, None, pull) for r in undone])
    return len(undone)


def _write_pull(folder: Path, pull: str, records: Sequence[LabelRecord]) -> Path:
    lines = "".join(json.dumps(record.__dict__, ensure_ascii=False) + "\n" for record in records)
    return write_text_atomic(folder / f"{pull}{PULL_SUFFIX}", lines)


def _new_example(value: str, data: DataKindOptions, folder: Path,
                 base: Path) -> tuple[str | None, str | None, tuple[Path, Path] | None]:
    """A new example's id, its input as the record keeps it, and (for files) the copy into the store."""
    if not reads_files(data.MODALITY):
        return sha256_text(value), value, None
    source = Path(value).expanduser()
    source = source if source.is_absolute() else base / source
    if not source.is_file():
        return None, None, None
    example_id = sha256_file(source)
    relative = f"{FILES_FOLDER}/{example_id[:16]}{source.suffix.lower()}"
    return example_id, relative, (source, folder / relative)
