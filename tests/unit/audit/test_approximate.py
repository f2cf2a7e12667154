"""The approximate neighbour search used above data.exact_search_max finds what exact search finds:
every planted near-copy pair across splits (clusters of 50 included), checked against brute force,
and each example's nearest-neighbour distances for the outlier ranking."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from tasks.audit.approximate import knn_distances, tuned_index
from tasks.audit.leakage import cross_split_pairs, cross_split_pairs_approximate, normalized


@pytest.fixture(scope="module")
def planted():
    """4,000 clustered 64-d vectors (so neighbours are meaningful), split 70/15/15, with near-copies
    planted across splits: 40 single copies and one cluster of 50 copies of one test example."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 64))
    vectors = centres[rng.integers(0, 40, 4000)] + rng.normal(scale=0.6, size=(4000, 64))
    splits = np.array(["train"] * 2800 + ["val"] * 600 + ["test"] * 600, dtype=object)
    for i in range(40):  # a held-out example's near-copy in train
        vectors[100 + i] = vectors[2800 + 10 * i] + rng.normal(scale=0.01, size=64)
    for j in range(50):  # fifty train copies of one test example
        vectors[500 + j] = vectors[3500] + rng.normal(scale=0.01, size=64)
    ids = [f"e{i}" for i in range(4000)]
    return ids, list(splits), vectors.astype(np.float32)


def pair_set(pairs) -> set[tuple[str, str]]:
    return set(zip(pairs["held_out_id"], pairs["other_id"], strict=True))


def test_the_approximate_search_finds_every_pair_exact_search_finds(planted):
    ids, splits, vectors = planted
    exact = cross_split_pairs(ids, splits, vectors, 0.99)
    approximate, checks = cross_split_pairs_approximate(ids, splits, vectors, 0.99)
    assert len(exact) >= 90 and pair_set(approximate) == pair_set(exact)
    assert {("e3500", f"e{500 + j}") for j in range(50)} <= pair_set(approximate)  # the whole cluster
    assert np.allclose(np.sort(approximate["similarity"]), np.sort(exact["similarity"]), atol=1e-5)
    assert len(checks) == 2 and all("planted near-copies found" in c for c in checks)


def test_the_index_raises_nprobe_until_its_recall_is_met(planted):
    """From nprobe 1, whose recall is measured here to fall short, the index doubles it until the
    recall against exact search is met."""
    import faiss

    from tasks.audit.approximate import range_pairs

    _, splits, vectors = planted
    unit = normalized(vectors)
    train = unit[np.array(splits) == "train"]
    held_out = unit[np.array(splits) != "train"]
    index, check = tuned_index(train, held_out, 0.80, start_nprobe=1)  # a loose threshold: many pairs
    exact = faiss.IndexFlatIP(unit.shape[1])
    exact.add(train)
    truth = set(zip(*range_pairs(exact, held_out, 0.80)[:2], strict=True))
    index.nprobe = 1
    at_one = set(zip(*range_pairs(index, held_out, 0.80)[:2], strict=True))
    assert len(truth) > 1000 and len(at_one & truth) / len(truth) < 0.99  # nprobe 1 is not enough here
    assert check.nprobe > 1 and check.recall >= 0.99 and check.planted_found == check.planted


def test_knn_distances_match_exact_search(planted):
    _, _, vectors = planted
    unit = normalized(vectors)
    exact, _ = NearestNeighbors(n_neighbors=10, algorithm="brute").fit(unit).kneighbors()
    approximate = knn_distances(unit, 10)
    exact_cosine = exact.astype(np.float64) ** 2 / 2
    close = np.isclose(approximate, exact_cosine, atol=1e-4).all(axis=1)
    assert close.mean() >= 0.99  # the recall the index was tuned to
