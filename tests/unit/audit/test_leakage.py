"""The leakage check: its threshold comes from the data, it finds planted near-copies across splits
and nothing else, and its policies drop the less held-out copy, report, or stop the run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.audit.leakage import MIN_SIMILARITY, calibrate, cross_split_pairs, less_held_out_copies
from tests.banking import INTENTS, split_intents_csv


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force_nn_distances(vectors: np.ndarray) -> np.ndarray:
    """Cosine distance of each row to its nearest other row: all pairs, no index."""
    similarity = unit(vectors) @ unit(vectors).T
    np.fill_diagonal(similarity, -np.inf)
    return 1.0 - similarity.max(axis=1)


def test_threshold_is_a_share_of_the_median_nearest_neighbour_distance_within_train():
    rng = np.random.default_rng(1)
    # Tight clusters: the typical neighbour is close, so a copy must be closer still.
    centres = unit(rng.normal(size=(20, 64)))
    train = np.repeat(centres, 30, axis=0) + 0.02 * rng.normal(size=(600, 64))
    calibration = calibrate(train, ratio=0.25)
    expected_typical = float(np.median(brute_force_nn_distances(train)))
    assert calibration.typical_distance == pytest.approx(expected_typical, rel=1e-3)
    assert calibration.threshold == pytest.approx(1 - 0.25 * expected_typical, abs=1e-5)
    assert calibration.threshold > 0.99  # far above the floor: the data set it, not a constant
    assert calibration.sampled == 600


def test_spread_data_falls_back_to_the_floor_and_exact_copies_do_not_drag_the_median():
    rng = np.random.default_rng(2)
    spread = rng.normal(size=(300, 64))          # random directions: neighbours are far apart
    assert calibrate(spread).threshold == MIN_SIMILARITY
    clustered = np.repeat(unit(rng.normal(size=(10, 16))), 20, axis=0) + 0.05 * rng.normal(size=(200, 16))
    with_copies = np.concatenate([clustered, clustered[:150]])  # 150 exact copies: distance 0
    assert calibrate(with_copies).typical_distance == pytest.approx(calibrate(clustered).typical_distance, rel=0.05)


def test_a_set_similarity_replaces_the_calibrated_one_which_is_still_reported():
    rng = np.random.default_rng(1)
    train = np.repeat(unit(rng.normal(size=(20, 64))), 30, axis=0) + 0.02 * rng.normal(size=(600, 64))
    auto = calibrate(train)
    fixed = calibrate(train, fixed=0.8)
    assert fixed.threshold == 0.8 and fixed.calibrated == pytest.approx(auto.threshold)
    assert "data.leakage_similarity" in fixed.describe() and f"{auto.threshold:.4f}" in fixed.describe()
    assert auto.calibrated is None and "leakage_similarity" not in auto.describe()


def test_a_sample_bounds_the_calibration_cost():
    rng = np.random.default_rng(3)
    assert calibrate(rng.normal(size=(500, 8)), sample=100).sampled == 100


def planted_splits(rng: np.random.Generator):
    """200 train, 50 val, 50 test random directions in 32-d, then three planted near-copies:
    a train copy of test 0, a train copy of val 0, a val copy of test 1."""
    vectors = rng.normal(size=(300, 32))
    splits = ["train"] * 200 + ["val"] * 50 + ["test"] * 50
    ids = [f"e{i}" for i in range(300)]
    copies = {5: 250, 6: 200, 201: 251}   # index of the copy -> the more held-out original
    for copy, original in copies.items():
        vectors[copy] = vectors[original] + 0.01 * rng.normal(size=32)
    return ids, splits, vectors, copies


def test_planted_copies_are_found_across_splits_and_match_a_brute_force_search():
    ids, splits, vectors, copies = planted_splits(np.random.default_rng(4))
    pairs = cross_split_pairs(ids, splits, vectors, threshold=0.95)
    found = set(zip(pairs["held_out_id"], pairs["other_id"], strict=True))
    assert found == {(ids[original], ids[copy]) for copy, original in copies.items()}
    # Independent: every cross-split pair above the threshold, from the full similarity matrix.
    similarity = unit(vectors) @ unit(vectors).T
    rank = {"train": 0, "val": 1, "test": 2}
    expected = {(ids[a], ids[b]) for a in range(300) for b in range(300)
                if rank[splits[a]] > rank[splits[b]] and similarity[a, b] >= 0.95}
    assert found == expected
    by_pair = {(h, o): s for h, o, s in zip(pairs["held_out_id"], pairs["other_id"], pairs["similarity"],
                                            strict=True)}
    for copy, original in copies.items():
        assert by_pair[(ids[original], ids[copy])] == pytest.approx(similarity[original, copy], abs=1e-5)
    assert list(pairs["similarity"]) == sorted(pairs["similarity"], reverse=True)


def test_a_cluster_of_fifty_copies_is_found_whole_as_brute_force_finds_it():
    """One spam template, 50 times in train with small edits, once in validation and once in test:
    every one of the 100 pairs is a leak, well past any fixed number of nearest neighbours."""
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(120, 32))
    splits = ["train"] * 100 + ["val"] * 10 + ["test"] * 10
    ids = [f"e{i}" for i in range(120)]
    template = rng.normal(size=32)
    for copy in [*range(50), 100, 110]:         # 50 train copies, val e100, test e110
        vectors[copy] = template + 0.01 * rng.normal(size=32)
    pairs = cross_split_pairs(ids, splits, vectors, threshold=0.95)
    similarity = unit(vectors) @ unit(vectors).T
    rank = {"train": 0, "val": 1, "test": 2}
    expected = {(ids[a], ids[b]) for a in range(120) for b in range(120)
                if rank[splits[a]] > rank[splits[b]] and similarity[a, b] >= 0.95}
    assert len(expected) == 50 + 51  # validation's copy x 50 in train; test's copy x 50 in train + 1 in val
    assert set(zip(pairs["held_out_id"], pairs["other_id"], strict=True)) == expected
    assert len(pairs) == len(expected)  # each pair once
    assert set(less_held_out_copies(pairs)) == {*ids[:50], "e100"}


def test_pairs_within_one_split_are_not_leakage():
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(40, 16))
    vectors[1] = vectors[0]                    # a copy inside train
    vectors[31] = vectors[30]                  # a copy inside test
    splits = ["train"] * 20 + ["val"] * 10 + ["test"] * 10
    assert cross_split_pairs([f"e{i}" for i in range(40)], splits, vectors, threshold=0.95).empty


def test_drop_keeps_the_more_held_out_copy_and_never_a_test_id():
    ids, splits, vectors, copies = planted_splits(np.random.default_rng(4))
    dropped = less_held_out_copies(cross_split_pairs(ids, splits, vectors, threshold=0.95))
    assert dropped == sorted(ids[copy] for copy in copies)            # e5, e6 (train), e201 (val)
    assert not set(dropped) & {i for i, s in zip(ids, splits, strict=True) if s == "test"}


# --- The flow step and its policies, on real texts (MiniLM) ------------------------------------------


@pytest.fixture
def leaky_csv(tmp_path, banking77):
    """Five banking77 intents, 30 texts each, split given: 20 train, 5 val, 5 test per intent;
    then three train rows that are the three longest test texts with their last word cut (a
    truncation the normalized-text key cannot see)."""
    from tasks.config.spec import data_spec
    from tasks.data.readers import load_examples

    table = load_examples(data_spec({"kind": "csv_text", "path": banking77 / "train.csv",
                                     "select_classes": INTENTS})).table
    table = table.drop_duplicates("example_id").groupby("label").head(30).reset_index(drop=True)
    table["split"] = table.groupby("label").cumcount().map(lambda n: "train" if n < 20 else "val" if n < 25 else "test")
    test_rows = table[table["split"] == "test"]
    test_rows = test_rows.loc[test_rows["input"].str.split().str.len().sort_values(ascending=False).index[:3]]
    copies = test_rows.assign(input=test_rows["input"].str.rsplit(" ", n=1).str[0], split="train")
    rows = pd.concat([table, copies], ignore_index=True).rename(columns={"input": "text"})
    path = tmp_path / "leaky.csv"
    rows[["text", "label", "split"]].to_csv(path, index=False)
    return path, list(copies["input"]), list(test_rows["input"])


def run_leakage_check(path, folder, policy, **data_fields):
    from tasks.steps.split import check_leakage

    spec, dataset, split, table = split_intents_csv(path, folder, split_column="split", leakage=policy,
                                                    min_examples_per_class=5, **data_fields)
    source = dict(zip(table["example_id"], table["input"], strict=True))
    return split, check_leakage.fn(spec, dataset, split, None, folder / "report"), source


def test_leakage_policies_drop_report_or_fail_and_the_read_is_logged_as_a_leakage_check(leaky_csv, tmp_path):
    from tasks.core.errors import DataQualityError
    from tasks.data.split import recorded_test_reads

    path, truncated, originals = leaky_csv
    split, (dropped_split, section), text_of = run_leakage_check(path, tmp_path, "drop")
    pairs = pd.read_csv(tmp_path / "report" / "leakage_pairs.csv")
    found = {(text_of[h], text_of[o]) for h, o in zip(pairs["held_out_id"], pairs["other_id"], strict=True)}
    assert set(zip(originals, truncated, strict=True)) <= found          # every planted truncation
    assert set(pairs["held_out_split"]) <= {"val", "test"} and "label" not in " ".join(pairs.columns)
    before, after = (json.loads(s.manifest_path.read_text()) for s in (split, dropped_split))
    (drop,) = after["dropped"]
    gone = set(drop["ids"])
    assert "data.leakage: drop" in drop["why"]
    assert {text_of[i] for i in gone} >= set(truncated) and gone == set(pairs["other_id"])
    assert after["splits"]["test"] == before["splits"]["test"]
    assert not gone & set(after["splits"]["train"] + after["splits"]["val"])
    assert section.outcome == "warn" and "dropped" in section.summary and "Search: exact" in section.body
    reads = recorded_test_reads(split.manifest_path)
    assert [r["purpose"] for r in reads] == ["leakage check"]
    assert recorded_test_reads(split.manifest_path, "evaluation") == []

    reported, section = run_leakage_check(path, tmp_path, "report")[1]
    assert reported == split and section.outcome == "warn"
    auto_pairs = len(pd.read_csv(tmp_path / "report" / "leakage_pairs.csv"))
    run_leakage_check(path, tmp_path, "report", leakage_similarity=0.75)
    loose = pd.read_csv(tmp_path / "report" / "leakage_pairs.csv")
    assert len(loose) > auto_pairs and loose["similarity"].min() >= 0.75   # a set threshold is the one applied
    with pytest.raises(DataQualityError, match=r"near-copy pair\(s\).*data\.leakage: fail.*Fix:"):
        run_leakage_check(path, tmp_path, "fail")


def test_above_exact_search_max_the_step_searches_approximately_and_finds_the_planted_pairs(leaky_csv, tmp_path):
    """The step's switch (data.exact_search_max) on the planted truncations: every one is found,
    and the report says which search ran and how well it was checked (that the index finds what
    exact search finds is tests/unit/audit/test_approximate.py's)."""
    path, truncated, originals = leaky_csv
    _, (_, section), text_of = run_leakage_check(path, tmp_path, "report", exact_search_max=10)
    pairs = pd.read_csv(tmp_path / "report" / "leakage_pairs.csv")
    found = {(text_of[h], text_of[o]) for h, o in zip(pairs["held_out_id"], pairs["other_id"], strict=True)}
    assert set(zip(originals, truncated, strict=True)) <= found
    assert "Search: approximate" in section.body and "recall" in section.body
    assert "planted near-copies found" in section.body
