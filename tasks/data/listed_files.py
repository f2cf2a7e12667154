"""Files named in a CSV column, one per row, each relative to the CSV file's own folder: the one rule
`kind: csv_audio` and `transferflow predict` read such a list by, so a list that loads for training
also predicts, wherever the command runs from.

A path must stay inside the CSV's folder tree (checked on the path as written: `..` out of it or an
absolute path elsewhere is refused; a symlink inside it may point anywhere), so a list names the
files that travel with it and cannot pull in an unrelated file by accident. Every row that names no
such file is an error naming the CSV, the row and the column: a missing file never shrinks the data
silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tasks.core.errors import DataError

SHOWN_ROWS = 5


def listed_files(csv_path: Path, cells: Iterable[tuple[int, object]], column: str, named_by: str,
                 fix: str) -> list[Path]:
    """Each `(row, value)` cell of `column` as the absolute, normalized path of an existing file
    inside the CSV's folder. `named_by` is what names the column (`data.path_column`, `--column`),
    `fix` what else a person may do; every offending row is counted, the first SHOWN_ROWS named."""
    folder = Path(os.path.abspath(csv_path.parent))
    files: list[Path] = []
    problems: list[str] = []
    for row, value in cells:
        file, problem = _listed_file(folder, value)
        if problem is not None:
            problems.append(f"row {row}: {problem}")
        elif file is not None:
            files.append(file)
    if problems:
        more = f" (+{len(problems) - SHOWN_ROWS} more)" if len(problems) > SHOWN_ROWS else ""
        raise DataError(
            f"{csv_path}: {len(problems)} row(s) of column '{column}' ({named_by}) name no file inside the CSV's "
            f"folder {folder}: {'; '.join(problems[:SHOWN_ROWS])}{more}. Fix: write each path relative to that "
            f"folder (e.g. dog/bark.wav for {folder / 'dog' / 'bark.wav'}), with the file inside it; {fix}")
    return files


def _listed_file(folder: Path, value: object) -> tuple[Path | None, str | None]:
    """(the file, None) or (None, what is wrong with the cell)."""
    if not isinstance(value, str) or not value.strip():
        return None, "empty cell"
    target = Path(os.path.normpath(folder / value))  # an absolute value stays itself
    if not target.is_relative_to(folder):
        how = "an absolute path" if Path(value).is_absolute() else "'..' leads"
        return None, f"'{value}' is outside the CSV's folder ({how} to {target})"
    if not target.exists():
        return None, f"'{value}' not found ({target})"
    if not target.is_file():
        return None, f"'{value}' is not a file ({target})"
    return target, None
