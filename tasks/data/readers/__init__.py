"""Each data kind's reader, found by the kind's name: `tasks/data/readers/<kind>.py` defines
`load(options) -> LoadedData`. The options live in tasks/config/data_kinds (no pandas there);
adding a kind is one options module and one reader. Whether one input is fit to learn from is
judged by the data's modality, not its kind (`tasks/data/input_checks.py`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from tasks.config.spec import check_class_keys
from tasks.core.errors import DataError

if TYPE_CHECKING:
    from tasks.config.data_kinds import DataKindOptions
    from tasks.data.table import LoadedData


class Reader(Protocol):
    def load(self, data: DataKindOptions) -> LoadedData: ...


def reader_for(data: DataKindOptions) -> Reader:
    """The reader module of `data.kind` (imported on first use: pandas, PIL)."""
    return importlib.import_module(f"{__name__}.{data.kind}")


def load_examples(data: DataKindOptions) -> LoadedData:
    """Read the data the spec points at, with its kind's reader."""
    loaded = reader_for(data).load(data)
    if loaded.table.empty:
        raise DataError(f"{data.path}: no examples found. Fix: check data.path and data.select_classes.")
    labels = loaded.table["label"].dropna()
    check_class_keys(loaded.declared_classes or sorted(labels.unique()), data.path)
    return loaded
