"""`kind: image_folder`: one image file per example, its label the name of the folder it lies in
(root/<label>/* or root/<train|val|test>/<label>/*, as `data.layout` says)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from tasks.config.data_kinds.image_folder import ImageFolderOptions
from tasks.data.readers.class_folders import label_roots, load_class_folders
from tasks.data.table import LoadedData

__all__ = ["label_roots", "load", "odd_reason"]

MIN_SIDE = 8  # pixels: a smaller image holds no object to learn from (MNIST's 28 px digits pass)


def load(data: ImageFolderOptions) -> LoadedData:
    """`kind: image_folder` (materializing the packaged demo data on first run)."""
    if data.materialize_from:
        from tasks.data.demo_data import materialize

        materialize(data.materialize_from, data.path)
    return load_class_folders(data)


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
