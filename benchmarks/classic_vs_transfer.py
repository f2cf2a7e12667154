"""Never lose to a bag of words, measured: the classic anchor, the frozen baseline, the hybrid, the
fine-tuned stages and the chosen model, each on the same split (70/15/15, stratified, seed 42),
through the real flow on one shared dataset.

The flow runs a tournament of the dataset's pretrained model and its hybrid (the classic family
joins by default) with a target high enough that every candidate's stages run in ranking order
(a classic or hybrid candidate below the target hands over to the next). Validation numbers come
from the run's MLflow records; the test split is read once, for the chosen model only.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 \\
      .venv/bin/python benchmarks/classic_vs_transfer.py hymenoptera OUT_DIR [--per-class 60]

Datasets: hymenoptera, sms_spam, banking77 (from ../shared/datasets), word_choice (built from
banking77's questions: tests/word_choice.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"

MODELS = {"image": {"family": "torchvision", "name": "mobilenet_v2", "image_size": 160},
          "text": {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 64}}


def dataset(name: str, out: Path, per_class: int | None) -> tuple[dict[str, object], str]:
    """The config's data block for `name` (a capped slice written under `out` when asked), and its modality."""
    if name == "hymenoptera":
        return {"kind": "image_folder", "path": str(SHARED / "hymenoptera")}, "image"
    if name == "word_choice":
        from tests.word_choice import word_choice_csv

        path = word_choice_csv(SHARED / "banking77" / "train.csv", out / "word_choice.csv", per_class or 50)
        return {"kind": "csv_text", "path": str(path)}, "text"
    source = SHARED / "sms_spam" / "sms_spam.csv" if name == "sms_spam" else SHARED / "banking77" / "train.csv"
    if per_class:
        with source.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        counts: dict[str, int] = {}
        sliced = []
        for row in rows:  # the first `per_class` rows of each label
            if counts.get(row["label"], 0) < per_class:
                counts[row["label"]] = counts.get(row["label"], 0) + 1
                sliced.append(row)
        source = out / f"{name}.csv"
        with source.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": r["label"]} for r in sliced)
    return {"kind": "csv_text", "path": str(source), "text_column": "text", "label_column": "label"}, "text"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["hymenoptera", "sms_spam", "banking77", "word_choice"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=None, help="cap the examples per class (a slice)")
    parser.add_argument("--max-stages", type=int, default=2)
    parser.add_argument("--epochs-per-stage", type=int, default=1)
    args = parser.parse_args()

    import yaml
    from mlflow import MlflowClient

    from flows.transfer_learning import transfer_learning

    args.out.mkdir(parents=True, exist_ok=True)
    data, modality = dataset(args.dataset, args.out, args.per_class)
    pretrained = MODELS[modality]
    config = {
        "task": f"benchmark: {args.dataset}", "metric": {"name": "macro_f1", "target": 0.999},
        "data": data, "model": {"candidates": [pretrained, {"family": "hybrid", "base": pretrained}]},
        "finetune": {"max_stages": args.max_stages, "epochs_per_stage": args.epochs_per_stage},
        "registry": {"model_name": f"bench-{args.dataset.replace('_', '-')}"}, "workdir": str(args.out / "work")}
    path = args.out / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.perf_counter()
    summary = transfer_learning(str(path))
    seconds = time.perf_counter() - started
    client = MlflowClient(f"sqlite:///{args.out / 'work' / 'mlflow.db'}")
    run = client.get_run(summary.run_id)
    artifacts = run.info.artifact_uri
    import mlflow

    table = json.loads(mlflow.artifacts.load_text(f"{artifacts}/tournament/candidates.json"))
    probes = {row["model"]: row for row in table}
    stages = {stage.name: stage.val_value for stage in summary.stages}
    tuned = {name: value for name, value in stages.items() if "finetune" in name}
    hybrid = next(m for m in probes if m.startswith("hybrid("))
    base = next(m for m in probes if m.startswith(pretrained["family"]))
    rows = [("classic anchor (" + run.data.params["classic_anchor"] + ")", run.data.metrics["classic_val_metric"],
             probes[next(m for m in probes if m in ("tfidf", "pixels", "mfcc"))]["seconds"]),
            (f"frozen baseline ({base})", probes[base]["val_value"], probes[base]["seconds"]),
            (f"hybrid ({hybrid})", probes[hybrid]["val_value"], probes[hybrid]["seconds"]),
            *[(f"fine-tuned: {name}", value, None) for name, value in tuned.items()]]
    print(f"\n## {args.dataset}: {sum(summary.split.sizes.values())} examples "
          f"({', '.join(f'{k} {v}' for k, v in summary.split.sizes.items())}), macro-F1\n")
    print("| model | validation | test (once) | seconds |\n| --- | ---: | ---: | ---: |")
    for name, value, spent in rows:
        print(f"| {name} | {value:.4f} | | {'' if spent is None else f'{spent:.0f}'} |")
    print(f"| **chosen: {summary.selected.name}** ({summary.spec.model.describe()}) | {summary.selected.val_value:.4f} "
          f"| {summary.test.value:.4f} | |")
    print(f"\nWhole flow: {seconds:.0f} s. Decisions: "
          + "; ".join(f"{e['stage']}: {e['action']}" for e in summary.decisions))


if __name__ == "__main__":
    main()
