"""The data kinds, found by module: adding `tasks/config/data_kinds/<kind>.py` (options) and its
reader (`tasks/data/readers/<kind>.py`) is all a new kind takes. `DataSpec` is the discriminated
union of the registered options classes on `kind`; everything else (the schema, the modality
check, the path check, loading and the readability check) reads the registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from tasks.config.data_kinds.base import DATA_KINDS, ClassFolderOptions, CsvColumns, DataKindOptions, data_kind
from tasks.core.plugins import import_submodules

import_submodules(__name__, __path__)

if TYPE_CHECKING:  # every member is a DataKindOptions: that is all code outside a kind relies on
    DataSpec = DataKindOptions
else:
    DataSpec = DATA_KINDS.union("kind")
_DATA_SPEC: TypeAdapter[DataKindOptions] = TypeAdapter(DataSpec)


def data_spec(raw: dict[str, Any] | DataKindOptions) -> DataKindOptions:
    """A kind's options from a mapping, e.g. `data_spec({"kind": "csv_text", "path": path})`."""
    if isinstance(raw, DataKindOptions):
        return raw
    return _DATA_SPEC.validate_python(raw)


def file_suffixes() -> dict[str, tuple[str, ...]]:
    """modality -> the file extensions of its examples, for the modalities whose inputs are files
    (from the class-folder kinds): what predict, the drift check and `init` recognise files by."""
    found: dict[str, tuple[str, ...]] = {}
    for options in DATA_KINDS.values():
        if issubclass(options, ClassFolderOptions):
            found[options.MODALITY] = tuple(dict.fromkeys([*found.get(options.MODALITY, ()), *options.EXTENSIONS]))
    return found


def modality_of_file(path: Path) -> str | None:
    """The modality whose files carry this extension (any case), or None."""
    suffix = path.suffix.lower()
    return next((modality for modality, suffixes in file_suffixes().items() if suffix in suffixes), None)


def reads_files(modality: str) -> bool:
    """Whether the modality's inputs are files (images, sounds) rather than values in a CSV (texts)."""
    return modality in file_suffixes()


__all__ = ["DATA_KINDS", "CsvColumns", "DataKindOptions", "DataSpec", "data_kind", "data_spec", "file_suffixes",
           "modality_of_file", "reads_files"]
