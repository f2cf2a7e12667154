"""Unlabeled inputs, read one way wherever they come in: `transferflow predict` and the drift
check take a folder of images or sound files (recursive) or a CSV of texts.

One rule for all: hidden files and folders (a name starting with a dot, such as .DS_Store or
.ipynb_checkpoints) are never inputs; files without the modality's extensions are skipped and
listed; every file is decoded whole before anything is sent or tested, so a truncated file is
named at once rather than failing a batch halfway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import DataError
from tasks.data.table import read_csv


@dataclass(frozen=True)
class InputFolder:
    folder: Path
    files: tuple[Path, ...]    # sorted, recursive, hidden parts excluded
    skipped: tuple[Path, ...]  # visible files of no kind asked for (reported, never read)

    def relative(self) -> tuple[str, ...]:
        """Each file's path inside the folder: how results name it and a stored batch keeps it."""
        return tuple(str(p.relative_to(self.folder)) for p in self.files)


def read_input_folder(folder: Path, modality: str, fix: str) -> InputFolder:
    """The folder's files of `modality` (image or audio), each decoded whole. `fix` ends the
    message when there are none."""
    extensions, noun, check = file_kind(modality)
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    found = tuple(p for p in files if p.suffix.lower() in extensions)
    if not found:
        raise DataError(f"{folder}: no {noun}s in this folder (extensions {', '.join(extensions)}). Fix: {fix}")
    check(found)
    return InputFolder(folder, found, tuple(p for p in files if p.suffix.lower() not in extensions))


def read_image_folder(folder: Path, fix: str) -> InputFolder:
    return read_input_folder(folder, "image", fix)


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
    _name_unreadable(unreadable, "an image file PIL can read")


def check_sounds_decode(sounds: tuple[Path, ...] | list[Path]) -> None:
    """Decode each sound file whole (libsndfile): name the first that fails, and how many more do."""
    import soundfile

    unreadable = []
    for sound in sounds:
        try:
            soundfile.read(sound, dtype="float32")
        except (RuntimeError, OSError, ValueError):  # LibsndfileError is a RuntimeError
            unreadable.append(sound)
    _name_unreadable(unreadable, "a sound file libsndfile can read")


def _name_unreadable(unreadable: list[Path], what: str) -> None:
    if unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise DataError(f"{unreadable[0]}: not {what}{more}. "
                        "Fix: remove or replace the unreadable file(s), then try again.")


# The modalities whose inputs are files: what one is called, and its whole-file decode check. Their
# extensions come from the data kinds' registry (`file_suffixes`).
FILE_DECODERS: dict[str, tuple[str, Callable[[tuple[Path, ...] | list[Path]], None]]] = {
    "image": ("image file", check_images_decode),
    "audio": ("sound file", check_sounds_decode),
}


def file_kind(modality: str) -> tuple[tuple[str, ...], str, Callable[[tuple[Path, ...] | list[Path]], None]]:
    """A file modality's extensions, noun and decode check."""
    from tasks.config.data_kinds import file_suffixes

    noun, check = FILE_DECODERS[modality]
    return file_suffixes()[modality], noun, check


def read_text_column(path: Path, column: str, fix: str = "pass --column NAME.") -> list[str]:
    """The texts of a CSV's `column` (an empty cell is an empty text)."""
    frame = read_csv(path)
    if column not in frame.columns:
        raise DataError(f"{path}: no column '{column}' (columns: {list(frame.columns)}). Fix: {fix}")
    return list(frame[column].fillna(""))
