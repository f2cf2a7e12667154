import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from tasks.config.spec import SplitSpec
from tasks.core.errors import DataError
from tasks.core.hashing import fingerprint, sha256_text
from tasks.data.split import (
    quarantined_test_ids,
    recorded_test_reads,
    split_examples,
    train_val_ids,
    without_examples,
)
from tasks.data.split_history import HISTORY_FILE, FolderHistoryStore, History


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
    different_seed = split_examples(examples, SplitSpec(seed=7), "fp", tmp_path / "another-model")
    assert all_ids(different_seed.manifest_path)["test"] != splits["test"]


def test_manifest_is_written_once_with_no_temporary_left(tmp_path):
    ref = split_examples(table({"a": 50, "b": 50}), SplitSpec(), "fp", tmp_path)
    before = ref.manifest_path.read_bytes()
    again = split_examples(table({"a": 50, "b": 50}), SplitSpec(), "fp", tmp_path)
    assert again.manifest_path == ref.manifest_path and ref.manifest_path.read_bytes() == before
    assert again.manifest_sha256 == ref.manifest_sha256
    assert sorted(p.name for p in ref.manifest_path.parent.iterdir()) == sorted(
        [".lock", "assignments.json", ref.manifest_path.name])


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

    monkeypatch.setattr("tasks.data.split.getpass.getuser", no_user_name)
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


def test_a_moved_given_split_is_reported_and_the_recorded_split_wins(tmp_path):
    examples = given_train_val()
    first = split_examples(examples, SplitSpec(), "fp", tmp_path)
    assert first.warnings == ()
    assert split_examples(examples, SplitSpec(), "fp", tmp_path).warnings == ()
    recorded_val = all_ids(first.manifest_path)["val"][0]
    moved = examples["example_id"].isin([recorded_val, "a-0"])
    swapped = {"train": "val", "val": "train"}
    examples.loc[moved, "given_split"] = examples.loc[moved, "given_split"].map(swapped)
    examples.loc[moved, "source"] = "moved/" + examples.loc[moved, "example_id"] + ".png"
    again = split_examples(examples, SplitSpec(), "fp-moved", tmp_path)
    (warning,) = again.warnings
    assert "2 example(s) have a given split that contradicts the split recorded" in warning
    assert f"moved/{recorded_val}.png (given train, recorded val)" in warning
    assert "moved/a-0.png (given val, recorded train)" in warning
    assert "transferflow split reset" in warning
    assert all_ids(again.manifest_path) == all_ids(first.manifest_path)  # the recorded split wins


def test_reused_manifest_accepts_splits_carved_from_a_given_one(tmp_path):
    examples = table({"a": 30, "b": 30}, "train")  # val and test are both carved from train
    split_examples(examples, SplitSpec(), "fp", tmp_path)
    assert split_examples(examples, SplitSpec(), "fp", tmp_path).warnings == ()


def split_of(manifest_path) -> dict[str, str]:
    return {i: name for name, ids in all_ids(manifest_path).items() for i in ids}


def test_grown_data_keeps_every_old_assignment_and_stratifies_the_new_examples(tmp_path):
    """The reviewer's case: 400 examples, then 150 more; not one old example may change split."""
    old = table({"a": 200, "b": 120, "c": 80})
    first = split_of(split_examples(old, SplitSpec(), "fp-400", tmp_path).manifest_path)
    grown = pd.concat([old, table({"a": 60, "b": 60, "c": 30}, prefix="new-")], ignore_index=True)
    ref = split_examples(grown, SplitSpec(), "fp-550", tmp_path)
    second = split_of(ref.manifest_path)
    assert {i: second[i] for i in first} == first
    for label, n in {"a": 60, "b": 60, "c": 30}.items():
        new_ids = [f"new-{label}-{i}" for i in range(n)]
        shares = {name: sum(second[i] == name for i in new_ids) / n for name in ("train", "val", "test")}
        assert shares["val"] == pytest.approx(0.15, abs=1 / n) and shares["test"] == pytest.approx(0.15, abs=1 / n)
    manifest = json.loads(ref.manifest_path.read_text())
    assert sum(manifest["new_in_this_manifest"].values()) == 150
    assert any("400 example(s) kept their recorded split; 150 new example(s) assigned" in n for n in ref.notes)


def test_single_new_examples_are_stratified_in_expectation_not_forced_into_train(tmp_path):
    data = table({"a": 40, "b": 40})
    split_examples(data, SplitSpec(), "fp-0", tmp_path)
    placed = []
    for step in range(200):  # one new example per run, as a trickle of labeled data arrives
        data = pd.concat([data, table({"a": 1}, prefix=f"s{step}-")], ignore_index=True)
        placed.append(split_of(split_examples(data, SplitSpec(), f"fp-{step + 1}", tmp_path).manifest_path)[
            f"s{step}-a-0"])
    assert 0.07 <= placed.count("test") / 200 <= 0.25 and 0.07 <= placed.count("val") / 200 <= 0.25


def test_changed_fractions_move_no_recorded_example(tmp_path):
    data = table({"a": 50, "b": 50})
    first = split_of(split_examples(data, SplitSpec(), "fp", tmp_path).manifest_path)
    wider = SplitSpec(validation_fraction=0.3, test_fraction=0.3)
    assert split_of(split_examples(data, wider, "fp-again", tmp_path).manifest_path) == first


def test_removed_examples_disappear_and_come_back_to_their_split(tmp_path):
    data = table({"a": 50, "b": 50})
    first = split_of(split_examples(data, SplitSpec(), "fp", tmp_path).manifest_path)
    gone = data["example_id"].isin(["a-0", "b-0"])
    ref = split_examples(data[~gone], SplitSpec(), "fp-smaller", tmp_path)
    assert set(split_of(ref.manifest_path)) == set(first) - {"a-0", "b-0"}
    assert any("2 recorded example(s) are no longer in the data" in n for n in ref.notes)
    back = split_of(split_examples(data, SplitSpec(), "fp-back", tmp_path).manifest_path)
    assert back == first


def test_new_examples_follow_the_datas_given_splits(tmp_path):
    """With train/ and val/ folders, a new train/ file stays in train and new val/ files are shared
    between validation and test (the test split is carved from val), as on the first run."""
    data = given_train_val()
    split_examples(data, SplitSpec(), "fp", tmp_path)
    grown = pd.concat([data, table({"a": 20, "b": 20}, "train", prefix="nt"),
                       table({"a": 20, "b": 20}, "val", prefix="nv")], ignore_index=True)
    second = split_of(split_examples(grown, SplitSpec(), "fp-grown", tmp_path).manifest_path)
    assert {second[f"nt{label}-{i}"] for label in "ab" for i in range(20)} == {"train"}
    new_held_out = [second[f"nv{label}-{i}"] for label in "ab" for i in range(20)]
    assert set(new_held_out) == {"val", "test"} and 12 <= new_held_out.count("test") <= 28


def test_reset_retires_the_history_without_deleting_it(tmp_path):
    data = table({"a": 50, "b": 50})
    split_examples(data, SplitSpec(), "fp", tmp_path)
    history = json.loads((tmp_path / HISTORY_FILE).read_text())
    retired = FolderHistoryStore(tmp_path).retire()
    assert retired is not None and json.loads(Path(retired).read_text()) == history
    assert not (tmp_path / HISTORY_FILE).exists()
    fresh = split_examples(data, SplitSpec(seed=7), "fp", tmp_path)
    assert json.loads(fresh.manifest_path.read_text())["split_history"] != history["history"]
    assert FolderHistoryStore(tmp_path / "no-such-model").retire() is None


class RacingStore(FolderHistoryStore):
    """A folder store where another writer (a second workdir on the same server) records its own
    assignments between this writer's read and its first write, `races` times."""

    def __init__(self, folder, rival: pd.DataFrame, races: int = 1) -> None:
        super().__init__(folder)
        self.rival, self.races, self.writes = rival, races, 0

    def write(self, history: History) -> bool:
        self.writes += 1
        if self.races:
            self.races -= 1
            split_examples(self.rival, SplitSpec(), f"rival-{self.races}", self.folder / "rival-manifests",
                           store=FolderHistoryStore(self.folder))
        return super().write(history)


def test_a_writer_that_lost_the_race_rereads_and_loses_no_assignment(tmp_path):
    """Optimistic writes: the rival's generation lands first, so this write is refused, and the
    retry keeps both writers' assignments (the rival's examples keep the rival's splits)."""
    first = table({"a": 50, "b": 50})
    split_examples(first, SplitSpec(), "fp", tmp_path)
    rival = pd.concat([first, table({"a": 30, "b": 30}, prefix="rival")], ignore_index=True)
    ours = pd.concat([first, table({"a": 30, "b": 30}, prefix="ours")], ignore_index=True)
    store = RacingStore(tmp_path, rival)
    ref = split_examples(ours, SplitSpec(), "fp-ours", tmp_path, store=store)
    assert store.writes == 2  # refused once, then stored
    stored = FolderHistoryStore(tmp_path).read()
    assert stored.generation == 3  # first run, the rival, then ours
    rival_split = split_of(next((tmp_path / "rival-manifests").glob("*.json")))
    assert {i: stored.splits[i] for i in rival_split} == rival_split  # the rival's assignments survived
    assert {i: stored.splits[i] for i in split_of(ref.manifest_path)} == split_of(ref.manifest_path)
    assert len(stored.splits) == 100 + 60 + 60


def test_a_writer_that_keeps_losing_stops_with_a_clear_error(tmp_path):
    from tasks.data.split import MAX_WRITE_ATTEMPTS

    class AlwaysBeaten(FolderHistoryStore):
        def write(self, history: History) -> bool:
            return False

    first = table({"a": 50, "b": 50})
    split_examples(first, SplitSpec(), "fp", tmp_path)
    grown = pd.concat([first, table({"a": 5, "b": 5}, prefix="new")], ignore_index=True)
    with pytest.raises(DataError, match=f"{MAX_WRITE_ATTEMPTS} attempts .* lost the race. Fix: run again"):
        split_examples(grown, SplitSpec(), "fp-2", tmp_path, store=AlwaysBeaten(tmp_path))
    assert len(FolderHistoryStore(tmp_path).read().splits) == 100  # nothing half-recorded


def test_a_refused_first_split_records_nothing(tmp_path):
    with pytest.raises(DataError):
        split_examples(table({"a": 300, "b": 2}), SplitSpec(), "fp", tmp_path)
    assert not (tmp_path / HISTORY_FILE).exists()


@pytest.mark.parametrize("text, same_as", [
    ("Sorry, I'll call later", "sorry i ll CALL later!!"),
    ("  Ok lar... Joking wif u oni...", "ok lar joking wif u oni"),
    ("\uff26\uff35\uff2c\uff2c width", "full width"),  # full-width letters: NFKC
])
def test_texts_equal_up_to_case_spacing_and_punctuation_share_a_group_key(text, same_as):
    from tasks.data.grouping import normalized_text

    assert normalized_text(text) == normalized_text(same_as) != ""
    assert normalized_text(text) != normalized_text("sorry i will call later")


def near_copies(counts: dict[str, int], copies: int = 2) -> pd.DataFrame:
    """`copies` spellings of each text (case, punctuation), each its own example id."""
    rows = [(f"{label}-{i}-{c}", ["Text", "text!", "TEXT..."][c] + f" {label} {i}", label, "", f"{label}/{i}-{c}")
            for label, n in counts.items() for i in range(n) for c in range(copies)]
    return pd.DataFrame(rows, columns=["example_id", "input", "label", "given_split", "source"])


def group_of(example_id: str) -> str:
    return example_id.rsplit("-", 1)[0]


def test_near_copies_are_assigned_as_one_group_and_new_ones_join_their_recorded_split(tmp_path):
    examples = near_copies({"a": 20, "b": 20})
    split = split_examples(examples, SplitSpec(seed=3), "fp1", tmp_path, modality="text")
    split_of = {i: name for name, ids in all_ids(split.manifest_path).items() for i in ids}
    by_group: dict[str, set[str]] = {}
    for example_id, name in split_of.items():
        by_group.setdefault(group_of(example_id), set()).add(name)
    assert all(len(names) == 1 for names in by_group.values()) and len(by_group) == 40
    assert {name for names in by_group.values() for name in names} == {"train", "val", "test"}
    grown = pd.concat([examples, near_copies({"a": 20, "b": 20}, copies=3).iloc[2::3]])  # a third spelling each
    again = split_examples(grown, SplitSpec(seed=3), "fp2", tmp_path, modality="text")
    split_of = {i: name for name, ids in all_ids(again.manifest_path).items() for i in ids}
    assert all(split_of[f"{group}-2"] == next(iter(names)) for group, names in by_group.items())
    assert "40 new example(s) joined the split of a recorded near-copy" in again.notes


def test_a_group_given_in_two_splits_goes_whole_to_the_more_held_out_one(tmp_path):
    held_out = table({"a": 4, "b": 4}, given="test", prefix="t")
    held_out["input"] = "held out " + held_out["input"]
    examples = pd.concat([table({"a": 12, "b": 12}, given="train"), held_out])
    examples.loc[examples["example_id"] == "a-0", "input"] = "Input A 0!"  # a near-copy of ...
    examples.loc[examples["example_id"] == "ta-0", "input"] = "input a 0"  # ... a given test example
    split = split_examples(examples, SplitSpec(), "fp", tmp_path, modality="text")
    assert "a-0" in all_ids(split.manifest_path)["test"] and "a-0" not in all_ids(split.manifest_path)["train"]
    assert any(note.startswith("1 example(s) given in one split with a near-copy") for note in split.notes)
    ungrouped = split_examples(examples, SplitSpec(), "fp", tmp_path / "ungrouped")  # images: content hash only
    assert "a-0" in all_ids(ungrouped.manifest_path)["train"]


def test_policy_drops_accumulate_in_the_manifest_and_never_touch_test_or_empty_a_class(tmp_path):
    examples = table({"a": 40, "b": 40})
    label_of = dict(zip(examples["example_id"], examples["label"], strict=True))
    ref = split_examples(examples, SplitSpec(), "fp", tmp_path)
    train, val = train_val_ids(ref.manifest_path)
    first = without_examples(ref, train[:2], "labels disputed (data.label_issues: drop)", label_of)
    second = without_examples(first, val[:1], "near-copies (data.leakage: drop)", label_of)
    manifest = json.loads(second.manifest_path.read_text())
    assert manifest["dropped"] == [{"why": "labels disputed (data.label_issues: drop)", "ids": sorted(train[:2])},
                                   {"why": "near-copies (data.leakage: drop)", "ids": val[:1]}]
    assert manifest["splits"]["train"] == train[2:] and manifest["splits"]["val"] == val[1:]
    assert second.sizes["test"] == ref.sizes["test"] and json.loads(ref.manifest_path.read_text())["splits"][
        "train"] == train  # the original manifest stays as written
    with pytest.raises(ValueError, match="test split is never changed"):
        without_examples(ref, all_ids(ref.manifest_path)["test"][:1], "x", label_of)
    every_a_in_val = [i for i in val if label_of[i] == "a"]
    refused = r"\(data\.leakage: drop\)\) would leave split 'val' with no example of class\(es\) 'a'"
    with pytest.raises(DataError, match=refused):
        without_examples(ref, every_a_in_val, "near-copies (data.leakage: drop)", label_of)
