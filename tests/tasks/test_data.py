from pathlib import Path

import pytest
from PIL import Image

from tasks.data import fingerprint, load_examples
from tasks.errors import DataError
from tasks.spec import DataSpec


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
    loaded = load_examples(DataSpec(kind="image_folder", path=tmp_path))
    table = loaded.table.set_index("source")
    assert table.loc["train/ants/a.png", "example_id"] == table.loc["val/ants/copy-of-a.png", "example_id"]
    assert table.loc["train/bees/b.png", "example_id"] != table.loc["train/ants/a.png", "example_id"]
    assert table.loc["val/ants/copy-of-a.png", "given_split"] == "val"
    assert loaded.declared_classes == ("ants", "bees")
    assert loaded.skipped_files == ("train/ants/notes.txt",)


def test_flat_layout_and_select_classes(tmp_path):
    for label, colour in [("cat", 1), ("dog", 2), ("fox", 3)]:
        image(tmp_path / label / "x.png", colour)
    loaded = load_examples(DataSpec(kind="image_folder", path=tmp_path, select_classes=["cat", "fox"]))
    assert sorted(loaded.table["label"]) == ["cat", "fox"]
    assert set(loaded.table["given_split"]) == {""}


def test_csv_reads_quoted_multiline_texts_and_keeps_na_words(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"\nHow do I unblock my PIN?",pin\nNA,other\n"a, b",pin\n', encoding="utf-8")
    table = load_examples(DataSpec(kind="csv_text", path=path)).table
    assert list(table["input"]) == ["\nHow do I unblock my PIN?", "NA", "a, b"]
    assert table["example_id"].is_unique


def test_csv_without_the_label_column_names_the_field_and_the_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,category\nhello,x\n")
    with pytest.raises(DataError) as caught:
        load_examples(DataSpec(kind="csv_text", path=path))
    assert "data.label_column='label'" in str(caught.value) and "['text', 'category']" in str(caught.value)


def test_csv_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("text,label\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 .*re-save the CSV as UTF-8"):
        load_examples(DataSpec(kind="csv_text", path=path))


def test_given_split_column_values_are_checked(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label,part\na,x,train\nb,y,holdout\n")
    with pytest.raises(DataError, match="holdout"):
        load_examples(DataSpec(kind="csv_text", path=path, split_column="part"))


def test_banking77_multiline_rows_load(banking77):
    table = load_examples(DataSpec(kind="csv_text", path=banking77 / "train.csv")).table
    assert len(table) == 10003
    assert table["input"].str.contains("\n").sum() == 10
