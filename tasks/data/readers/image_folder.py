"""`kind: image_folder`: one image file per example, its label the name of the folder it lies in
(root/<label>/* or root/<train|val|test>/<label>/*, as `data.layout` says)."""

from __future__ import annotations

from tasks.config.data_kinds.image_folder import ImageFolderOptions
from tasks.data.readers.class_folders import label_roots, load_class_folders
from tasks.data.table import LoadedData

__all__ = ["label_roots", "load"]


def load(data: ImageFolderOptions) -> LoadedData:
    """`kind: image_folder` (materializing the packaged demo data on first run)."""
    if data.materialize_from:
        from tasks.data.demo_data import materialize

        materialize(data.materialize_from, data.path)
    return load_class_folders(data)
