"""Load labeled examples into one table with stable content-hash ids, and fingerprint it.

The table has one row per example: `example_id` (sha256 of the file bytes or the text),
`input` (file path or text), `label`, `given_split` (train / val / test when the data comes
pre-split, else empty) and `source` (where a person finds the example). Files that are not read
as examples are listed in `LoadedData.skipped_files`, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.config.data_kinds.audio_folder import AudioFolderOptions
from tasks.config.data_kinds.image_folder import ImageFolderOptions
from tasks.core.atomic import write_atomic
from tasks.core.errors import DataError

# torchvision's ImageFolder extensions: a file with another extension is skipped and reported.
IMAGE_EXTENSIONS = ImageFolderOptions.EXTENSIONS
AUDIO_EXTENSIONS = AudioFolderOptions.EXTENSIONS
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
COLUMNS = ["example_id", "input", "label", "given_split", "source"]
SHOWN_SKIPPED = 5
MAX_UNDECODABLE_SHARE = 0.5  # more rows than this with non-UTF-8 bytes: the file is in another encoding


@dataclass(frozen=True)
class Quarantined:
    """One input taken out (or, under `fail`, flagged), where a person finds it and why."""

    source: str
    label: str
    reason: str

    def describe(self) -> str:
        return f"{self.source} ({self.label}): {self.reason}"


@dataclass(frozen=True)
class LoadedData:
    """The example table plus what a person should know about how it was read."""

    table: pd.DataFrame
    declared_classes: tuple[str, ...] | None
    # Relative to data.path: files that lie outside a class folder (no label: not examples).
    skipped_files: tuple[str, ...] = field(default=())
    # Files in a class folder the loader cannot read as examples (e.g. an unsupported format).
    quarantined: tuple[Quarantined, ...] = field(default=())


def skipped_summary(skipped_files: Sequence[str]) -> str:
    """One line for the report and the CLI: how many files were not read, and the first few."""
    if not skipped_files:
        return ""
    more = f" (+{len(skipped_files) - SHOWN_SKIPPED} more)" if len(skipped_files) > SHOWN_SKIPPED else ""
    return (f"Skipped {len(skipped_files)} file(s) outside the class folders: "
            f"{', '.join(skipped_files[:SHOWN_SKIPPED])}{more}")


def unsupported_format(file: Path, extensions: tuple[str, ...], noun: str) -> str | None:
    """Why a listed or found file is no example of a kind of files (None: its format is one of
    `extensions`): one message whether a class folder or a CSV named the file."""
    suffix = file.suffix.lower()
    if suffix in extensions:
        return None
    return f"unsupported format ({suffix or 'no extension'}; {noun} are {', '.join(extensions)})"


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def files_in(folder: Path) -> list[Path]:
    """Visible files directly in `folder`."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_csv(path: Path) -> pd.DataFrame:
    """A UTF-8 CSV. A few rows with bytes that are not UTF-8 are read with U+FFFD in their place
    (the odd-inputs check quarantines them); a file where most rows have such bytes is not UTF-8."""
    try:
        # Only empty cells are missing: a text that reads "NA" or "null" stays a text.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    except UnicodeDecodeError as exc:
        frame = _read_replacing(path)
        damaged = frame.apply(lambda column: column.str.contains("\ufffd", na=False)).any(axis=1)
        if damaged.mean() > MAX_UNDECODABLE_SHARE:
            raise DataError(
                f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}; {int(damaged.sum())} of {len(frame)} rows "
                "have such bytes). Fix: re-save the CSV as UTF-8."
            ) from None
        return frame
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc}). Fix the file's quoting or delimiter.") from None


def _read_replacing(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8",
                           encoding_errors="replace")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc}). Fix the file's quoting or delimiter.") from None


def save_table(table: pd.DataFrame, workdir: Path, dataset_fingerprint: str) -> Path:
    """Write the table where later steps read it; the fingerprint names the file."""
    path = workdir / "datasets" / f"{dataset_fingerprint[:16]}.parquet"
    return write_atomic(path, lambda handle: table.to_parquet(handle, index=False))


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def read_examples(path: Path) -> pd.DataFrame:
    """The table with one row per example, indexed by example id (the saved table keeps exact
    duplicates, for the quality check to count)."""
    return read_table(path).drop_duplicates("example_id").set_index("example_id")
