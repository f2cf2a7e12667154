"""What the CSV readers (`csv_text`, `csv_audio`) share: one file's rows as the options name them,
where a person finds each row, and each row's given split, so both kinds read their files,
columns, given held-out files and split columns alike and say so in the same words."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tasks.config.data_kinds.base import CsvFileOptions
from tasks.core.errors import DataError
from tasks.data.table import SPLIT_NAMES, read_csv

FILE_FIELDS = {None: "path", "val": "val_path", "test": "test_path"}  # the field naming each file


def read_rows(path: Path, data: CsvFileOptions, given: str | None) -> pd.DataFrame:
    """One CSV file's rows of the selected classes (`given`: the split every row of a given held-out
    file belongs to; None for the main file). The frame keeps the file's row order in its index."""
    if not path.is_file():
        field_name = FILE_FIELDS[given]
        raise DataError(f"{path}: data.{field_name} is not a file. Fix: point data.{field_name} at a CSV file.")
    frame = read_csv(path)
    if problem := data.missing_columns(path, list(frame.columns), given):
        raise DataError(problem)
    if data.select_classes:
        frame = frame[frame[data.label_column].isin(data.select_classes)]
    return frame


def row_number(index: int) -> int:
    """A frame index as the row a spreadsheet shows (the header is row 1)."""
    return index + 2


def row_source(path: Path, index: int) -> str:
    """Where a person finds a row: the file's name and the row."""
    return f"{path.name}:row {row_number(index)}"


def example_table(path: Path, data: CsvFileOptions, given: str | None, frame: pd.DataFrame,
                  example_ids: Sequence[str], inputs: Sequence[object]) -> pd.DataFrame:
    """The example table (`tasks.data.table.COLUMNS`) of `frame`'s rows, with their ids and inputs
    as the kind reads them; an empty label stays missing, for the quality check to name."""
    return pd.DataFrame(
        {
            "example_id": list(example_ids),
            "input": list(inputs),
            "label": frame[data.label_column].to_numpy(),
            "given_split": [given] * len(frame) if given else given_splits(frame, data, path),
            "source": [row_source(path, i) for i in frame.index],
        }
    )


def given_splits(frame: pd.DataFrame, data: CsvFileOptions, path: Path) -> list[str]:
    """Each row's split from `data.split_column` (train / val / test and their synonyms), or none given."""
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
