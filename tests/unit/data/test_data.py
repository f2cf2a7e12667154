from pathlib import Path

import pytest
from PIL import Image

from tasks.config.spec import data_spec
from tasks.core.errors import DataError
from tasks.core.hashing import fingerprint
from tasks.data.readers import load_examples
from tasks.data.table import skipped_summary


def image(path: Path, colour: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (colour, 0, 0)).save(path)
    return path


def test_fingerprint_ignores_order_and_duplicates_but_not_labels():
    base = fingerprint(["a", "b"], ["x", "y"])
    assert fingerprint(["b", "a", "a"], ["y", "x", "x"]) == base
    assert fingerprint(["a", "b"], ["x", "x"]) != base
    assert fingerprint(["a", "c"], ["x", "y"]) != base


def test_image_ids_are_content_hashes_and_splits_come_from_folders(tmp_path):
    image(tmp_path / "train" / "ants" / "a.png", 1)
    image(tmp_path / "train" / "bees" / "b.png", 2)
    image(tmp_path / "val" / "ants" / "copy-of-a.png", 1)
    (tmp_path / "train" / "ants" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("beside the split folders")
    (tmp_path / "train" / "labels.csv").write_text("beside the class folders")
    loaded = load_examples(data_spec({"kind": "image_folder", "path": tmp_path}))
    table = loaded.table.set_index("source")
    assert table.loc["train/ants/a.png", "example_id"] == table.loc["val/ants/copy-of-a.png", "example_id"]
    assert table.loc["train/bees/b.png", "example_id"] != table.loc["train/ants/a.png", "example_id"]
    assert table.loc["val/ants/copy-of-a.png", "given_split"] == "val"
    assert loaded.declared_classes == ("ants", "bees")
    assert loaded.skipped_files == ("README.md", "train/labels.csv")  # outside the class folders: no label
    [unsupported] = loaded.quarantined  # inside one: an example of an unsupported format, quarantined
    assert (unsupported.source, unsupported.label) == ("train/ants/notes.txt", "ants")
    assert unsupported.reason.startswith("unsupported format (.txt;")


def test_flat_layout_and_select_classes(tmp_path):
    for label, colour in [("cat", 1), ("dog", 2), ("fox", 3)]:
        image(tmp_path / label / "x.png", colour)
    loaded = load_examples(data_spec({"kind": "image_folder", "path": tmp_path, "select_classes": ["cat", "fox"]}))
    assert sorted(loaded.table["label"]) == ["cat", "fox"]
    assert set(loaded.table["given_split"]) == {""}


def flat_with_split_named_class(root: Path) -> None:
    image(root / "cat" / "x.png", 1)
    image(root / "test" / "y.png", 2)  # a class that happens to be called "test"


def test_auto_layout_refuses_split_folders_beside_class_folders(tmp_path):
    flat_with_split_named_class(tmp_path)
    with pytest.raises(DataError) as caught:
        load_examples(data_spec({"kind": "image_folder", "path": tmp_path}))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: ambiguous layout") and "['test']" in message and "['cat']" in message
    assert "data.layout: flat" in message and "data.layout: split" in message


def test_flat_layout_reads_a_class_named_like_a_split(tmp_path):
    flat_with_split_named_class(tmp_path)
    loaded = load_examples(data_spec({"kind": "image_folder", "path": tmp_path, "layout": "flat"}))
    labels = dict(zip(loaded.table["source"], loaded.table["label"], strict=True))
    assert labels == {"cat/x.png": "cat", "test/y.png": "test"}
    assert set(loaded.table["given_split"]) == {""} and loaded.declared_classes == ("cat", "test")


def test_split_layout_refuses_other_folders_in_the_root(tmp_path):
    image(tmp_path / "train" / "cat" / "x.png", 1)
    image(tmp_path / "extra" / "cat" / "y.png", 2)
    with pytest.raises(DataError, match=r"data.layout is split but the root also holds \['extra'\]"):
        load_examples(data_spec({"kind": "image_folder", "path": tmp_path, "layout": "split"}))


def test_split_named_classes_in_auto_layout_point_at_data_layout(tmp_path):
    image(tmp_path / "train" / "x.png", 1)  # classes "train" and "test", images directly inside
    image(tmp_path / "test" / "y.png", 2)
    with pytest.raises(DataError, match=r"no class folders found .*set data.layout: flat"):
        load_examples(data_spec({"kind": "image_folder", "path": tmp_path}))


def test_skipped_summary_counts_and_shows_the_first_few():
    assert skipped_summary(()) == ""
    files = [f"cat/{i}.txt" for i in range(7)]
    summary = skipped_summary(files)
    assert summary.startswith("Skipped 7 file(s)") and "cat/4.txt (+2 more)" in summary and "cat/5" not in summary


def test_labels_sharing_a_metric_key_fail_at_load_time(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nhello,a b!\nhi,a b?\nyo,other\n")
    with pytest.raises(DataError, match=r"t.csv: labels that become the same metric name: 'a b!' and 'a b\?'"):
        load_examples(data_spec({"kind": "csv_text", "path": path}))
    sliced = data_spec({"kind": "csv_text", "path": path, "select_classes": ["a b!", "other"]})
    assert len(load_examples(sliced).table) == 2


def test_csv_reads_quoted_multiline_texts_and_keeps_na_words(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"\nHow do I unblock my PIN?",pin\nNA,other\n"a, b",pin\n', encoding="utf-8")
    table = load_examples(data_spec({"kind": "csv_text", "path": path})).table
    assert list(table["input"]) == ["\nHow do I unblock my PIN?", "NA", "a, b"]
    assert table["example_id"].is_unique


def test_csv_without_the_label_column_names_the_field_and_the_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,category\nhello,x\n")
    with pytest.raises(DataError) as caught:
        load_examples(data_spec({"kind": "csv_text", "path": path}))
    assert "data.label_column='label'" in str(caught.value) and "['text', 'category']" in str(caught.value)


def test_csv_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("text,label\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 .*re-save the CSV as UTF-8"):
        load_examples(data_spec({"kind": "csv_text", "path": path}))


def test_given_split_column_values_are_checked(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label,part\na,x,train\nb,y,holdout\n")
    with pytest.raises(DataError, match="holdout"):
        load_examples(data_spec({"kind": "csv_text", "path": path, "split_column": "part"}))


def test_banking77_multiline_rows_load(banking77):
    table = load_examples(data_spec({"kind": "csv_text", "path": banking77 / "train.csv"})).table
    assert len(table) == 10003
    assert table["input"].str.contains("\n").sum() == 10


def test_given_validation_and_test_files_are_read_beside_the_training_file(tmp_path):
    """As banking77 ships train.csv and test.csv: each given file's rows carry their split."""
    files = [("train.csv", "a one,a\nb one,b\n"), ("dev.csv", "a two,a\n"), ("test.csv", "b two,b\na one,a\n")]
    for name, rows in files:
        (tmp_path / name).write_text("text,label\n" + rows)
    spec = data_spec({"kind": "csv_text", "path": tmp_path / "train.csv", "val_path": tmp_path / "dev.csv",
                      "test_path": tmp_path / "test.csv"})
    table = load_examples(spec).table
    assert list(zip(table["source"], table["given_split"], strict=True)) == [
        ("train.csv:row 2", ""), ("train.csv:row 3", ""), ("dev.csv:row 2", "val"), ("test.csv:row 2", "test"),
        ("test.csv:row 3", "test")]
    with pytest.raises(DataError, match=r"data\.test_path is not a file"):
        load_examples(data_spec({"kind": "csv_text", "path": tmp_path / "train.csv",
                                 "test_path": tmp_path / "missing.csv"}))


def test_banking77_texts_in_both_shipped_files_stay_only_in_test(banking77, tmp_path):
    """The dataset documents 7 texts in both train.csv and test.csv, equal up to case and spacing:
    with the test file given, each such group stays whole in the test split (and the split says so),
    counted here by an independent normalization (lower case, words only)."""
    import json
    import re

    from tasks.config.spec import SplitSpec
    from tasks.data.split import split_examples

    spec = data_spec({"kind": "csv_text", "path": banking77 / "train.csv", "test_path": banking77 / "test.csv"})
    table = load_examples(spec).table
    assert (table["given_split"] == "test").sum() == 3080 and (table["given_split"] == "").sum() == 10003
    words = table["input"].map(lambda text: " ".join(re.findall(r"[a-z0-9]+", text.lower())))
    in_both = set(words[table["given_split"] == ""]) & set(words[table["given_split"] == "test"])
    assert len(in_both) >= 7  # 7 equal up to case and spacing; more when punctuation is ignored too
    split = split_examples(table, SplitSpec(), "fingerprint", tmp_path / "history", modality="text")
    manifest = json.loads(split.manifest_path.read_text())
    split_of = {i: name for name, ids in manifest["splits"].items() for i in ids}
    overlapping = table[words.isin(in_both)]
    assert len(overlapping) >= 14 and {split_of[i] for i in overlapping["example_id"]} == {"test"}
    assert any("moved there" in note for note in split.notes)


def test_sms_spam_near_duplicates_never_straddle_splits(sms_spam, tmp_path):
    """SMS spam holds groups of texts equal up to case and punctuation: each group lands in one split."""
    import json
    import re

    from tasks.config.spec import SplitSpec
    from tasks.data.split import split_examples

    table = load_examples(data_spec({"kind": "csv_text", "path": sms_spam})).table.drop_duplicates("example_id")
    words = table["input"].map(lambda text: " ".join(re.findall(r"\w+", str(text).lower())))
    near = table[words.duplicated(keep=False) & (words != "")]  # words match another text's (emoticons: none)
    assert words[near.index].nunique() >= 30
    split = split_examples(table, SplitSpec(), "fingerprint", tmp_path / "history", modality="text")
    split_of = {i: name for name, ids in json.loads(split.manifest_path.read_text())["splits"].items() for i in ids}
    splits_per_group = near.groupby(words[near.index])["example_id"].agg(lambda ids: {split_of[i] for i in ids})
    assert splits_per_group.map(len).max() == 1
    ungrouped = split_examples(table, SplitSpec(), "other", tmp_path / "ungrouped")
    split_of = {i: name for name, ids in json.loads(ungrouped.manifest_path.read_text())["splits"].items()
                for i in ids}
    assert near.groupby(words[near.index])["example_id"].agg(lambda ids: len({split_of[i] for i in ids})).max() > 1
