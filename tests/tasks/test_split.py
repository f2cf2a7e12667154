import json
import os
import re

import pandas as pd
import pytest

from tasks.data import fingerprint, sha256_text
from tasks.errors import DataError
from tasks.spec import SplitSpec
from tasks.split import quarantined_test_ids, recorded_test_reads, split_examples, train_val_ids


def table(counts: dict[str, int], given: str = "", prefix: str = "") -> pd.DataFrame:
    """`counts[label]` examples per label, ids `<prefix><label>-<i>`, sources `<given>/<label>/<i>.png`."""
    rows = [(f"{prefix}{label}-{i}", f"input {label} {i}", label, given, f"{given or 'root'}/{label}/{prefix}{i}.png")
            for label, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["example_id", "input", "label", "given_split", "source"])


def all_ids(manifest_path):
    return json.loads(manifest_path.read_text())["splits"]


def classes_per_split(examples: pd.DataFrame, manifest_path) -> dict[str, set[str]]:
    label_of = dict(zip(examples["example_id"], examples["label"], strict=True))
    return {name: {label_of[i] for i in ids} for name, ids in all_ids(manifest_path).items()}


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    examples = table({"a": 600, "b": 200})
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    assert ref.sizes == {"train": 560, "val": 120, "test": 120}
    splits = all_ids(ref.manifest_path)
    for name, ids in splits.items():
        share_b = sum(i.startswith("b-") for i in ids) / len(ids)
        assert share_b == pytest.approx(0.25, abs=0.02), name
    assert len(set().union(*map(set, splits.values()))) == 800
    again = split_examples(examples, SplitSpec(), "fp-other", tmp_path / "other")
    assert all_ids(again.manifest_path) == splits
    different_seed = split_examples(examples, SplitSpec(seed=7), "fp", tmp_path)
    assert all_ids(different_seed.manifest_path)["test"] != splits["test"]


def test_manifest_is_written_once_with_no_temporary_left(tmp_path):
    ref = split_examples(table({"a": 50, "b": 50}), SplitSpec(), "fp", tmp_path)
    before = ref.manifest_path.read_bytes()
    again = split_examples(table({"a": 50, "b": 50}), SplitSpec(), "fp", tmp_path)
    assert again.manifest_path == ref.manifest_path and ref.manifest_path.read_bytes() == before
    assert again.manifest_sha256 == ref.manifest_sha256
    assert list(ref.manifest_path.parent.iterdir()) == [ref.manifest_path]


def test_test_fingerprint_covers_test_ids_and_labels(tmp_path):
    examples = table({"a": 50, "b": 50})
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    test_ids = all_ids(ref.manifest_path)["test"]
    labels = dict(zip(examples["example_id"], examples["label"], strict=True))
    assert ref.test_fingerprint == fingerprint(test_ids, [labels[i] for i in test_ids])


def test_given_train_val_split_is_respected_and_test_carved_from_val(tmp_path):
    examples = pd.concat([table({"a": 40, "b": 40}, "train"), table({"a": 20, "b": 20}, "val", prefix="v")])
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    splits = all_ids(ref.manifest_path)
    assert sorted(splits["train"]) == sorted(examples.loc[examples["given_split"] == "train", "example_id"])
    assert all(i.startswith("v") for i in splits["val"] + splits["test"])
    assert ref.sizes["val"] + ref.sizes["test"] == 40 and ref.sizes["test"] == 20
    assert classes_per_split(examples, ref.manifest_path) == {name: {"a", "b"} for name in splits}
    assert any("carved from the given validation split" in note for note in ref.notes)


def test_example_given_in_two_splits_stays_in_the_held_out_one(tmp_path):
    train_only = table({"a": 30, "b": 30}, "train", prefix="t")
    in_both = table({"a": 20, "b": 20}, "train")
    in_both_as_val = table({"a": 20, "b": 20}, "val")  # same ids as in_both: the same content in both
    ref = split_examples(pd.concat([train_only, in_both, in_both_as_val]), SplitSpec(), "fp", tmp_path)
    splits = all_ids(ref.manifest_path)
    assert sorted(splits["train"]) == sorted(train_only["example_id"])
    assert sorted(splits["val"] + splits["test"]) == sorted(in_both["example_id"])
    assert ref.notes[0] == "40 example(s) given in two splits kept only in the held-out one"


def test_duplicates_collapse_to_one_example(tmp_path):
    examples = table({"a": 40, "b": 40})
    ref = split_examples(pd.concat([examples, examples.head(10)]), SplitSpec(), "fp", tmp_path)
    assert sum(ref.sizes.values()) == 80


def test_test_ids_only_through_the_quarantine_function_which_logs_each_read(tmp_path):
    examples = table({"a": 50, "b": 50}).assign(example_id=lambda f: f["input"].map(sha256_text))
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    train_ids, val_ids = train_val_ids(ref.manifest_path)
    assert recorded_test_reads(ref.manifest_path) == []
    test_ids = quarantined_test_ids(ref.manifest_path, reader="unit test")
    assert len(test_ids) == 15 and not set(test_ids) & (set(train_ids) | set(val_ids))  # round(100 * 0.15)
    assert [r["reader"] for r in recorded_test_reads(ref.manifest_path)] == ["unit test"]
    # The SplitRef that travels between tasks carries sizes and a fingerprint, never a test id,
    # in any field (repr walks every field, nested tuples and dicts included).
    shown = repr(ref)
    assert not [i for i in test_ids if i in shown]


@pytest.mark.parametrize("failure", [KeyError("getpwuid(): uid not found: 1000"), OSError("no user name")])
def test_test_read_without_a_user_name_is_logged_with_the_uid(tmp_path, monkeypatch, failure):
    ref = split_examples(table({"a": 50, "b": 50}), SplitSpec(), "fp", tmp_path)

    def no_user_name():
        raise failure

    monkeypatch.setattr("tasks.split.getpass.getuser", no_user_name)
    assert len(quarantined_test_ids(ref.manifest_path, reader="final evaluation")) == 15
    assert recorded_test_reads(ref.manifest_path)[0]["user"] == f"uid {os.getuid()}"


def test_a_test_read_that_cannot_be_logged_fails(tmp_path):
    ref = split_examples(table({"a": 50, "b": 50}), SplitSpec(), "fp", tmp_path)
    ref.manifest_path.with_suffix(".test-reads.jsonl").mkdir()  # the log cannot be appended to
    with pytest.raises(OSError):
        quarantined_test_ids(ref.manifest_path, reader="final evaluation")


def test_tiny_classes_get_a_clear_error_not_a_crash(tmp_path):
    with pytest.raises(DataError, match="cannot make a stratified split"):
        split_examples(table({"a": 20, "b": 1}), SplitSpec(), "fp", tmp_path)


def test_every_class_reaches_each_split_even_when_fractions_round_low(tmp_path):
    examples = table({"a": 3, "b": 3, "c": 3})
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    assert classes_per_split(examples, ref.manifest_path) == {name: {"a", "b", "c"} for name in ref.sizes}


def test_only_missing_splits_are_carved(tmp_path):
    examples = pd.concat([table({"a": 40, "b": 40}, "train"), table({"a": 10, "b": 10}, "test", prefix="t")])
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    assert ref.sizes == {"train": 68, "val": 12, "test": 20}
    assert all(i.startswith("t") for i in all_ids(ref.manifest_path)["test"])
    assert classes_per_split(examples, ref.manifest_path) == {name: {"a", "b"} for name in ref.sizes}
    assert ref.notes == ("validation carved from the given train split (stratified)",)


@pytest.mark.parametrize("given_val, given_test, message", [
    ({"a": 10}, {"a": 5, "b": 5}, "split 'val' has no example of class(es) 'b'"),
    ({"a": 10, "b": 10}, {"b": 5}, "split 'test' has no example of class(es) 'a'"),
])
def test_a_given_split_missing_a_class_is_refused(tmp_path, given_val, given_test, message):
    examples = pd.concat([table({"a": 30, "b": 30}, "train"), table(given_val, "val", prefix="v"),
                          table(given_test, "test", prefix="t")])
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        split_examples(examples, SplitSpec(), "fp", tmp_path)
    assert "data.split_column" in str(caught.value)
    assert not (tmp_path / "splits").exists() or not list((tmp_path / "splits").iterdir())


def test_an_empty_train_split_is_refused(tmp_path):
    examples = pd.concat([table({"a": 10, "b": 10}, "val"), table({"a": 10, "b": 10}, "test", prefix="t")])
    with pytest.raises(DataError, match="split 'train' is empty"):
        split_examples(examples, SplitSpec(), "fp", tmp_path)


def test_a_carved_split_that_misses_a_rare_class_is_refused(tmp_path):
    # 2 of 302 examples: a stratified 45-example test split rounds class b down to none.
    with pytest.raises(DataError, match="no example of class\\(es\\) 'b'"):
        split_examples(table({"a": 300, "b": 2}), SplitSpec(), "fp", tmp_path)


def given_train_val() -> pd.DataFrame:
    return pd.concat([table({"a": 30, "b": 30}, "train"), table({"a": 20, "b": 20}, "val", prefix="v")],
                     ignore_index=True)


def test_reused_manifest_names_examples_whose_given_split_moved(tmp_path):
    examples = given_train_val()
    first = split_examples(examples, SplitSpec(), "fp", tmp_path)
    assert first.warnings == ()
    assert split_examples(examples, SplitSpec(), "fp", tmp_path).warnings == ()
    recorded_val = all_ids(first.manifest_path)["val"][0]
    moved = examples["example_id"].isin([recorded_val, "a-0"])
    swapped = {"train": "val", "val": "train"}
    examples.loc[moved, "given_split"] = examples.loc[moved, "given_split"].map(swapped)
    examples.loc[moved, "source"] = "moved/" + examples.loc[moved, "example_id"] + ".png"
    (warning,) = split_examples(examples, SplitSpec(), "fp", tmp_path).warnings
    assert "contradicts the given split of 2 example(s)" in warning
    assert f"moved/{recorded_val}.png (given train, recorded val)" in warning
    assert "moved/a-0.png (given val, recorded train)" in warning
    assert str(first.manifest_path) in warning


def test_reused_manifest_accepts_splits_carved_from_a_given_one(tmp_path):
    examples = table({"a": 30, "b": 30}, "train")  # val and test are both carved from train
    split_examples(examples, SplitSpec(), "fp", tmp_path)
    assert split_examples(examples, SplitSpec(), "fp", tmp_path).warnings == ()
