"""`kind: csv_text`: one CSV row per example, a text column and a label column; given validation
and test files beside the main one, as datasets such as banking77 ship."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.config.data_kinds.csv_text import CsvTextOptions
from tasks.core.errors import DataError
from tasks.core.hashing import sha256_text
from tasks.data.table import SPLIT_NAMES, LoadedData, read_csv


def load(data: CsvTextOptions) -> LoadedData:
    """`kind: csv_text`: the main file (splits from `split_column`, else none given), then the
    given validation and test files (`val_path`, `test_path`), as datasets such as banking77 ship."""
    tables = [_csv_table(path, data, split) for path, split in data.files()]
    table = pd.concat(tables, ignore_index=True)
    return LoadedData(table, tuple(data.classes) if data.classes else None)


def _csv_table(path: Path, data: CsvTextOptions, given: str | None) -> pd.DataFrame:
    """One CSV file's examples; `given` is the split every row of a given held-out file belongs to."""
    if not path.is_file():
        field_name = {None: "path", "val": "val_path", "test": "test_path"}[given]
        raise DataError(f"{path}: data.{field_name} is not a file. Fix: point data.{field_name} at a CSV file.")
    frame = read_csv(path)
    if problem := data.missing_columns(path, list(frame.columns), given):
        raise DataError(problem)
    if data.select_classes:
        frame = frame[frame[data.label_column].isin(data.select_classes)]
    texts = frame[data.text_column]
    return pd.DataFrame(
        {
            "example_id": [
                sha256_text(t) if isinstance(t, str) else sha256_text(f"<missing text, {path.name} row {i + 2}>")
                for i, t in zip(frame.index, texts, strict=True)
            ],
            "input": texts.to_numpy(),
            "label": frame[data.label_column].to_numpy(),
            "given_split": [given] * len(frame) if given else _given_splits(frame, data, path),
            "source": [f"{path.name}:row {i + 2}" for i in frame.index],
        }
    )


def _given_splits(frame: pd.DataFrame, data: CsvTextOptions, path: Path) -> list[str]:
    if not data.split_column:
        return [""] * len(frame)
    values = frame[data.split_column].fillna("").str.strip().str.lower()
    unknown = sorted(set(values) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(
            f"{path}: column data.split_column='{data.split_column}' has values {unknown}; "
            f"allowed: {sorted(SPLIT_NAMES)}."
        )
    return [SPLIT_NAMES[v] for v in values]


def odd_reason(data: CsvTextOptions, value: object) -> str | None:
    """Missing, empty or whitespace-only texts, and texts with bytes that are not UTF-8."""
    if not isinstance(value, str):
        return "missing text"
    if not value.strip():
        return "empty text (whitespace only)"
    if "\ufffd" in value:
        return "undecodable bytes (not UTF-8)"
    return None
