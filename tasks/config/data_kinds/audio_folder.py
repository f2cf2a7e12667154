"""`kind: audio_folder`: one sound file per example, its label the name of the folder it lies in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config.data_kinds.base import ClassFolderOptions, data_kind


@data_kind
class AudioFolderOptions(ClassFolderOptions):
    """`path` is a folder: root/<label>/* or root/<train|val|test>/<label>/* (given splits) of wav,
    flac, ogg or mp3 files (any rate, mono or not: the model's front end mixes down and resamples)."""

    kind: Literal["audio_folder"]
    materialize_from: Literal["spoken_words"] | None = Field(
        None, description="Write this dataset to `path` on first run: `spoken_words` speaks a few words in many "
                          "voices with espeak-ng and mixes in noise (the audio example; needs Debian's espeak-ng).")

    MODALITY = "audio"
    READABLE = "sound files decode"
    EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
    NOUN = "sound files"

    @property
    def written_on_first_run(self) -> bool:
        return self.materialize_from is not None
