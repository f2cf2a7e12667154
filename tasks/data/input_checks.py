"""Why one input is no fit example, judged by what the data holds (its kind's MODALITY), not by the
kind's name: every kind of sound files (`audio_folder`, `csv_audio`) judges a clip alike, and a new
kind of an existing modality needs no check of its own.

Images: zero-byte, undecodable, tiny (a side under MIN_SIDE pixels) or constant (one colour).
Sound files: zero-byte, undecodable, empty, too short, digitally silent or heavily clipped
(`tasks.core.audio.odd_clip_reason`). Texts: missing, empty or whitespace-only, or holding bytes
that are not UTF-8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from tasks.config.data_kinds import DataKindOptions

MIN_SIDE = 8  # pixels: a smaller image holds no object to learn from (MNIST's 28 px digits pass)


def image_reason(value: object) -> str | None:
    """Zero-byte, undecodable, tiny or constant images."""
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


def sound_reason(value: object) -> str | None:
    """Zero-byte, undecodable, empty, too short, digitally silent or heavily clipped sound files."""
    from tasks.core.audio import odd_clip_reason

    path = Path(str(value))
    if path.stat().st_size == 0:
        return "zero-byte file"
    return odd_clip_reason(path)


def text_reason(value: object) -> str | None:
    """Missing, empty or whitespace-only texts, and texts with bytes that are not UTF-8."""
    if not isinstance(value, str):
        return "missing text"
    if not value.strip():
        return "empty text (whitespace only)"
    if "\ufffd" in value:
        return "undecodable bytes (not UTF-8)"
    return None


@dataclass(frozen=True)
class InputCheck:
    """One modality's check of one input (the table's `input` value), and what one input file is
    called where inputs are files (None for texts): one content under many names is a placeholder."""

    reason: Callable[[object], str | None]
    file_noun: str | None


INPUT_CHECKS = {
    "image": InputCheck(image_reason, "image"),
    "audio": InputCheck(sound_reason, "sound file"),
    "text": InputCheck(text_reason, None),
}


def input_check(data: DataKindOptions) -> InputCheck:
    """The check for the data's modality; a modality without one is a bug in its kind, not the user's."""
    if data.MODALITY not in INPUT_CHECKS:
        raise ValueError(f"data kind '{data.kind}' holds {data.MODALITY}s, which no input check judges: "
                         f"add one to INPUT_CHECKS ({', '.join(INPUT_CHECKS)})")
    return INPUT_CHECKS[data.MODALITY]
