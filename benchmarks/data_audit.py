"""The data audit's cost on banking77's 10,003 training texts (77 intents), and how it scales.

Measured in one run, with the MiniLM embeddings computed once first (as the flow caches them for
the baseline; their time is printed apart): the label audit (5-fold linear probe + cleanlab), the
outlier ranking (cleanlab's OutOfDistribution score, k = 10 neighbours, from one k-NN pass; compared
with cleanlab's own fit_score on all texts), the near-copy group keys
(normalized text) and the leakage check (threshold calibration + exact nearest-neighbour search
across a seeded 70/15/15 split). The scaling run repeats each part on random subsets of 2,500 and
5,000 texts and on all 10,003, fits seconds = a * n^b per part, and projects to 100k and 1M
examples. Then the leakage check alone runs for real at 25k, 50k and 100k synthetic 384-d vectors
(with planted near-copies it must find), since its cost is the one that grows quadratically, and
the approximate path (faiss IVF, recall checked against exact search; what the flow switches to
above data.exact_search_max) at 1M: leakage pairs and the outlier ranking's k-NN, planted copies
found, against the exact cost projected from the measured sizes.
Never asserts. Run by hand (see benchmarks/README.md):  python benchmarks/data_audit.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from offline import SHARED_DATASETS, offline_preamble

REPO = offline_preamble()
DEFAULT_DATA = SHARED_DATASETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--synthetic", type=int, nargs="*", default=[25_000, 50_000, 100_000],
                        help="sizes of the synthetic leakage-check run (none: skip it)")
    parser.add_argument("--approximate", type=int, nargs="*", default=[1_000_000],
                        help="sizes of the synthetic run through the faiss IVF path (none: skip it)")
    parser.add_argument("--skip-banking", action="store_true", help="only the synthetic runs")
    args = parser.parse_args()
    if args.skip_banking:  # MiniLM's 384 dimensions, without the banking77 part
        exact_law = synthetic_leakage(args.synthetic, 384) if args.synthetic else None
        for size in args.approximate:
            approximate_audit(size, 384, exact_law)
        return

    import numpy as np
    import torch

    from tasks.audit.label_audit import find_label_issues, find_outliers
    from tasks.config.families import model_spec
    from tasks.config.spec import data_spec
    from tasks.data.grouping import group_keys
    from tasks.data.readers import load_examples
    from tasks.models.backbones import load_backbone
    from tasks.models.features import embed_inputs

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    table = load_examples(data_spec({"kind": "csv_text", "path": (args.data / "banking77" / "train.csv").resolve()})
                          ).table.drop_duplicates("example_id").reset_index(drop=True)
    classes = sorted(table["label"].unique())
    backbone = load_backbone(model_spec({"family": "hf_text", "name": "all-MiniLM-L6-v2",
                                         "max_tokens": args.max_tokens}))
    started = time.perf_counter()
    features = embed_inputs(backbone, list(table["input"]), batch_size=64)
    print(f"banking77 train: {len(table)} texts, {len(classes)} classes; MiniLM embeddings ({features.shape[1]}-d, "
          f"{args.max_tokens} tokens) computed once in {time.perf_counter() - started:.1f} s (cached in a flow)\n")
    sizes = [2500, 5000, len(table)]
    timings: dict[str, list[float]] = {"label audit": [], "outliers": [], "group keys": [], "leakage": []}
    print("| examples | label audit s | flagged | outliers s | group keys s | leakage s | pairs |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(0)
    find_label_issues(table.iloc[:500], features[:500], classes)  # warm-up: torch's first call is slow
    for size in sizes:
        rows = np.sort(rng.choice(len(table), size=size, replace=False)) if size < len(table) else np.arange(size)
        sample, vectors = table.iloc[rows].reset_index(drop=True), features[rows]
        present = sorted(sample["label"].unique())
        started = time.perf_counter()
        issues = find_label_issues(sample, vectors, present)
        timings["label audit"].append(time.perf_counter() - started)
        started = time.perf_counter()
        find_outliers(sample, vectors)
        timings["outliers"].append(time.perf_counter() - started)
        started = time.perf_counter()
        group_keys(sample, "text")
        timings["group keys"].append(time.perf_counter() - started)
        started = time.perf_counter()
        pairs = leakage_check(vectors, [str(i) for i in range(size)], rng)
        timings["leakage"].append(time.perf_counter() - started)
        print(f"| {size:,} | {timings['label audit'][-1]:.1f} | {len(issues.table)} | {timings['outliers'][-1]:.2f} | "
              f"{timings['group keys'][-1]:.2f} | {timings['leakage'][-1]:.2f} | {len(pairs)} |", flush=True)
    outliers_against_cleanlab(features)
    print("\nprojection (seconds = a * n^b fitted on the rows above):")
    for part, seconds in timings.items():
        b, log_a = np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-6)), 1)
        projected = {n: float(np.exp(log_a) * n ** b) for n in (100_000, 1_000_000)}
        print(f"- {part}: exponent {b:.2f}; 100k: {projected[100_000]:,.0f} s, 1M: {projected[1_000_000]:,.0f} s")
    exact_law = synthetic_leakage(args.synthetic, features.shape[1]) if args.synthetic else None
    for size in args.approximate:
        approximate_audit(size, features.shape[1], exact_law)


def outliers_against_cleanlab(features) -> None:
    """The outlier score as the audit computes it (one k-NN pass) vs cleanlab's own
    OutOfDistribution.fit_score (its default cosine k-NN, searched twice), on the same vectors."""
    import numpy as np
    from cleanlab.outlier import OutOfDistribution

    from tasks.audit.label_audit import OUTLIER_NEIGHBOURS, outlier_scores

    started = time.perf_counter()
    theirs = OutOfDistribution(params={"k": OUTLIER_NEIGHBOURS}).fit_score(features=features, verbose=False)
    cleanlab_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = outlier_scores(features)
    ours_s = time.perf_counter() - started
    print(f"\noutlier scores on all {len(features):,} texts: cleanlab fit_score {cleanlab_s:.2f} s, transferflow "
          f"{ours_s:.2f} s (cleanlab / transferflow {cleanlab_s / ours_s:.2f}x); largest score difference "
          f"{float(np.abs(theirs - ours).max()):.1e}")


def leakage_check(vectors, ids, rng):
    """As the flow runs it: calibrate on train, then every cross-split pair above the threshold."""
    from tasks.audit.leakage import calibrate, cross_split_pairs

    splits = rng.choice(["train", "val", "test"], size=len(ids), p=[0.7, 0.15, 0.15])
    threshold = calibrate(vectors[splits == "train"]).threshold
    return cross_split_pairs(ids, list(splits), vectors, threshold)


def planted_vectors(size: int, dim: int, rng):  # type: ignore[no-untyped-def]
    """Clustered random vectors (like embeddings: many near neighbours), split 70/15/15, with 100
    train near-copies of test examples planted. Returns vectors, splits, originals, planted rows."""
    import numpy as np

    centres = rng.normal(size=(max(size // 100, 2), dim)).astype(np.float32)
    vectors = np.empty((size, dim), dtype=np.float32)
    for start in range(0, size, 100_000):  # in chunks: the noise of 1M x 384 doubles would take 3 GB
        stop = min(start + 100_000, size)
        vectors[start:stop] = (centres[rng.integers(0, len(centres), stop - start)]
                               + 0.6 * rng.normal(size=(stop - start, dim)).astype(np.float32))
    splits = np.where(np.arange(size) < int(size * 0.7), "train", np.where(np.arange(size) < int(size * 0.85),
                                                                           "val", "test"))
    planted = rng.choice(np.flatnonzero(splits == "train"), 100, replace=False)
    originals = rng.choice(np.flatnonzero(splits == "test"), 100, replace=False)
    vectors[planted] = vectors[originals] + 0.01 * rng.normal(size=(100, dim)).astype(np.float32)
    return vectors, splits, originals, planted


def approximate_audit(size: int, dim: int, exact_law: tuple[float, float] | None) -> None:
    """The IVF path at `size`: calibration (exact, a 5,000-query sample), the checked range search
    across splits, and the outlier ranking's k-NN distances."""
    import numpy as np

    from tasks.audit.approximate import knn_distances
    from tasks.audit.label_audit import OUTLIER_NEIGHBOURS
    from tasks.audit.leakage import calibrate, cross_split_pairs_approximate, normalized

    vectors, splits, originals, planted = planted_vectors(size, dim, np.random.default_rng(2))
    ids = [str(i) for i in range(size)]
    started = time.perf_counter()
    calibration = calibrate(vectors[splits == "train"])
    calibrated = time.perf_counter() - started
    started = time.perf_counter()
    pairs, checks = cross_split_pairs_approximate(ids, list(splits), vectors, calibration.threshold)
    searched = time.perf_counter() - started
    found = set(zip(pairs["held_out_id"], pairs["other_id"], strict=True))
    hits = sum((str(o), str(p)) in found for o, p in zip(originals, planted, strict=True))
    started = time.perf_counter()
    knn_distances(normalized(vectors), OUTLIER_NEIGHBOURS)
    ranked = time.perf_counter() - started
    print(f"\napproximate audit at {size:,} synthetic {dim}-d vectors (faiss IVF):")
    print(f"- leakage: calibrate {calibrated:.1f} s, search {searched:.1f} s (index tuning included), "
          f"planted found {hits}/100, {len(pairs)} pairs")
    for check in checks:
        print(f"  - {check}")
    print(f"- outlier ranking k-NN (k={OUTLIER_NEIGHBOURS}): {ranked:.1f} s")
    if exact_law is not None:
        b, log_a = exact_law
        projected = float(np.exp(log_a) * size ** b)
        print(f"- exact leakage check projected at {size:,}: {projected:,.0f} s; IVF measured "
              f"{calibrated + searched:,.0f} s: exact / IVF {projected / (calibrated + searched):.1f}x")


def synthetic_leakage(sizes: list[int], dim: int) -> tuple[float, float] | None:
    """The leakage check at sizes the shared data does not reach: clustered random vectors (like
    embeddings: many near neighbours) with 100 planted near-copies across splits."""
    import numpy as np

    from tasks.audit.leakage import calibrate, cross_split_pairs

    print(f"\nleakage check on synthetic {dim}-d vectors (clustered, 100 planted cross-split near-copies):")
    print("| examples | calibrate s | search s | planted found | pairs |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(1)
    measured = []
    for size in sizes:
        vectors, splits, originals, planted = planted_vectors(size, dim, rng)
        ids = [str(i) for i in range(size)]
        started = time.perf_counter()
        calibration = calibrate(vectors[splits == "train"])
        calibrated = time.perf_counter() - started
        started = time.perf_counter()
        pairs = cross_split_pairs(ids, list(splits), vectors, calibration.threshold)
        searched = time.perf_counter() - started
        found = set(zip(pairs["held_out_id"], pairs["other_id"], strict=True))
        hits = sum((str(o), str(p)) in found for o, p in zip(originals, planted, strict=True))
        measured.append(calibrated + searched)
        print(f"| {size:,} | {calibrated:.2f} | {searched:.2f} | {hits}/100 | {len(pairs)} |", flush=True)
    if len(sizes) < 2:
        return None
    b, log_a = np.polyfit(np.log(sizes), np.log(measured), 1)
    print(f"- exponent {b:.2f}; projected 1M: {np.exp(log_a) * 1e6 ** b:,.0f} s (exact search)")
    return float(b), float(log_a)


if __name__ == "__main__":
    main()
