"""The data kinds, found by module: adding `tasks/config/data_kinds/<kind>.py` (options) and its
reader (`tasks/data/readers/<kind>.py`) is all a new kind takes. `DataSpec` is the discriminated
union of the registered options classes on `kind`; everything else (the schema, the modality
check, the path check, loading and the readability check) reads the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from tasks.config.data_kinds.base import DATA_KINDS, CsvColumns, DataKindOptions, data_kind
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


__all__ = ["DATA_KINDS", "CsvColumns", "DataKindOptions", "DataSpec", "data_kind", "data_spec"]
