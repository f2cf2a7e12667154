"""`kind: csv_audio` on hand-made sound files listed in CSVs: the table is the one `audio_folder`
makes of the same files; paths resolve against the listing CSV's own folder, never the working
folder; a row naming a missing file or a file outside the CSV's folder stops the load naming the CSV
and the row; given held-out files carry their split; odd clips are found by the audio check; and one
sound under two names is one near-copy group."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.audit.odd_inputs import PLACEHOLDER_COPIES, take_out
from tasks.config.loading import load_spec
from tasks.config.spec import SplitSpec, data_spec
from tasks.core.errors import DataError, SpecError
from tasks.data.grouping import group_keys
from tasks.data.input_checks import input_check
from tasks.data.readers import load_examples
from tasks.data.split import split_examples
from tasks.data.table import COLUMNS
from tests.conftest import write_config
from tests.sounds import SOUND_FORMATS, chirp, clip, tone, write


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(path: Path, rows: list[tuple[str, str]], columns: tuple[str, str] = ("path", "label")) -> Path:
    """A CSV of (path, label) rows; an empty string is an empty cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def csv_audio(path: Path, **fields: object):
    return data_spec({"kind": "csv_audio", "path": path, **fields})


# --- the table ---------------------------------------------------------------------------------

def test_the_table_is_the_one_audio_folder_makes_of_the_same_files(tmp_path):
    root = tmp_path / "words"
    for i, (label, name) in enumerate([("yes", "a.wav"), ("yes", "b.flac"), ("yes", "deeper/c.ogg"),
                                       ("no", "d.wav"), ("no", "E.WAV")]):
        write(root / label / name, clip(i))
    write(root / "no" / "f.wav", chirp(300, 900))
    rows = [(str(p.relative_to(root)), p.relative_to(root).parts[0]) for p in sorted(root.rglob("*.*"))]
    from_csv = load_examples(csv_audio(listing(root / "labels.csv", rows))).table
    from_folders = load_examples(data_spec({"kind": "audio_folder", "path": root})).table
    assert list(from_csv.columns) == COLUMNS
    same = ["example_id", "input", "label", "given_split"]
    assert from_csv[same].sort_values("input").reset_index(drop=True).equals(
        from_folders[same].sort_values("input").reset_index(drop=True))
    assert len(from_csv) == 6 and all(Path(p).is_absolute() and Path(p).is_file() for p in from_csv["input"])
    assert list(from_csv["source"]) == [f"labels.csv:row {n}" for n in range(2, 8)]  # where to fix a row


def test_paths_resolve_against_each_csvs_own_folder_not_the_working_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write(data / "lists" / "clips" / "a.wav", clip(1))
    write(data / "lists" / "clips" / "b.wav", clip(2))
    write(data / "lists" / "clips" / "c.wav", clip(3))
    write(data / "held" / "clips" / "a.wav", clip(4))  # the same relative path, beside the held-out CSV
    decoy = tmp_path / "elsewhere"
    write(decoy / "clips" / "a.wav", clip(9))  # what the path would mean from the working folder
    monkeypatch.chdir(decoy)
    train = listing(data / "lists" / "train.csv", [("clips/a.wav", "x"), ("sub/../clips/b.wav", "y"),
                                                   (str(data / "lists" / "clips" / "c.wav"), "y")])
    test = listing(data / "held" / "test.csv", [("clips/a.wav", "x")])
    table = load_examples(csv_audio(train, test_path=test)).table
    expected = [data / "lists" / "clips" / "a.wav", data / "lists" / "clips" / "b.wav",
                data / "lists" / "clips" / "c.wav", data / "held" / "clips" / "a.wav"]
    assert list(table["input"]) == [str(p) for p in expected]  # normalized: no '..' left in a path
    assert list(table["example_id"]) == [sha256(p) for p in expected]
    assert sha256(decoy / "clips" / "a.wav") not in set(table["example_id"])
    assert list(table["given_split"]) == ["", "", "", "test"]


@pytest.mark.parametrize("written, problem", [
    ("yes/missing.wav", "'yes/missing.wav' not found"),
    ("../outside.wav", "'../outside.wav' is outside the CSV's folder ('..' leads"),
    ("ABSOLUTE", "'{outside}' is outside the CSV's folder (an absolute path to {outside})"),
    ("yes", "'yes' is not a file"),
    ("", "empty cell"),
])
def test_a_row_naming_no_file_inside_the_csvs_folder_stops_the_load_naming_file_row_and_fix(tmp_path, written,
                                                                                            problem):
    outside = Path(write(tmp_path / "outside.wav", clip(0)))  # exists: refused for where it is, not for absence
    root = tmp_path / "words"
    write(root / "yes" / "a.wav", clip(1))
    path = listing(root / "labels.csv", [("yes/a.wav", "yes"), (str(outside) if written == "ABSOLUTE" else written,
                                                                "yes")])
    with pytest.raises(DataError) as caught:
        load_examples(csv_audio(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: 1 row(s) of column 'path' (data.path_column) name no file inside the CSV's "
                              f"folder {root}: ")
    assert f"row 3: {problem.format(outside=outside)}" in message and "row 2" not in message
    assert f"Fix: write each path relative to that folder (e.g. dog/bark.wav for {root / 'dog' / 'bark.wav'})" \
        in message


def test_every_bad_row_is_counted_and_the_first_few_named(tmp_path):
    path = listing(tmp_path / "labels.csv", [(f"gone-{i}.wav", "x") for i in range(7)])
    with pytest.raises(DataError, match=r"7 row\(s\) .*row 2: 'gone-0.wav' not found.*row 6: 'gone-4.wav' not found"
                                        r".* \(\+2 more\)\. Fix"):
        load_examples(csv_audio(path))


def test_empty_labels_and_named_columns_behave_as_in_csv_text(tmp_path):
    write(tmp_path / "a.wav", clip(1))
    write(tmp_path / "b.wav", clip(2))
    path = listing(tmp_path / "labels.csv", [("a.wav", "yes"), ("b.wav", "")], columns=("file", "word"))
    table = load_examples(csv_audio(path, path_column="file", label_column="word")).table
    (tmp_path / "texts.csv").write_text("text,word\nhello,yes\nthere,\n")
    texts = load_examples(data_spec({"kind": "csv_text", "path": tmp_path / "texts.csv",
                                     "label_column": "word"})).table
    assert list(table["label"].isna()) == list(texts["label"].isna()) == [False, True]  # the check names it
    with pytest.raises(DataError, match=r"column\(s\) \['path'\] not found \(data\.path_column='path'\)"):
        load_examples(csv_audio(path, label_column="word"))


def test_a_config_names_a_missing_path_column_when_it_loads(tmp_path):
    listing(tmp_path / "labels.csv", [("a.wav", "yes")], columns=("file", "label"))
    base = ("task: Tell words apart.\nmetric: {name: accuracy, target: 0.9}\nregistry: {model_name: words}\n"
            "model: {family: spectrogram, name: mobilenet_v2}\n")
    good = write_config(tmp_path, base + "data: {kind: csv_audio, path: labels.csv, path_column: file}\n")
    assert load_spec(good).data.MODALITY == "audio"
    bad = write_config(tmp_path, base + "data: {kind: csv_audio, path: labels.csv}\n")
    with pytest.raises(SpecError, match=r"labels\.csv: column\(s\) \['path'\] not found \(data\.path_column='path'\)"):
        load_spec(bad)


# --- given splits --------------------------------------------------------------------------------

def test_a_given_test_files_rows_land_only_in_test_even_when_also_listed_for_training(tmp_path):
    root = tmp_path / "words"
    train_rows, test_rows = [], []
    for label, base in (("yes", 0), ("no", 20)):
        for i in range(10):
            name = f"{label}/{i}.wav"
            write(root / name, clip(base + i))
            (test_rows if i >= 7 else train_rows).append((name, label))
    train_rows.append(test_rows[0])  # listed in both files: a test example, never trained on
    train = listing(root / "train.csv", train_rows)
    test = listing(root / "test.csv", test_rows)
    table = load_examples(csv_audio(train, test_path=test)).table
    assert list(table["given_split"]) == [""] * len(train_rows) + ["test"] * len(test_rows)
    split = split_examples(table, SplitSpec(), "fp", tmp_path / "history", modality="audio")
    splits = json.loads(split.manifest_path.read_text())["splits"]
    listed_for_test = {sha256(root / name) for name, _ in test_rows}
    assert set(splits["test"]) == listed_for_test
    assert not listed_for_test & (set(splits["train"]) | set(splits["val"]))
    assert splits["train"] and splits["val"]


def test_a_split_column_gives_each_row_its_split(tmp_path):
    write(tmp_path / "a.wav", clip(1))
    write(tmp_path / "b.wav", clip(2))
    path = tmp_path / "labels.csv"
    path.write_text("path,label,part\na.wav,yes,Validation\nb.wav,no,train\n")
    assert list(load_examples(csv_audio(path, split_column="part")).table["given_split"]) == ["val", "train"]


# --- odd inputs and near-copies ------------------------------------------------------------------

def test_odd_clips_listed_in_the_csv_are_quarantined_by_the_audio_check(tmp_path):
    root = tmp_path / "words"
    rows = []
    for i in range(4):
        write(root / "yes" / f"{i}.wav", clip(i))
        rows.append((f"yes/{i}.wav", "yes"))
    write(root / "no" / "silent.wav", np.zeros(8000, dtype=np.float32))
    write(root / "no" / "short.wav", tone(440, 0.05))
    (root / "no" / "notes.txt").write_text("recorded on Tuesday")
    beep = tone(880, 0.3)
    for i in range(PLACEHOLDER_COPIES):
        write(root / "no" / f"beep-{i}.wav", beep)
    rows += [("no/silent.wav", "no"), ("no/short.wav", "no"), ("no/notes.txt", "no"),
             *((f"no/beep-{i}.wav", "no") for i in range(PLACEHOLDER_COPIES)),
             ("yes/0.wav", "yes"), ("yes/0.wav", "yes")]  # one file on more rows: duplicates, not a placeholder
    spec = csv_audio(listing(root / "clips.csv", rows))
    assert input_check(spec) is input_check(data_spec({"kind": "audio_folder", "path": root}))  # by modality
    kept = take_out(load_examples(spec), spec)
    reasons = {q.source: q.reason for q in kept.odd}
    assert reasons.pop("clips.csv:row 6").startswith("digital silence (RMS 0.0e+00")
    assert reasons.pop("clips.csv:row 7") == "too short: 50 ms (under 100 ms)"
    assert reasons.pop("clips.csv:row 8") == f"unsupported format (.txt; sound files are {SOUND_FORMATS})"
    assert reasons == {f"clips.csv:row {9 + i}": f"placeholder: the same sound file under {PLACEHOLDER_COPIES} names"
                       for i in range(PLACEHOLDER_COPIES)}
    assert sorted(kept.table["input"]) == sorted(str(root / name) for name, _ in rows[:4] + rows[-2:])


def test_one_sound_under_two_names_is_one_near_copy_group_the_split_never_divides(tmp_path):
    root = tmp_path / "words"
    rows, pairs = [], []
    for label, base in (("yes", 0), ("no", 20)):
        for i in range(12):
            samples = np.round(clip(base + i) * 32767).astype(np.int16)  # exact numbers in any lossless container
            original = f"{label}/{i}.wav"
            write(root / original, samples)
            rows.append((original, label))
            if i < 4:  # the same samples in another container and name: other bytes, so another id
                copy = f"{label}/copies/{i}-again.flac"
                write(root / copy, samples)
                rows.append((copy, label))
                pairs.append((original, copy))
    table = load_examples(csv_audio(listing(root / "clips.csv", rows))).table
    by_name = {str(Path(p).relative_to(root)): i for i, p in enumerate(table["input"])}
    keys = group_keys(table, "audio")
    for original, copy in pairs:
        assert table["example_id"][by_name[original]] != table["example_id"][by_name[copy]]
        assert keys[by_name[original]] == keys[by_name[copy]]
    assert keys.nunique() == len(table) - len(pairs)
    split = split_examples(table, SplitSpec(), "fp", tmp_path / "history", modality="audio")
    split_of = {i: name for name, ids in json.loads(split.manifest_path.read_text())["splits"].items() for i in ids}
    ids = dict(zip(table["input"], table["example_id"], strict=True))
    assert all(split_of[ids[str(root / a)]] == split_of[ids[str(root / b)]] for a, b in pairs)
    assert f"{len(pairs)} group(s) of near-copies" in " ".join(split.notes)
