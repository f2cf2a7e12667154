"""A modality is declared by the registries (a data kind's and a family's MODALITY); every place that
treats modalities differently looks it up in one table keyed by modality, never in an if/else on
its name. These tests fail when a registered modality lacks an entry in any table, so a fourth
modality is added by registering its kind and family and filling these tables, touching no step."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.config.data_kinds import DATA_KINDS, file_suffixes, modality_of_file, reads_files
from tasks.config.families import FAMILIES


def registered_modalities() -> set[str]:
    # A hybrid reads its base model's modality (an instance's property, not the family's).
    return ({options.MODALITY for options in DATA_KINDS.values()}
            | {o.MODALITY for o in FAMILIES.values() if isinstance(o.MODALITY, str)})


def test_the_registries_declare_image_text_and_audio():
    assert registered_modalities() == {"image", "text", "audio"}


@pytest.mark.parametrize("modality", sorted(registered_modalities()))
def test_every_modality_has_an_entry_in_every_table(modality):
    from tasks.data.grouping import GROUP_KEYS
    from tasks.data.input_checks import INPUT_CHECKS
    from tasks.data.unlabeled import FILE_DECODERS
    from tasks.monitoring.drift import INPUT_STATISTICS
    from tasks.registry.predict import INPUTS_NAMED
    from tasks.registry.serving import FILE_CHECKS, INPUT_DESCRIPTION

    for name, table in [("GROUP_KEYS", GROUP_KEYS), ("INPUT_CHECKS", INPUT_CHECKS), ("INPUTS_NAMED", INPUTS_NAMED),
                        ("INPUT_STATISTICS", INPUT_STATISTICS), ("INPUT_DESCRIPTION", INPUT_DESCRIPTION)]:
        assert modality in table, f"{name} has no entry for {modality}"
    if reads_files(modality):
        assert modality in FILE_DECODERS and modality in FILE_CHECKS, modality
        assert INPUT_CHECKS[modality].file_noun is not None


def test_file_modalities_and_their_extensions_come_from_the_class_folder_kinds():
    suffixes = file_suffixes()
    assert set(suffixes) == {"image", "audio"} and not reads_files("text")
    assert suffixes["audio"] == (".wav", ".flac", ".ogg", ".mp3") and ".png" in suffixes["image"]
    assert not set(suffixes["audio"]) & set(suffixes["image"])
    for name, expected in [("a/b.WAV", "audio"), ("c.Flac", "audio"), ("x.jpeg", "image"), ("y.TIFF", "image"),
                           ("notes.txt", None), ("table.csv", None), ("no-suffix", None)]:
        assert modality_of_file(Path(name)) == expected, name


def test_a_data_kind_pictures_its_inputs_only_when_they_are_images():
    """Reports draw thumbnails of label suspects and leakage pairs for pictured kinds only."""
    assert {name for name, kind in DATA_KINDS.items() if kind.PICTURED} == {"image_folder"}
