"""`kind: csv_audio`: one CSV row per example, a column of sound-file paths (each relative to the
CSV file's own folder) and a label column; given validation and test files as `csv_text` takes.

The table is the one `audio_folder` makes of the same files (the file's content hash as id, its
absolute path as input), so the odd-input check, the near-copy keys, the split, the leakage check
and the audio models read it unchanged; only `source` differs: the CSV's name and row, where a
person fixes the example."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.config.data_kinds.csv_audio import CsvAudioOptions
from tasks.core.hashing import sha256_file
from tasks.data.listed_files import listed_files
from tasks.data.readers.csv_files import example_table, read_rows, row_number, row_source
from tasks.data.table import LoadedData, Quarantined, unsupported_format


def load(data: CsvAudioOptions) -> LoadedData:
    """The main file (splits from `split_column`, else none given), then the given validation and
    test files (`val_path`, `test_path`); listed files of other formats are quarantined."""
    tables, unsupported = [], []
    for path, given in data.files():
        table, quarantined = _csv_table(path, data, given)
        tables.append(table)
        unsupported += quarantined
    return LoadedData(pd.concat(tables, ignore_index=True), tuple(data.classes) if data.classes else None,
                      quarantined=tuple(unsupported))


def _csv_table(path: Path, data: CsvAudioOptions, given: str | None) -> tuple[pd.DataFrame, list[Quarantined]]:
    """One CSV file's examples, and its rows naming a file of no supported format. A row naming no
    file inside the CSV's folder stops the load (`listed_files`), naming the file and the row."""
    frame = read_rows(path, data, given)
    files = listed_files(path, ((row_number(i), value) for i, value in frame[data.path_column].items()),
                         data.path_column, "data.path_column",
                         "or remove the rows of files you do not have, or set data.path_column to the column "
                         "that holds the paths.")
    reasons = [unsupported_format(file, data.EXTENSIONS, data.NOUN) for file in files]
    labels = frame[data.label_column].fillna("")
    quarantined = [Quarantined(row_source(path, i), str(label), reason)
                   for i, label, reason in zip(frame.index, labels, reasons, strict=True) if reason]
    kept = [reason is None for reason in reasons]
    sounds = [file for file, reason in zip(files, reasons, strict=True) if reason is None]
    table = example_table(path, data, given, frame[kept], [sha256_file(f) for f in sounds], [str(f) for f in sounds])
    return table, quarantined
