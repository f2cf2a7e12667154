"""The readers of folders of class folders (`image_folder`, `audio_folder`): one file per example,
its label the name of the folder it lies in (root/<label>/* or root/<train|val|test>/<label>/*, as
`data.layout` says)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.config.data_kinds.base import ClassFolderOptions
from tasks.core.errors import DataError
from tasks.core.hashing import sha256_file
from tasks.data.table import COLUMNS, SPLIT_NAMES, LoadedData, Quarantined, files_in, subdirs, unsupported_format


def load_class_folders(data: ClassFolderOptions) -> LoadedData:
    """Every file of `data.EXTENSIONS` in the class folders, its label its folder's name; other
    files are quarantined as unsupported, files beside the class folders reported as skipped."""
    root = data.path
    roots = label_roots(data)
    # Files beside the split or class folders are no examples: report them, never drop them silently.
    outside = dict.fromkeys([root, *(folder for _, folder in roots)])
    skipped = [str(f.relative_to(root)) for folder in outside for f in files_in(folder)]
    rows, classes, unsupported = [], set(), []
    for split_name, label_root in roots:
        for label_dir in subdirs(label_root):
            if data.select_classes and label_dir.name not in data.select_classes:
                continue
            classes.add(label_dir.name)
            for file in sorted(p for p in label_dir.rglob("*") if p.is_file()):
                relative = str(file.relative_to(root))
                if reason := unsupported_format(file, data.EXTENSIONS, data.NOUN):
                    unsupported.append(Quarantined(relative, label_dir.name, reason))
                    continue
                rows.append((sha256_file(file), str(file), label_dir.name, split_name, relative))
    if not classes:
        raise DataError(
            f"{root}: no class folders found (data.layout: {data.layout}). Fix: lay {data.NOUN} out as "
            f"{root}/<label>/<file> or {root}/<train|val|test>/<label>/<file>; if your classes are "
            "named like splits, set data.layout: flat."
        )
    declared = sorted(data.classes or classes)
    return LoadedData(pd.DataFrame(rows, columns=COLUMNS), tuple(declared), tuple(skipped), tuple(unsupported))


def label_roots(data: ClassFolderOptions) -> list[tuple[str, Path]]:
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
