import json

import pandas as pd
import pytest

from tasks.data import fingerprint
from tasks.spec import SplitSpec
from tasks.split import quarantined_test_ids, split_examples, recorded_test_reads, train_val_ids


def table(counts: dict[str, int], given: str = "") -> pd.DataFrame:
    rows = [(f"{label}-{i}", f"input {label} {i}", label, given, "") for label, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["example_id", "input", "label", "given_split", "source"])


def all_ids(manifest_path):
    return json.loads(manifest_path.read_text())["splits"]


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


def test_manifest_is_written_once(tmp_path):
    ref = split_examples(table({"a": 50, "b": 50}), SplitSpec(), "fp", tmp_path)
    before = ref.manifest_path.read_bytes()
    again = split_examples(table({"a": 50, "b": 50}), SplitSpec(), "fp", tmp_path)
    assert again.manifest_path == ref.manifest_path and ref.manifest_path.read_bytes() == before
    assert again.manifest_sha256 == ref.manifest_sha256


def test_test_fingerprint_covers_test_ids_and_labels(tmp_path):
    examples = table({"a": 50, "b": 50})
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    test_ids = all_ids(ref.manifest_path)["test"]
    labels = dict(zip(examples["example_id"], examples["label"]))
    assert ref.test_fingerprint == fingerprint(test_ids, [labels[i] for i in test_ids])


def test_given_train_val_split_is_respected_and_test_carved_from_val(tmp_path):
    examples = pd.concat([table({"a": 40, "b": 40}, "train"),
                          table({"a": 20, "b": 20}, "val").assign(example_id=lambda f: "v" + f.example_id)])
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    splits = all_ids(ref.manifest_path)
    assert len(splits["train"]) == 80 and not any(i.startswith("v") for i in splits["train"])
    assert ref.sizes["val"] + ref.sizes["test"] == 40 and ref.sizes["test"] == 20
    assert any("carved from the given validation split" in note for note in ref.notes)


def test_example_given_in_two_splits_stays_in_the_held_out_one(tmp_path):
    train = table({"a": 30, "b": 30}, "train")
    val = table({"a": 30, "b": 30}, "val")  # same ids as train: the same content in both
    ref = split_examples(pd.concat([train, val]), SplitSpec(), "fp", tmp_path)
    splits = all_ids(ref.manifest_path)
    assert sum(map(len, splits.values())) == 60
    assert "60 example(s) given in two splits" in ref.notes[0]


def test_duplicates_collapse_to_one_example(tmp_path):
    examples = table({"a": 40, "b": 40})
    ref = split_examples(pd.concat([examples, examples.head(10)]), SplitSpec(), "fp", tmp_path)
    assert sum(ref.sizes.values()) == 80


def test_test_ids_only_through_the_quarantine_function_which_logs_each_read(tmp_path):
    ref = split_examples(table({"a": 50, "b": 50}), SplitSpec(), "fp", tmp_path)
    train_ids, val_ids = train_val_ids(ref.manifest_path)
    assert recorded_test_reads(ref.manifest_path) == []
    test_ids = quarantined_test_ids(ref.manifest_path, reader="unit test")
    assert not set(test_ids) & (set(train_ids) | set(val_ids))
    assert [r["reader"] for r in recorded_test_reads(ref.manifest_path)] == ["unit test"]
    # The SplitRef that travels between tasks carries sizes and a fingerprint, never test ids.
    assert not any(isinstance(v, list) for v in vars(ref).values())


def test_tiny_classes_get_a_clear_error_not_a_crash(tmp_path):
    from tasks.errors import DataError

    with pytest.raises(DataError, match="cannot make a stratified split"):
        split_examples(table({"a": 20, "b": 1}), SplitSpec(), "fp", tmp_path)


def test_every_class_reaches_each_split_even_when_fractions_round_low(tmp_path):
    ref = split_examples(table({"a": 3, "b": 3, "c": 3}), SplitSpec(), "fp", tmp_path)
    assert ref.sizes == {"train": 3, "val": 3, "test": 3}


def test_only_missing_splits_are_carved(tmp_path):
    given_test = table({"a": 10, "b": 10}, "test").assign(example_id=lambda f: "t" + f.example_id)
    examples = pd.concat([table({"a": 40, "b": 40}, "train"), given_test])
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    assert ref.sizes == {"train": 68, "val": 12, "test": 20}
    assert all(i.startswith("t") for i in all_ids(ref.manifest_path)["test"])
    assert ref.notes == ("validation carved from the given train split (stratified)",)
