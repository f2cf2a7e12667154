"""`kind: audio_folder` on hand-made sound files: labels come from folder names in the flat and the
split layout, files of other formats are quarantined (in a class folder) or skipped (beside them)
as `image_folder` does; one sound in two containers is one near-copy group that the split never
divides; each odd clip is quarantined with its reason; and `transferflow init` on a folder of
sound class folders writes an `audio_folder` config with a spectrogram model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tasks.audit.odd_inputs import PLACEHOLDER_COPIES, take_out
from tasks.config.loading import load_spec
from tasks.config.spec import SplitSpec, data_spec
from tasks.data.grouping import group_keys
from tasks.data.readers import load_examples
from tasks.data.split import split_examples
from tasks.data.starter_config import write_starter_config
from tests.conftest import small_image
from tests.sounds import SOUND_FORMATS, clip, pcm16, silence, tone, write


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the reader --------------------------------------------------------------------------------

def test_a_flat_folder_labels_each_sound_file_by_its_folder_and_quarantines_other_formats(tmp_path):
    root = tmp_path / "words"
    write(root / "yes" / "a.wav", clip(1))
    write(root / "yes" / "b.flac", clip(2))
    write(root / "yes" / "deeper" / "c.ogg", clip(3))  # class folders are read recursively
    write(root / "no" / "d.mp3", clip(4))
    write(root / "no" / "E.WAV", clip(5))  # the extension's case does not matter
    (root / "no" / "notes.txt").write_text("recorded on Tuesday")
    small_image((16, 16), (200, 30, 30)).save(root / "no" / "cover.png")
    (root / "README.md").write_text("beside the class folders")
    loaded = load_examples(data_spec({"kind": "audio_folder", "path": root}))
    table = loaded.table.set_index("source")
    assert dict(table["label"]) == {"yes/a.wav": "yes", "yes/b.flac": "yes", "yes/deeper/c.ogg": "yes",
                                    "no/d.mp3": "no", "no/E.WAV": "no"}
    assert set(table["given_split"]) == {""} and loaded.declared_classes == ("no", "yes")
    assert all(table.loc[source, "example_id"] == sha256(root / source) for source in table.index)
    assert all(table.loc[source, "input"] == str(root / source) for source in table.index)
    assert loaded.skipped_files == ("README.md",)  # outside the class folders: no label, reported
    assert {(q.source, q.label, q.reason) for q in loaded.quarantined} == {
        ("no/notes.txt", "no", f"unsupported format (.txt; sound files are {SOUND_FORMATS})"),
        ("no/cover.png", "no", f"unsupported format (.png; sound files are {SOUND_FORMATS})")}


def test_the_image_folder_reader_reports_a_foreign_file_the_same_way(tmp_path):
    """The two kinds share one reader of class folders: what one quarantines or skips, so does the other."""
    sounds, images = tmp_path / "sounds", tmp_path / "images"
    write(sounds / "a" / "x.wav", clip(1))
    (images / "a").mkdir(parents=True)
    small_image((16, 16), (10, 200, 30)).save(images / "a" / "x.png")
    for root in (sounds, images):
        (root / "a" / "notes.txt").write_text("not an example")
        (root / "README.md").write_text("beside")
    heard = load_examples(data_spec({"kind": "audio_folder", "path": sounds}))
    seen = load_examples(data_spec({"kind": "image_folder", "path": images}))
    assert heard.skipped_files == seen.skipped_files == ("README.md",)
    assert [(q.source, q.label) for q in heard.quarantined] == [(q.source, q.label) for q in seen.quarantined] == \
        [("a/notes.txt", "a")]


def test_split_folders_give_each_sound_file_its_split_and_label(tmp_path):
    root = tmp_path / "words"
    write(root / "train" / "yes" / "1.wav", clip(1))
    write(root / "train" / "no" / "2.wav", clip(2))
    write(root / "validation" / "yes" / "3.flac", clip(3))
    write(root / "test" / "no" / "4.wav", clip(4))
    (root / "train" / "labels.csv").write_text("beside the class folders")
    loaded = load_examples(data_spec({"kind": "audio_folder", "path": root}))
    table = loaded.table.set_index("source")
    assert dict(zip(table.index, zip(table["given_split"], table["label"], strict=True), strict=True)) == {
        "train/yes/1.wav": ("train", "yes"), "train/no/2.wav": ("train", "no"),
        "validation/yes/3.flac": ("val", "yes"), "test/no/4.wav": ("test", "no")}
    assert loaded.skipped_files == ("train/labels.csv",)


def test_select_classes_reads_only_the_named_class_folders(tmp_path):
    for seed, label in enumerate(("cat", "dog", "owl")):
        write(tmp_path / label / "x.wav", clip(seed))
    loaded = load_examples(data_spec({"kind": "audio_folder", "path": tmp_path, "select_classes": ["cat", "owl"]}))
    assert sorted(loaded.table["label"]) == ["cat", "owl"]


# --- near-copies -------------------------------------------------------------------------------

def test_one_sound_in_two_containers_is_one_near_copy_group_and_another_sound_is_not(tmp_path):
    root = tmp_path / "words"
    samples = pcm16(clip(1))
    write(root / "yes" / "take.wav", samples)
    write(root / "yes" / "take-again.flac", samples)  # the same 16-bit samples, other bytes
    write(root / "no" / "take-float.wav", (samples / 32768).astype(np.float32), subtype="FLOAT")  # mislabeled copy
    write(root / "yes" / "other.wav", pcm16(clip(2)))
    write(root / "no" / "other-quieter.wav", pcm16(0.5 * clip(2)))  # another sound to the key: not the same samples
    table = load_examples(data_spec({"kind": "audio_folder", "path": root})).table
    assert table["example_id"].nunique() == 5  # five different files
    keys = dict(zip(table["source"], group_keys(table, "audio"), strict=True))
    assert keys["yes/take.wav"] == keys["yes/take-again.flac"] == keys["no/take-float.wav"]
    assert len({keys["yes/take.wav"], keys["yes/other.wav"], keys["no/other-quieter.wav"]}) == 3
    ids = dict(zip(table["source"], table["example_id"], strict=True))
    assert keys["yes/take.wav"] == min(ids[s] for s in ("yes/take.wav", "yes/take-again.flac", "no/take-float.wav"))
    assert keys["yes/other.wav"] == ids["yes/other.wav"]  # a sound with no copy keeps its own id


def test_an_undecodable_sound_file_keeps_its_own_key(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "torn.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    write(tmp_path / "a" / "fine.wav", clip(1))
    table = load_examples(data_spec({"kind": "audio_folder", "path": tmp_path})).table
    assert list(group_keys(table, "audio")) == list(table["example_id"])


def splits_by_source(table, manifest_path: Path) -> dict[str, str]:
    split_of = {i: name for name, ids in json.loads(manifest_path.read_text())["splits"].items() for i in ids}
    return {source: split_of[i] for source, i in zip(table["source"], table["example_id"], strict=True)}


def test_copies_of_one_sound_never_straddle_splits(tmp_path):
    root, pairs = tmp_path / "words", {}
    for label, offset in (("yes", 0), ("no", 50)):
        for i in range(12):
            samples = pcm16(clip(offset + i, seconds=0.2))
            write(root / label / f"{i}.wav", samples)
            write(root / label / f"{i}-copy.flac", samples)
            pairs[f"{label}/{i}-copy.flac"] = f"{label}/{i}.wav"
    table = load_examples(data_spec({"kind": "audio_folder", "path": root})).table
    grouped = split_examples(table, SplitSpec(), "fp", tmp_path / "history", "audio")
    where = splits_by_source(table, grouped.manifest_path)
    assert all(where[copy] == where[original] for copy, original in pairs.items())
    assert set(where.values()) == {"train", "val", "test"}
    assert "24 group(s) of near-copies" in " ".join(grouped.notes)
    apart = splits_by_source(table, split_examples(table, SplitSpec(), "fp", tmp_path / "ungrouped").manifest_path)
    assert any(apart[copy] != apart[original] for copy, original in pairs.items())  # the test can fail


# --- odd clips ---------------------------------------------------------------------------------

def folder_with_odd_clips(root: Path) -> Path:
    for label in ("yes", "no"):
        for i in range(3):
            write(root / label / f"{i}.wav", clip(i + (10 if label == "no" else 0)))
    (root / "yes" / "empty.wav").write_bytes(b"")
    (root / "yes" / "list.wav").write_text("eggs, milk, bread\n" * 50)  # not audio, named .wav
    write(root / "yes" / "header-only.wav", silence(0.0))
    write(root / "no" / "blip.wav", tone(440, seconds=0.05))
    write(root / "no" / "hush.flac", silence(1.0))
    write(root / "no" / "loud.wav", pcm16(np.clip(tone(300, seconds=0.5, amplitude=4.0), -1, 1)))
    for i in range(PLACEHOLDER_COPIES):  # one file under several names, across classes
        write(root / ("yes" if i % 2 else "no") / f"beep-{i}.wav", tone(1000, seconds=0.3))
    (root / "no" / "transcript.txt").write_text("no")
    return root


def test_each_odd_clip_is_quarantined_with_its_reason(tmp_path):
    spec = data_spec({"kind": "audio_folder", "path": folder_with_odd_clips(tmp_path / "words")})
    kept = take_out(load_examples(spec), spec)
    reasons = {q.source: q.reason for q in kept.odd}
    clipped = np.abs(pcm16(np.clip(tone(300, seconds=0.5, amplitude=4.0), -1, 1)) / 32768) >= 0.999
    assert reasons.pop("yes/list.wav").startswith("undecodable audio (")
    assert reasons == {
        "yes/empty.wav": "zero-byte file",
        "yes/header-only.wav": "zero-length audio (no samples)",
        "no/blip.wav": "too short: 50 ms (under 100 ms)",
        "no/hush.flac": "digital silence (RMS 0.0e+00, under 0.0001)",
        "no/loud.wav": f"heavily clipped: {clipped.mean():.1%} of samples at full scale (over 1%)",
        **{f"{'yes' if i % 2 else 'no'}/beep-{i}.wav": f"placeholder: the same sound file under {PLACEHOLDER_COPIES} "
                                                       "names" for i in range(PLACEHOLDER_COPIES)},
        "no/transcript.txt": f"unsupported format (.txt; sound files are {SOUND_FORMATS})",
    }
    assert sorted(kept.table["source"]) == sorted(f"{label}/{i}.wav" for label in ("yes", "no") for i in range(3))


# --- transferflow init -------------------------------------------------------------------------

def test_init_on_sound_class_folders_writes_an_audio_folder_config_with_a_spectrogram_model(tmp_path):
    data = tmp_path / "commands"
    for label, n in (("go", 3), ("stop", 12)):
        for i in range(n):
            write(data / label / f"{i}.wav", clip(i + len(label)))
    small_image((16, 16), (1, 2, 3)).save(data / "go" / "cover.png")  # one image among sound files
    written = write_starter_config(tmp_path / "commands.yaml", data, "Hear go from stop.", "recall:go>=0.9")
    spec = load_spec(written.path)
    assert (written.survey.kind, written.survey.modality) == ("audio_folder", "audio")
    assert spec.data.kind == "audio_folder" and spec.data.path == data.resolve()
    assert written.survey.counts == {"go": 3, "stop": 12}  # sound files only: the image is no example
    model = spec.candidates[0]
    assert (model.family, model.name, model.MODALITY) == ("spectrogram", "mobilenet_v2", "audio")
    assert len(written.warnings) == 1 and "class 'go' has 3 example(s)" in written.warnings[0]


def test_init_counts_sound_files_across_split_folders(tmp_path):
    data = tmp_path / "commands"
    for split, n in (("train", 3), ("val", 1)):
        for label in ("go", "stop"):
            for i in range(n):
                write(data / split / label / f"{i}.flac", clip(i))
    written = write_starter_config(tmp_path / "c.yaml", data, "Hear go from stop.", "accuracy>=0.9")
    assert written.survey.kind == "audio_folder" and written.survey.counts == {"go": 4, "stop": 4}


@pytest.mark.parametrize("images, sounds, kind", [(5, 2, "image_folder"), (2, 5, "audio_folder")])
def test_init_takes_the_kind_of_the_files_the_class_folders_mostly_hold(tmp_path, images, sounds, kind):
    data = tmp_path / "mixed"
    for label in ("a", "b"):
        for i in range(images):
            (data / label).mkdir(parents=True, exist_ok=True)
            small_image((16, 16), (i * 20, 50, 90)).save(data / label / f"{i}.png")
        for i in range(sounds):
            write(data / label / f"{i}.wav", clip(i))
    written = write_starter_config(tmp_path / "c.yaml", data, "Tell a from b.", "accuracy>=0.9")
    assert written.survey.kind == kind and load_spec(written.path).data.kind == kind


def test_init_on_a_csv_of_sound_paths_writes_a_csv_audio_config_that_loads_the_clips(tmp_path):
    """A `path` column (no `text` one) whose values all name sound files is csv_audio; the written
    config loads the clips as the reader reads them, relative to the CSV."""
    from tasks.data.readers import load_examples

    rows = ["path,label"]
    for label in ("go", "stop"):
        for i in range(3):
            write(tmp_path / "clips" / f"{label}-{i}.wav", clip(i + 10 * len(label)))
            rows.append(f"clips/{label}-{i}.wav,{label}")
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    written = write_starter_config(tmp_path / "c.yaml", tmp_path / "clips.csv", "Hear go from stop.", "accuracy>=0.9")
    assert (written.survey.kind, written.survey.modality) == ("csv_audio", "audio")
    assert "path_column" not in written.path.read_text()  # `path` is the default: not written
    spec = load_spec(written.path)
    assert spec.data.kind == "csv_audio" and spec.candidates[0].family == "spectrogram"
    table = load_examples(spec.data).table
    assert sorted(table["input"]) == sorted(str((tmp_path / "clips" / p).resolve()) for p in
                                            [f"{w}-{i}.wav" for w in ("go", "stop") for i in range(3)])


def test_init_on_a_csv_whose_column_mixes_texts_and_file_names_stays_csv_text(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\nplay go.wav now,go\nstop it,stop\n")
    written = write_starter_config(tmp_path / "t.yaml", tmp_path / "t.csv", "Tell go from stop.", "accuracy>=0.9")
    assert (written.survey.kind, written.survey.modality) == ("csv_text", "text")
