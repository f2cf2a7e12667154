"""`kind: csv_text`: one CSV row per example, a text column and a label column; given validation
and test files beside the main one, as datasets such as banking77 ship."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.config.data_kinds.csv_text import CsvTextOptions
from tasks.core.hashing import sha256_text
from tasks.data.readers.csv_files import example_table, read_rows, row_number
from tasks.data.table import LoadedData


def load(data: CsvTextOptions) -> LoadedData:
    """`kind: csv_text`: the main file (splits from `split_column`, else none given), then the
    given validation and test files (`val_path`, `test_path`), as datasets such as banking77 ship."""
    tables = [_csv_table(path, data, split) for path, split in data.files()]
    table = pd.concat(tables, ignore_index=True)
    return LoadedData(table, tuple(data.classes) if data.classes else None)


def _csv_table(path: Path, data: CsvTextOptions, given: str | None) -> pd.DataFrame:
    """One CSV file's examples; a missing text gets an id of its own row (the odd-input check names it)."""
    frame = read_rows(path, data, given)
    texts = frame[data.text_column]
    ids = [sha256_text(t) if isinstance(t, str) else sha256_text(f"<missing text, {path.name} row {row_number(i)}>")
           for i, t in zip(frame.index, texts, strict=True)]
    return example_table(path, data, given, frame, ids, texts.to_numpy())
