"""Unlabeled inputs, read one way wherever they come in: `transferflow predict` and the drift
check take a folder of images (recursive) or a CSV of texts.

One rule for both: hidden files and folders (a name starting with a dot, such as .DS_Store or
.ipynb_checkpoints) are never inputs; files without an image extension are skipped and listed;
every image is decoded whole before anything is sent or tested, so a truncated file is named at
once rather than failing a batch halfway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import DataError
from tasks.data.table import IMAGE_EXTENSIONS, read_csv


@dataclass(frozen=True)
class ImageFolder:
    folder: Path
    images: tuple[Path, ...]   # sorted, recursive, hidden parts excluded
    skipped: tuple[Path, ...]  # visible files that are not images (reported, never read)

    def relative(self) -> tuple[str, ...]:
        """Each image's path inside the folder: how results name it and a stored batch keeps it."""
        return tuple(str(p.relative_to(self.folder)) for p in self.images)


def read_image_folder(folder: Path, fix: str) -> ImageFolder:
    """The folder's images, each decoded whole. `fix` ends the message when there are none."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    images = tuple(p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"{folder}: no image files in this folder (extensions {', '.join(IMAGE_EXTENSIONS)}). "
                        f"Fix: {fix}")
    check_images_decode(images)
    return ImageFolder(folder, images, tuple(p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS))


def check_images_decode(images: tuple[Path, ...] | list[Path]) -> None:
    """Decode each image whole (PIL): name the first that fails, and how many more do."""
    from PIL import Image

    unreadable = []
    for image in images:
        try:
            with Image.open(image) as opened:
                opened.load()
        except (OSError, ValueError, SyntaxError):  # what PIL raises on damaged or foreign bytes
            unreadable.append(image)
    if unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise DataError(f"{unreadable[0]}: not an image file PIL can read{more}. "
                        "Fix: remove or replace the unreadable file(s), then try again.")


def read_text_column(path: Path, column: str, fix: str = "pass --column NAME.") -> list[str]:
    """The texts of a CSV's `column` (an empty cell is an empty text)."""
    frame = read_csv(path)
    if column not in frame.columns:
        raise DataError(f"{path}: no column '{column}' (columns: {list(frame.columns)}). Fix: {fix}")
    return list(frame[column].fillna(""))
