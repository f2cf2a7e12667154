"""Load labeled examples into one table with stable content-hash ids, and fingerprint it.

The table has one row per example: `example_id` (sha256 of the file bytes or the text),
`input` (image path or text), `label`, `given_split` (train / val / test when the data comes
pre-split, else empty) and `source` (where a person finds the example). Files that are not read
as examples are listed in `LoadedData.skipped_files`, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tasks.config.spec import DataSpec, check_class_keys
from tasks.core.atomic import write_atomic
from tasks.core.errors import DataError
from tasks.core.hashing import sha256_file, sha256_text

if TYPE_CHECKING:
    from tasks.config.data_kinds.csv_text import CsvTextOptions
    from tasks.config.data_kinds.image_folder import ImageFolderOptions
    from tasks.odd_inputs import Quarantined

# torchvision's ImageFolder extensions: a file with another extension is skipped and reported.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
COLUMNS = ["example_id", "input", "label", "given_split", "source"]
SHOWN_SKIPPED = 5
MAX_UNDECODABLE_SHARE = 0.5  # more rows than this with non-UTF-8 bytes: the file is in another encoding


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


def load_examples(data: DataSpec) -> LoadedData:
    """Read the data the spec points at, with its kind's loader."""
    loaded = data.load()
    if loaded.table.empty:
        raise DataError(f"{data.path}: no examples found. Fix: check data.path and data.select_classes.")
    labels = loaded.table["label"].dropna()
    check_class_keys(loaded.declared_classes or sorted(labels.unique()), data.path)
    return loaded


def load_image_folder(data: ImageFolderOptions) -> LoadedData:
    """`kind: image_folder` (materializing the packaged demo data on first run)."""
    if data.materialize_from:
        from tasks.demo_data import materialize

        materialize(data.materialize_from, data.path)
    root = data.path
    roots = label_roots(data)
    # Files beside the split or class folders are no examples: report them, never drop them silently.
    outside = dict.fromkeys([root, *(folder for _, folder in roots)])
    skipped = [str(f.relative_to(root)) for folder in outside for f in _files(folder)]
    from tasks.odd_inputs import Quarantined

    rows, classes, unsupported = [], set(), []
    for split_name, label_root in roots:
        for label_dir in subdirs(label_root):
            if data.select_classes and label_dir.name not in data.select_classes:
                continue
            classes.add(label_dir.name)
            for file in sorted(p for p in label_dir.rglob("*") if p.is_file()):
                relative = str(file.relative_to(root))
                if file.suffix.lower() not in IMAGE_EXTENSIONS:
                    unsupported.append(Quarantined(relative, label_dir.name, "unsupported format "
                                                   f"({file.suffix.lower() or 'no extension'}; images are "
                                                   f"{', '.join(IMAGE_EXTENSIONS)})"))
                    continue
                rows.append((sha256_file(file), str(file), label_dir.name, split_name, relative))
    if not classes:
        raise DataError(
            f"{root}: no class folders found (data.layout: {data.layout}). Fix: lay images out as "
            f"{root}/<label>/<image> or {root}/<train|val|test>/<label>/<image>; if your classes are "
            "named like splits, set data.layout: flat."
        )
    declared = sorted(data.classes or classes)
    return LoadedData(pd.DataFrame(rows, columns=COLUMNS), tuple(declared), tuple(skipped), tuple(unsupported))


def label_roots(data: ImageFolderOptions) -> list[tuple[str, Path]]:
    """(given split, folder of class folders) pairs, as `data.layout` says the root is laid out."""
    folders = subdirs(data.path)
    split_folders = [f.name for f in folders if f.name in SPLIT_NAMES]
    other_folders = [f.name for f in folders if f.name not in SPLIT_NAMES]
    layout = data.layout
    if layout == "auto" and split_folders and other_folders:
        raise DataError(
            f"{data.path}: ambiguous layout: split folder(s) {split_folders} beside class folder(s) "
            f"{other_folders}. Fix: set data.layout: flat if {split_folders} are classes, or "
            f"data.layout: split after moving {other_folders} into the split folders."
        )
    if layout == "split" and other_folders:
        raise DataError(
            f"{data.path}: data.layout is split but the root also holds {other_folders}, which would be "
            f"ignored. Fix: move them into a split folder ({', '.join(sorted(SPLIT_NAMES))}) "
            "or out of the root."
        )
    if layout == "flat" or (layout == "auto" and not split_folders):
        return [("", data.path)]
    return [(SPLIT_NAMES[name], data.path / name) for name in split_folders]


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    """Visible files directly in `folder`."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def load_csv_text(data: CsvTextOptions) -> LoadedData:
    """`kind: csv_text`: the main file (splits from `split_column`, else none given), then the
    given validation and test files (`val_path`, `test_path`), as datasets such as banking77 ship."""
    tables = [_csv_table(path, data, split) for path, split in data.files()]
    table = pd.concat(tables, ignore_index=True)
    return LoadedData(table, tuple(data.classes) if data.classes else None)


def _csv_table(path: Path, data: CsvTextOptions, given: str | None) -> pd.DataFrame:
    """One CSV file's examples; `given` is the split every row of a given held-out file belongs to."""
    if not path.is_file():
        field_name = {None: "path", "val": "val_path", "test": "test_path"}[given]
        raise DataError(f"{path}: data.{field_name} is not a file. Fix: point data.{field_name} at a CSV file.")
    frame = read_csv(path)
    if problem := data.missing_columns(path, list(frame.columns), given):
        raise DataError(problem)
    if data.select_classes:
        frame = frame[frame[data.label_column].isin(data.select_classes)]
    texts = frame[data.text_column]
    return pd.DataFrame(
        {
            "example_id": [
                sha256_text(t) if isinstance(t, str) else sha256_text(f"<missing text, {path.name} row {i + 2}>")
                for i, t in zip(frame.index, texts, strict=True)
            ],
            "input": texts.to_numpy(),
            "label": frame[data.label_column].to_numpy(),
            "given_split": [given] * len(frame) if given else _given_splits(frame, data, path),
            "source": [f"{path.name}:row {i + 2}" for i in frame.index],
        }
    )


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


def _given_splits(frame: pd.DataFrame, data: CsvTextOptions, path: Path) -> list[str]:
    if not data.split_column:
        return [""] * len(frame)
    values = frame[data.split_column].fillna("").str.strip().str.lower()
    unknown = sorted(set(values) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(
            f"{path}: column data.split_column='{data.split_column}' has values {unknown}; "
            f"allowed: {sorted(SPLIT_NAMES)}."
        )
    return [SPLIT_NAMES[v] for v in values]


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
