"""`predict` and the drift check read unlabeled inputs through one reader: the same files count as
inputs (hidden ones never do), and a truncated image is named before anything is sent or tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import DataError
from tasks.data.unlabeled import read_image_folder, read_text_column
from tasks.monitoring.drift import _read_files
from tasks.registry.predict import read_inputs
from tests.conftest import small_image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "incoming"
    for relative in ("a/1.png", "b/2.jpg", "a/.3.png", ".cache/4.png", "b/.ipynb_checkpoints/5.png"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        small_image((20, 20), (30 * len(relative), 90, 120)).save(root / relative)
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_hidden_files_are_never_inputs_and_others_are_listed(folder):
    found = read_image_folder(folder, "pass a folder.")
    assert found.relative() == ("a/1.png", "b/2.jpg")
    assert [p.name for p in found.skipped] == ["notes.txt"]


def test_predict_and_the_drift_check_read_the_same_images(folder):
    predicted = [item.shown for item in read_inputs([folder], "text")]
    drift = _read_files(folder)
    assert predicted == list(drift.relative) == ["a/1.png", "b/2.jpg"]
    assert drift.skipped == ("notes.txt",)


def test_a_truncated_image_is_named_by_both(folder):
    whole = (folder / "a" / "1.png").read_bytes()
    (folder / "a" / "1.png").write_bytes(whole[: len(whole) // 2])  # the header is intact, the pixels are not
    for read in (lambda: read_inputs([folder], "text"), lambda: _read_files(folder),
                 lambda: read_inputs([folder / "a" / "1.png"], "text")):
        with pytest.raises(DataError, match=r"1\.png: not an image file PIL can read"):
            read()


def test_texts_come_from_the_named_column_and_an_empty_cell_is_an_empty_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,message\n1,hello\n2,\n")
    assert read_text_column(path, "message") == ["hello", ""]
    with pytest.raises(DataError, match=r"no column 'text' \(columns: \['id', 'message'\]\)"):
        read_text_column(path, "text")


# --- sound files -------------------------------------------------------------------------------

@pytest.fixture
def sounds(tmp_path: Path) -> Path:
    from tests.sounds import tone, write

    root = tmp_path / "incoming"
    for i, relative in enumerate(("a/1.wav", "b/2.flac", "b/3.OGG", "a/.4.wav", ".cache/5.wav",
                                  "b/.ipynb_checkpoints/6.mp3")):
        write(root / relative, tone(300 + 100 * i))
    (root / "notes.txt").write_text("not a sound")
    small_image((20, 20), (30, 90, 120)).save(root / "cover.png")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_hidden_files_are_never_sound_inputs_and_other_files_are_listed(sounds):
    from tasks.data.unlabeled import read_input_folder

    found = read_input_folder(sounds, "audio", "pass a folder.")
    assert found.relative() == ("a/1.wav", "b/2.flac", "b/3.OGG")
    assert [p.name for p in found.skipped] == ["cover.png", "notes.txt"]


def test_predict_and_the_drift_check_read_the_same_sound_files(sounds):
    predicted = [item.shown for item in read_inputs([sounds], "text")]
    drift = _read_files(sounds, "audio")
    assert predicted == list(drift.relative) == ["a/1.wav", "b/2.flac", "b/3.OGG"]
    assert drift.skipped == ("cover.png", "notes.txt")


def test_a_sound_file_that_does_not_decode_is_named_by_both(sounds):
    whole = (sounds / "b" / "2.flac").read_bytes()
    (sounds / "b" / "2.flac").write_bytes(whole[:60] + b"\xff" * 200)  # the header kept, the frames garbage
    (sounds / "a" / "1.wav").write_text("RIFF but really a shopping list")
    for read in (lambda: read_inputs([sounds], "text"), lambda: _read_files(sounds, "audio")):
        with pytest.raises(DataError, match=r"1\.wav: not a sound file libsndfile can read \(and 1 more\)"):
            read()
    with pytest.raises(DataError, match=r"2\.flac: not a sound file libsndfile can read\. Fix"):
        read_inputs([sounds / "b" / "2.flac"], "text")
