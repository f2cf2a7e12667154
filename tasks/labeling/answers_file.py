"""The plain-file path of the review loop: a filled-in queue CSV read back as answers.

For teams without Label Studio. `label export` writes the CSV (tasks.labeling.queues.write_queue);
a person fills its `label` column; `label pull --from FILE` reads it here and records it through the
same checks as a server pull (tasks.data.labels_store.record_answers).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.config.data_kinds import DataKindOptions
from tasks.core.errors import DataError
from tasks.data.labels_store import Answer, PullResult, record_answers
from tasks.data.readers.csv_files import row_number
from tasks.data.table import LoadedData, read_csv


def pull_from_file(loaded: LoadedData, data: DataKindOptions, answers: Path, who: str | None = None) -> PullResult:
    """Record a filled-in CSV (columns `id`, `label`, and `input` or `path` for new examples; rows of
    the `cross-check` queue are second opinions); any bad row refuses the whole file. Rows with an
    empty label are not answered yet: skipped and counted."""
    frame = read_answers(answers)
    new_column = next((c for c in ("path", "input") if c in frame.columns), None)
    rows = [Answer(f"row {row_number(index)}", _cell(frame, index, "label"), _cell(frame, index, "id"),
                   _cell(frame, index, new_column) if new_column else None,
                   second=_cell(frame, index, "queue") == "cross-check") for index in frame.index]
    return record_answers(loaded, data, rows, str(answers), answers.parent, who)


def read_answers(path: Path) -> pd.DataFrame:
    """The filled-in CSV, refused when it is empty or lacks the columns a pull needs."""
    if not path.is_file():
        raise DataError(f"{path}: no such file. Fix: pass the filled-in CSV with --from.")
    try:
        frame = read_csv(path)
    except DataError:
        raise
    except Exception as error:  # an empty or unparsable file
        raise DataError(f"{path}: not a CSV of answers ({error}). Fix: fill in the exported CSV "
                        "(columns id, label).") from None
    columns = [str(c) for c in frame.columns]
    if "label" not in columns or not ({"id", "input", "path"} & set(columns)):
        raise DataError(f"{path}: needs a `label` column and an `id` column (or `input`/`path` for new examples); "
                        f"it has {columns}. Fix: fill in the CSV that `label export` writes.")
    if frame.empty:
        raise DataError(f"{path}: no rows. Fix: fill in the exported CSV's `label` column.")
    return frame


def _cell(frame: pd.DataFrame, index: object, column: str) -> str | None:
    """A cell as text, None when empty or absent (an `input` text keeps its spaces)."""
    if column not in frame.columns:
        return None
    value = frame.at[index, column]
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip() if column != "input" else value
