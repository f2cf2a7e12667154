"""Leakage across splits that the model-free group keys miss: a truncated text, a photo cropped or
re-shot. After the split, every held-out example is compared with the less held-out splits
(validation with train, test with train and validation) by cosine similarity of the frozen base
model's embeddings, and a pair closer than the data's own notion of "a copy" is a leak.

Threshold, calibrated on the data: 1 - `ratio` x the median cosine distance from a training
example to its nearest other training example, never below `MIN_SIMILARITY`. A near-copy sits far
closer to its twin than ordinary neighbours sit to each other, whatever the embedding's scale
(MiniLM texts crowd near 1.0, photos spread out), so one fixed similarity would be wrong for one
model or the other. Exact copies inside train are left out of the median (the group keys handle
them), and the floor keeps a spread-out data set from calling merely similar examples copies.
Measured: hymenoptera under EfficientNet-Lite0, typical distance 0.34, threshold 0.914, no
cross-split pair above 0.87 (none are copies); SMS spam under MiniLM, typical 0.46, the floor
0.90 applies, and the pairs just above it are one spam template with other numbers or a
truncated message; five banking77 intents, typical 0.16, threshold 0.96: long test texts with
their last word cut are found in train, a short one ("When will I recieve my new") is not.

Index: exact radius search with scikit-learn's `NearestNeighbors(algorithm="brute")` on
L2-normalized vectors (euclidean distance there is a monotone function of cosine): every pair above
the threshold, however many copies one example has (a spam template can have dozens; a k-nearest
search with a fixed k under-reported them). Exact, because a missed leak is the failure that
matters here; brute force, because at these dimensions (384 to 1,280) tree indexes are no faster
than one BLAS matrix product, which sklearn chunks to bound memory and runs on every core. The
cost is quadratic, so above `data.exact_search_max` examples (200k) the search switches to
`cross_split_pairs_approximate`: a faiss IVF range search at the same threshold, whose recall is
measured against exact search before it is trusted (tasks/audit/approximate.py). See
benchmarks/data_audit.py for both at 1M.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DISTANCE_RATIO = 0.25        # a copy is at most this share of the typical nearest-neighbour distance
MIN_SIMILARITY = 0.90        # never call a pair below this cosine similarity a copy
CALIBRATION_SAMPLE = 5000    # training examples whose nearest neighbour sets the typical distance
MIN_TRAIN_FOR_LEAKAGE = 3     # the threshold is calibrated on nearest neighbours within train
HELD_OUT_ORDER = ("train", "val", "test")  # least held-out first

PAIR_COLUMNS = ["held_out_split", "held_out_id", "other_split", "other_id", "similarity"]


@dataclass(frozen=True)
class Calibration:
    """The similarity at or above which a cross-split pair counts as a near-copy, and its grounds."""

    threshold: float
    typical_distance: float   # median cosine distance of a training example to its nearest other one
    ratio: float
    sampled: int
    calibrated: float | None = None   # the threshold the data gave, when `data.leakage_similarity` fixed another

    def describe(self) -> str:
        grounds = (f"1 - {self.ratio:g} x the median nearest-neighbour distance within train, "
                   f"{self.typical_distance:.4f}, over {self.sampled} training examples; floor {MIN_SIMILARITY:g}")
        if self.calibrated is not None:
            return (f"cosine similarity >= {self.threshold:.4f} (set by data.leakage_similarity; calibrated on "
                    f"this data it would be {self.calibrated:.4f}: {grounds})")
        return f"cosine similarity >= {self.threshold:.4f} ({grounds})"


def normalized(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def calibrate(train: np.ndarray, ratio: float = DISTANCE_RATIO, sample: int = CALIBRATION_SAMPLE,
              seed: int = 0, fixed: float | None = None) -> Calibration:
    """The threshold from the nearest-neighbour distances within train (a seeded sample of at most
    `sample` examples queried against all of train). Exact copies (distance 0) are left out: the
    group keys already keep them in one split, and they would drag the median down. `fixed` (the
    config's `data.leakage_similarity`) replaces the result, which is still reported beside it."""
    from sklearn.neighbors import NearestNeighbors

    vectors = normalized(train)
    if len(vectors) < 3:
        raise ValueError("calibrating the leakage threshold needs at least 3 training examples")
    rng = np.random.default_rng(seed)
    queries = rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    index = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(vectors)
    distances, neighbours = index.kneighbors(vectors[queries])
    # The nearest hit is the query itself unless an exact copy ties with it: take the first other row.
    other = np.where(neighbours[:, 0] == queries, distances[:, 1], distances[:, 0])
    cosine_distance = other.astype(np.float64) ** 2 / 2          # |a-b|^2 = 2 - 2cos for unit vectors
    distinct = cosine_distance[cosine_distance > 1e-6]
    typical = float(np.median(distinct)) if len(distinct) else 0.0
    threshold = min(max(1.0 - ratio * typical, MIN_SIMILARITY), 1.0 - 1e-6)
    if fixed is not None:
        return Calibration(fixed, typical, ratio, len(queries), calibrated=threshold)
    return Calibration(threshold, typical, ratio, len(queries))


def cross_split_pairs(ids: list[str], splits: list[str], vectors: np.ndarray, threshold: float) -> pd.DataFrame:
    """Every pair (a held-out example, an example of a less held-out split) with cosine similarity
    >= `threshold`, most similar first. Columns: PAIR_COLUMNS."""
    from sklearn.neighbors import NearestNeighbors

    vectors = normalized(vectors)
    ids_array, split_array = np.asarray(ids, dtype=object), np.asarray(splits, dtype=object)
    radius = float(np.sqrt(max(2.0 - 2.0 * threshold, 0.0)))
    found = []
    for rank, held_out in enumerate(HELD_OUT_ORDER[1:], start=1):
        queries = np.flatnonzero(split_array == held_out)
        if not len(queries):
            continue
        for other in HELD_OUT_ORDER[:rank]:
            pool = np.flatnonzero(split_array == other)
            if not len(pool):
                continue
            index = NearestNeighbors(algorithm="brute").fit(vectors[pool])
            distances, nearest = index.radius_neighbors(vectors[queries], radius=radius + 1e-6)
            counts = np.array([len(row) for row in nearest], dtype=np.int64)
            if not counts.sum():
                continue
            found.append(pd.DataFrame({
                "held_out_split": held_out, "held_out_id": ids_array[np.repeat(queries, counts)],
                "other_split": other, "other_id": ids_array[pool[np.concatenate(nearest).astype(np.int64)]],
                "similarity": 1.0 - np.concatenate(distances).astype(np.float64) ** 2 / 2,
            }))
    pairs = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=PAIR_COLUMNS)
    return pairs.sort_values(["similarity", "held_out_id", "other_id"], ascending=[False, True, True],
                             kind="stable").reset_index(drop=True)[PAIR_COLUMNS]


def cross_split_pairs_approximate(ids: list[str], splits: list[str], vectors: np.ndarray, threshold: float,
                                  seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """`cross_split_pairs` through a self-checked faiss IVF index per less held-out split (train,
    then validation), queried by every more held-out example at once (`tasks.audit.approximate`).
    Returns the pairs and, per index, how it was tuned and what recall it measured."""
    from tasks.audit.approximate import range_pairs, tuned_index

    vectors = normalized(vectors)
    ids_array, split_array = np.asarray(ids, dtype=object), np.asarray(splits, dtype=object)
    found, checks = [], []
    for rank, other in enumerate(HELD_OUT_ORDER[:-1]):
        pool = np.flatnonzero(split_array == other)
        queries = np.flatnonzero(np.isin(split_array, HELD_OUT_ORDER[rank + 1:]))
        if not len(pool) or not len(queries):
            continue
        index, check = tuned_index(vectors[pool], vectors[queries], threshold, seed)
        checks.append(f"{other} ({len(pool)} examples) searched by {len(queries)}: {check.describe()}")
        query_rows, pool_rows, similarities = range_pairs(index, vectors[queries], threshold)
        found.append(pd.DataFrame({
            "held_out_split": split_array[queries[query_rows]], "held_out_id": ids_array[queries[query_rows]],
            "other_split": other, "other_id": ids_array[pool[pool_rows]], "similarity": similarities}))
    pairs = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=PAIR_COLUMNS)
    return pairs.sort_values(["similarity", "held_out_id", "other_id"], ascending=[False, True, True],
                             kind="stable").reset_index(drop=True)[PAIR_COLUMNS], checks


def less_held_out_copies(pairs: pd.DataFrame) -> list[str]:
    """`data.leakage: drop` keeps the more held-out copy of each pair: the ids of the other side
    (train copies of validation and test examples, validation copies of test examples). The test
    split is never changed."""
    return sorted(set(pairs["other_id"]))
