"""`kind: csv_text`: one CSV row per example, a text column and a label column."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from pydantic import Field

from tasks.config.data_kinds.base import CsvColumns, DataKindOptions, data_kind


@data_kind
class CsvTextOptions(DataKindOptions):
    """`path` is a UTF-8 CSV file with a header row."""

    kind: Literal["csv_text"]
    text_column: str = "text"
    label_column: str = "label"
    split_column: str | None = Field(None, description="A column with given splits (train / val / test).")
    val_path: Path | None = Field(None, description="A CSV file of given validation examples (same columns), e.g. "
                                                    "a dataset's shipped dev set.")
    test_path: Path | None = Field(None, description="A CSV file of given test examples (same columns), e.g. "
                                                     "banking77's test.csv; examples also in `path` stay only here.")

    MODALITY = "text"
    PATH_IS_FOLDER = False
    PATH_SHAPE = "a CSV file"
    READABLE = "texts are non-empty"

    @property
    def csv_columns(self) -> CsvColumns:
        return CsvColumns(self.text_column, self.label_column)

    def files(self) -> list[tuple[Path, str | None]]:
        """Each CSV file with the split all its rows belong to (None: the main file)."""
        given = [(path, split) for path, split in ((self.val_path, "val"), (self.test_path, "test")) if path]
        return [(self.path, None), *given]

    def missing_columns(self, path: Path, columns: list[str], given: str | None) -> str | None:
        """The problem when a file lacks a column this config names, in the loader's words, or None."""
        split_column = self.split_column if given is None else None
        missing = [c for c in (self.text_column, self.label_column, split_column) if c and c not in columns]
        if not missing:
            return None
        field_names = {self.text_column: "text_column", self.label_column: "label_column"}
        fields = ", ".join(f"data.{field_names.get(c, 'split_column')}='{c}'" for c in missing)
        return (f"{path}: column(s) {missing} not found ({fields}). Columns in the file: {columns}. "
                "Fix: set the field to one of them.")

    def problem_before_loading(self) -> str | None:
        """A named column absent from a file's header row: found in a moment, where reading the data
        would come only after the flow has started."""
        for path, given in self.files():
            try:
                with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
                    header = next(csv.reader(handle), None)
            except (OSError, csv.Error):
                continue  # the loader says what is wrong with the file itself
            if header and (problem := self.missing_columns(path, header, given)):
                return problem
        return None
