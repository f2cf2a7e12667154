"""`kind: csv_audio`: one CSV row per example, a column of sound-file paths and a label column."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from tasks.config.data_kinds.audio_folder import AudioFolderOptions
from tasks.config.data_kinds.base import CsvFileOptions, data_kind


@data_kind
class CsvAudioOptions(CsvFileOptions):
    """`path` is a UTF-8 CSV file with a header row: a column of sound-file paths (wav, flac, ogg or
    mp3), each relative to the CSV file's own folder and inside it, and a label column. The examples
    are the files, read and checked as `audio_folder` reads and checks them."""

    kind: Literal["csv_audio"]
    path_column: str = Field(
        "path", description="The column of sound-file paths, relative to the folder of the CSV file that lists them "
                            "(a given held-out file's paths: to its own folder); a path out of that folder (`..`, "
                            "an absolute path elsewhere) or to no file stops the load naming the row.")

    # The same sound files as audio_folder's, so one modality's checks, models and messages fit both.
    MODALITY = "audio"
    READABLE = AudioFolderOptions.READABLE
    EXTENSIONS: ClassVar[tuple[str, ...]] = AudioFolderOptions.EXTENSIONS  # others are quarantined as unsupported
    NOUN: ClassVar[str] = AudioFolderOptions.NOUN
    INPUT_FIELD = "path_column"
