"""`kind: csv_text`: one CSV row per example, a text column and a label column."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from tasks.data_kinds.base import CsvColumns, DataKindOptions, data_kind

if TYPE_CHECKING:
    from tasks.data import LoadedData


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

    def load(self) -> LoadedData:
        from tasks.data import load_csv_text  # pandas: imported when data is read, not when a config is

        return load_csv_text(self)

    def odd_reason(self, value: object) -> str | None:
        """Missing, empty or whitespace-only texts, and texts with bytes that are not UTF-8."""
        if not isinstance(value, str):
            return "missing text"
        if not value.strip():
            return "empty text (whitespace only)"
        if "\ufffd" in value:
            return "undecodable bytes (not UTF-8)"
        return None

    @property
    def csv_columns(self) -> CsvColumns:
        return CsvColumns(self.text_column, self.label_column)
