from pathlib import Path

import pytest
from PIL import Image

from tasks.data import fingerprint, load_examples, skipped_summary
from tasks.errors import DataError
from tasks.spec import data_spec


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
