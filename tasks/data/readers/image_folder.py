"""`kind: image_folder`: one image file per example, its label the name of the folder it lies in
(root/<label>/* or root/<train|val|test>/<label>/*, as `data.layout` says)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pandas as pd

from tasks.config.data_kinds.image_folder import ImageFolderOptions
from tasks.core.errors import DataError
from tasks.core.hashing import sha256_file
from tasks.data.table import COLUMNS, IMAGE_EXTENSIONS, SPLIT_NAMES, LoadedData, Quarantined, files_in, subdirs

MIN_SIDE = 8  # pixels: a smaller image holds no object to learn from (MNIST's 28 px digits pass)


def load(data: ImageFolderOptions) -> LoadedData:
    """`kind: image_folder` (materializing the packaged demo data on first run)."""
    if data.materialize_from:
        from tasks.data.demo_data import materialize

        materialize(data.materialize_from, data.path)
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


def odd_reason(data: ImageFolderOptions, value: object) -> str | None:
    """Zero-byte, undecodable, tiny (a side under MIN_SIDE pixels) or constant (one colour) images."""
    from PIL import Image

    path = Path(str(value))
    if path.stat().st_size == 0:
        return "zero-byte file"
    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
            extrema = cast(tuple[tuple[int, int], ...], image.convert("RGB").getextrema())
    except (OSError, SyntaxError, ValueError) as error:
        return f"undecodable image ({type(error).__name__})"
    if min(width, height) < MIN_SIDE:
        return f"tiny image ({width}x{height} px)"
    if all(low == high for low, high in extrema):
        return "constant image (one colour)"
    return None
