"""`kind: csv_text`: one CSV row per example, a text column and a label column."""

from __future__ import annotations

from typing import Literal

from tasks.config.data_kinds.base import CsvColumns, CsvFileOptions, data_kind


@data_kind
class CsvTextOptions(CsvFileOptions):
    """`path` is a UTF-8 CSV file with a header row."""

    kind: Literal["csv_text"]
    text_column: str = "text"

    MODALITY = "text"
    READABLE = "texts are non-empty"
    INPUT_FIELD = "text_column"

    @property
    def csv_columns(self) -> CsvColumns:
        return CsvColumns(self.text_column, self.label_column)
