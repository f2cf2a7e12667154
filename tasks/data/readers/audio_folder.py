"""`kind: audio_folder`: one sound file per example, its label the name of the folder it lies in
(root/<label>/* or root/<train|val|test>/<label>/*, as `data.layout` says)."""

from __future__ import annotations

from tasks.config.data_kinds.audio_folder import AudioFolderOptions
from tasks.data.readers.class_folders import load_class_folders
from tasks.data.table import LoadedData


def load(data: AudioFolderOptions) -> LoadedData:
    """`kind: audio_folder` (writing the spoken-words example on first run)."""
    if data.materialize_from:
        from tasks.data.demo_data import materialize

        materialize(data.materialize_from, data.path)
    return load_class_folders(data)
