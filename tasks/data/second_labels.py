"""The second labels of a cross-check (`data.cross_check.labels`), read and matched to the examples
they name.

The file is a UTF-8 CSV with a `label` column and one key column: `path` (a file relative to the
data folder, for kinds of files), `text` (the text itself, for kinds of texts) or `id` (the example
id, for any kind). Every row must name an example of the loaded data and one of its classes: a row
that does not is an error naming the file, the row and the fix, never a row silently left out, since
a cross-check that quietly shrinks measures less than it claims. With `data.select_classes`, a row
naming no loaded example may be one of a class left out: such rows are counted, not refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.config.data_kinds import DataKindOptions, reads_files
from tasks.core.errors import DataError
from tasks.data.labels_store import second_opinions
from tasks.data.readers.csv_files import row_number
from tasks.data.table import read_csv

LABEL_COLUMN = "label"
KEY_COLUMNS = ("path", "text", "id")
SHOWN_ROWS = 5
SHOWN_CLASSES = 12


@dataclass(frozen=True)
class SecondLabels:
    """The rows matched to examples: `example_id`, `second_label` and `row` (as a spreadsheet shows it)."""

    frame: pd.DataFrame
    outside_selection: int  # rows naming no loaded example, under data.select_classes


def read_second_labels(data: DataKindOptions, table: pd.DataFrame, classes: Sequence[str]) -> SecondLabels:
    """The second labels of `data.cross_check`, matched against the loaded `table` (before anything
    is taken out, so a row naming a quarantined example is still a known one)."""
    assert data.cross_check is not None
    path = data.cross_check.labels
    if path is None:
        return _from_store(data, table, classes)
    frame = read_csv(path)
    key = _key_column(path, [str(c) for c in frame.columns], data)
    rows = pd.Series([row_number(i) for i in frame.index], index=frame.index)
    ids = frame[key].map(_id_finder(key, table, data))
    unknown = ids.isna()
    if unknown.any() and not data.select_classes:
        _refuse(path, [f"row {rows[i]}: {key} '{frame.at[i, key]}'" for i in frame.index[unknown]],
                f"name no example of the data ({data.path})",
                f"correct the {key} ({_key_meaning(key)}), or remove the rows")
    matched = pd.DataFrame({"example_id": ids, "second_label": frame[LABEL_COLUMN], "row": rows})[~unknown]
    _check_labels(path, matched, classes)
    return SecondLabels(_one_label_per_example(path, matched), int(unknown.sum()))


def second_labels_source(data: DataKindOptions) -> Path:
    """Where the second labels come from: the CSV `data.cross_check.labels`, or the labels store."""
    assert data.cross_check is not None
    return data.cross_check.labels or data.labels_folder


def _from_store(data: DataKindOptions, table: pd.DataFrame, classes: Sequence[str]) -> SecondLabels:
    """The second opinions `label pull` recorded from the cross-check queue (one per example: the
    last). Their ids and classes were checked when pulled; the data may have changed since."""
    opinions = second_opinions(data.labels_folder)
    known = set(table["example_id"].astype(str))
    rows = [(example_id, record.new_label, f"{record.pull} {record.task}") for example_id, record in opinions.items()
            if example_id in known]
    matched = pd.DataFrame(rows, columns=["example_id", "second_label", "row"])
    _check_labels(data.labels_folder, matched, classes)
    return SecondLabels(matched, len(opinions) - len(rows))


def _key_column(path: Path, columns: list[str], data: DataKindOptions) -> str:
    """The one key column the file has, fit for the data's kind."""
    allowed = ("path", "id") if reads_files(data.MODALITY) else ("text", "id")
    keys = [column for column in KEY_COLUMNS if column in columns]
    if LABEL_COLUMN not in columns or len(keys) != 1 or keys[0] not in allowed:
        found = f"key column(s) {keys}" if keys else "no key column"
        raise DataError(f"{path}: data.cross_check.labels needs a `{LABEL_COLUMN}` column and exactly one key column, "
                        f"{' or '.join(f'`{k}`' for k in allowed)} for data.kind '{data.kind}'; it has columns "
                        f"{columns} ({found}). Fix: name the columns so.")
    return keys[0]


def _id_finder(key: str, table: pd.DataFrame, data: DataKindOptions) -> Callable[[object], str | None]:
    """A key cell -> the id of the example it names, or None when the data has no such example."""
    if key == "id":
        known = {str(example_id): str(example_id) for example_id in table["example_id"]}
        return lambda value: known.get(value) if isinstance(value, str) else None
    by_key: dict[object, str] = dict(zip(table["input"], table["example_id"], strict=True))
    if key == "text":
        return by_key.get
    folder = data.path if data.PATH_IS_FOLDER else data.path.parent  # csv_audio: the CSV's folder
    by_file = {os.path.normpath(str(file)): example_id for file, example_id in by_key.items()}

    def file_id(value: object) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return None
        return by_file.get(os.path.normpath(folder / value.strip()))
    return file_id


def _key_meaning(key: str) -> str:
    return {"path": "a file relative to the data folder, as data.path holds it",
            "text": "the text exactly as the data holds it", "id": "the example id, a sha256 of its content"}[key]


def _check_labels(path: Path, matched: pd.DataFrame, classes: Sequence[str]) -> None:
    """Every second label present and one of the data's classes."""
    known = set(classes)
    bad = matched[~matched["second_label"].isin(known)]
    if bad.empty:
        return
    shown = ", ".join(classes[:SHOWN_CLASSES]) + (f" (and {len(classes) - SHOWN_CLASSES} more)"
                                                  if len(classes) > SHOWN_CLASSES else "")
    _refuse(path, [f"row {row}: " + (f"'{label}'" if isinstance(label, str) else "no label")
                   for row, label in zip(bad["row"], bad["second_label"], strict=True)],
            "have a label that is not a class of the data", f"write one of {shown}, or remove the rows")


def _one_label_per_example(path: Path, matched: pd.DataFrame) -> pd.DataFrame:
    """One second label per example: repeats with the same label collapse; two labels are refused."""
    labels_per_example = matched.groupby("example_id")["second_label"].nunique()
    torn = labels_per_example[labels_per_example > 1].index
    if len(torn):
        clashing = matched[matched["example_id"].isin(torn)]
        _refuse(path, [f"rows {', '.join(map(str, group['row']))}: {', '.join(map(repr, group['second_label']))}"
                       for _, group in clashing.groupby("example_id", sort=False)],
                "give one example two different labels", "keep one row per example")
    return matched.drop_duplicates("example_id").reset_index(drop=True)


def _refuse(path: Path, problems: list[str], what: str, fix: str) -> None:
    more = f" (+{len(problems) - SHOWN_ROWS} more)" if len(problems) > SHOWN_ROWS else ""
    raise DataError(f"{path}: {len(problems)} row(s) of data.cross_check.labels {what}: "
                    f"{'; '.join(problems[:SHOWN_ROWS])}{more}. Fix: {fix}.")
