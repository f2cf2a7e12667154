"""Odd inputs are quarantined with their reason (or stop the run under `fail`), and examples under
two labels are dropped under `conflicting_labels: drop`: on hand-made files and the real datasets."""

import shutil

import pandas as pd
import pytest
from PIL import Image

from tasks.audit.odd_inputs import PLACEHOLDER_COPIES, take_out
from tasks.config.spec import data_spec
from tasks.data.input_checks import input_check
from tasks.data.readers import load_examples
from tests.conftest import small_image


def folder_with_odd_images(root):
    for label in ("ants", "bees"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            small_image((32, 32), (i * 40, 10 if label == "ants" else 200, 90)).save(root / label / f"{i}.png")
    (root / "ants" / "empty.png").write_bytes(b"")
    (root / "ants" / "torn.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    small_image((4, 30), (1, 2, 3)).save(root / "bees" / "sliver.png")
    Image.new("RGB", (32, 32), (120, 120, 120)).save(root / "bees" / "grey.png")
    placeholder = small_image((32, 32), (250, 0, 0))
    for i in range(PLACEHOLDER_COPIES):  # the same file under several names, even across classes
        placeholder.save(root / ("ants" if i % 2 else "bees") / f"not-found-{i}.png")
    (root / "bees" / "clip.gif").write_bytes((root / "ants" / "0.png").read_bytes())
    return root


EXPECTED = {
    "ants/empty.png": "zero-byte file",
    "ants/torn.jpg": "undecodable image (OSError)",
    "bees/sliver.png": "tiny image (4x30 px)",
    "bees/grey.png": "constant image (one colour)",
    "bees/not-found-0.png": f"placeholder: the same image under {PLACEHOLDER_COPIES} names",
    "ants/not-found-1.png": f"placeholder: the same image under {PLACEHOLDER_COPIES} names",
    "bees/not-found-2.png": f"placeholder: the same image under {PLACEHOLDER_COPIES} names",
}


def test_each_odd_image_is_quarantined_with_its_reason(tmp_path):
    spec = data_spec({"kind": "image_folder", "path": folder_with_odd_images(tmp_path / "data")})
    kept = take_out(load_examples(spec), spec)
    reasons = {q.source: q.reason for q in kept.odd}
    assert reasons.pop("bees/clip.gif").startswith("unsupported format (.gif;")
    assert reasons == EXPECTED
    assert sorted(kept.table["source"]) == sorted(f"{label}/{i}.png" for label in ("ants", "bees") for i in range(4))


def test_under_fail_odd_inputs_stay_in_the_table_for_the_check_to_stop_on(tmp_path):
    spec = data_spec({"kind": "image_folder", "path": folder_with_odd_images(tmp_path / "data"),
                      "odd_inputs": "fail"})
    kept = take_out(load_examples(spec), spec)
    assert len(kept.odd) == len(EXPECTED) + 1 and set(EXPECTED) <= set(kept.table["source"])


def test_odd_texts_are_quarantined_and_a_few_bad_bytes_do_not_stop_the_file(tmp_path):
    path = tmp_path / "texts.csv"
    rows = b"text,label\nhello there,a\n   ,a\n,b\ncaf\xe9 ole,b\n" + b"".join(
        f"text number {i},{'ab'[i % 2]}\n".encode() for i in range(10))
    path.write_bytes(rows)
    spec = data_spec({"kind": "csv_text", "path": path})
    kept = take_out(load_examples(spec), spec)
    assert {q.source: q.reason for q in kept.odd} == {
        "texts.csv:row 3": "empty text (whitespace only)", "texts.csv:row 4": "missing text",
        "texts.csv:row 5": "undecodable bytes (not UTF-8)"}
    assert len(kept.table) == 11


def test_conflicting_copies_are_all_dropped_under_drop(tmp_path):
    path = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["Thank you.", "Thank you.", "Thank you.", "refund please", "where is my card"],
                  "label": ["thanks", "refund", "thanks", "refund", "card"]}).to_csv(path, index=False)
    spec = data_spec({"kind": "csv_text", "path": path, "conflicting_labels": "drop"})
    kept = take_out(load_examples(spec), spec)
    assert sorted(q.source for q in kept.conflicts) == ["texts.csv:row 2", "texts.csv:row 3", "texts.csv:row 4"]
    assert list(kept.table["input"]) == ["refund please", "where is my card"]
    assert take_out(load_examples(data_spec({"kind": "csv_text", "path": path})), spec.model_copy(
        update={"conflicting_labels": "fail"})).conflicts == []  # fail: left for the check to stop on


def test_the_hymenoptera_placeholder_gif_is_quarantined_not_silently_skipped(hymenoptera, tmp_path):
    """The dataset's one GIF is an "image not found" placeholder labeled as an ant."""
    copy = tmp_path / "hymenoptera"
    shutil.copytree(hymenoptera / "train" / "ants", copy / "ants")
    spec = data_spec({"kind": "image_folder", "path": copy})
    kept = take_out(load_examples(spec), spec)
    assert [(q.source, q.label) for q in kept.odd] == [("ants/imageNotFound.gif", "ants")]
    assert kept.odd[0].reason.startswith("unsupported format (.gif;")


@pytest.mark.parametrize("size, colour, expected", [((28, 28), None, None), ((7, 100), (5, 5, 5), "tiny image"),
                                                    ((64, 64), (9, 9, 9), "constant image")])
def test_mnist_sized_digits_pass_and_slivers_and_blanks_do_not(size, colour, expected, tmp_path):
    path = tmp_path / "x.png"
    (Image.new("L", size, 0) if colour is None else Image.new("RGB", size, colour)).save(path)
    if colour is None:  # a digit: a white stroke on black, 28 px like MNIST
        image = Image.open(path).convert("L")
        for y in range(5, 23):
            image.putpixel((14, y), 255)
        image.save(path)
    data = data_spec({"kind": "image_folder", "path": tmp_path})
    reason = input_check(data).reason(path)
    assert (reason is None) if expected is None else reason.startswith(expected)
