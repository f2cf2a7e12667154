"""The review loop on banking77 with 5% of the labels flipped (issue 21 part 6), end to end with the
real commands: what share of the planted flips a reviewer meets in the first 100 suspects pushed to a
real Label Studio, and the validation metric before and after a scripted "perfect reviewer" answers
each pushed task with its true label through the server's HTTP API.

1. A seeded subset of banking77's training texts (`--classes`, `--rows`), 5% of its labels flipped
   (seeded, each to another class at random); the true labels are kept.
2. Run 1: the `transfer_learning` flow, in process, against a local `prefect server` of its own (as
   the integration tests start one; the pull's event goes there too), MiniLM, fine-tuning off, an
   unreachable accuracy target (the gate does not matter here). Its data report's label_issues.csv
   holds the suspects.
3. A real Label Studio (tests/labelstudio_server.py), `transferflow label push --what suspects
   --limit 100`: precision@100 (planted flips among the tasks) and recall (share of all planted
   flips, and of those in train/validation, the only splits the audit reads); pre-annotated / blind.
   The same for the CSV's first 100 rows, as a check that the push kept its order.
4. The perfect reviewer posts the true label on every pushed task, then `transferflow label pull`;
   the labels store's corrections must be exactly the flips pushed.
5. Run 2 (trigger "labels"). Each run's validation metric as it reports it (against its own labels),
   and each registered version's validation accuracy against the given, the reviewed and the TRUE
   labels (and macro-F1 against the true ones): the reported gain mixes a better model with a
   validation set whose wrong labels were fixed. Wall seconds of each phase. Never asserts.

Needs Label Studio's venv (`make label-studio`). Run by hand (see benchmarks/README.md):
  python benchmarks/review_loop.py [--classes 30] [--rows 0] [--limit 100] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from offline import SHARED_DATASETS, offline_preamble

REPO = offline_preamble()
FLIPPED_SHARE, MODEL = 0.05, "banking77-review"
CONFIG = """task: Route a banking question to one of its intents.
metric: {{name: accuracy, target: 0.999}}
data: {{kind: csv_text, path: {data}}}
model: {{family: hf_text, name: all-MiniLM-L6-v2, max_tokens: 64}}
finetune: {{max_stages: 0}}
registry: {{model_name: {model}}}
workdir: {workdir}
"""
phases: dict[str, float] = {}


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Times a `with` block into `phases`."""
    started = time.perf_counter()
    yield
    phases[name] = time.perf_counter() - started


def planted_data(folder: Path, classes: int, rows: int) -> tuple[Path, dict[str, dict[str, str]], dict[str, str],
                                                                  set[str]]:
    """The subset with 5% flipped, as a CSV; its "true" and "given" (flipped) labels and its texts by
    example id; the flipped ids."""
    from tasks.core.hashing import sha256_text

    table = pd.read_csv(SHARED_DATASETS / "banking77" / "train.csv", keep_default_na=False)
    rng = np.random.default_rng(7)
    names = sorted(table["label"].unique())
    if classes < len(names):
        table = table[table["label"].isin(set(rng.choice(names, size=classes, replace=False)))]
    if 0 < rows < len(table):
        table = table.sample(rows, random_state=7)
    table = table.reset_index(drop=True)
    kept = sorted(table["label"].unique())
    flips = rng.choice(len(table), size=round(FLIPPED_SHARE * len(table)), replace=False)
    noisy = table.copy()
    for row in flips:
        others = [c for c in kept if c != table.at[row, "label"]]
        noisy.at[row, "label"] = others[rng.integers(len(others))]
    ids = [sha256_text(text) for text in table["text"]]
    path = folder / "banking77-noisy.csv"
    noisy.to_csv(path, index=False)
    print(f"Data: {len(table)} texts, {len(kept)} classes, {len(flips)} labels flipped ({FLIPPED_SHARE:.0%})")
    labels = {"true": dict(zip(ids, table["label"], strict=True)), "given": dict(zip(ids, noisy["label"], strict=True))}
    return path, labels, dict(zip(ids, table["text"], strict=True)), {ids[row] for row in flips}


def hits(ids: list[str], planted: set[str], sighted: set[str]) -> str:
    found = len(set(ids) & planted)
    return (f"{found} of {len(ids)} are planted flips: precision {found / max(1, len(ids)):.3f}, recall "
            f"{found / len(planted):.3f} of all {len(planted)} flips, {found / len(planted & sighted):.3f} of the "
            f"{len(planted & sighted)} in train/validation")


def version_scores(spec, summary, texts: dict[str, str], labels: dict[str, dict[str, str]]) -> dict[str, float]:
    """The registered version's validation accuracy (and macro-F1 against the true labels) against
    each set of labels: given (flipped), reviewed (given + the store's corrections), true."""
    from sklearn.metrics import accuracy_score, f1_score

    from tasks.data.split import train_val_ids
    from tasks.registry.predict import ModelInput, predict_in_batches, registered_model

    _, val = train_val_ids(summary.split.manifest_path)
    inputs = [ModelInput(Path("val.csv"), texts[i][:60], texts[i]) for i in val]
    with registered_model(f"models:/{MODEL}/{summary.outcome.registration.version}", spec.workdir) as model:
        predicted = list(predict_in_batches(model, inputs)["label"].astype(str))
    scores = {name: accuracy_score([known[i] for i in val], predicted) for name, known in labels.items()}
    classes = sorted(set(labels["true"].values()))
    return {**scores, "n": len(val), "true macro_f1": f1_score([labels["true"][i] for i in val], predicted,
                                                               average="macro", labels=classes, zero_division=0)}


def review(server, config: Path, spec, limit: int, truth: dict[str, str], planted: set[str], sighted: set[str],
           splits: dict[str, str], ranking: list[str]) -> dict[str, str]:
    """Push the first `limit` suspects, answer each with its true label over HTTP, pull; the store's
    corrected labels by example id."""
    import httpx
    from label_studio_sdk.client import LabelStudio
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.data.labels_store import read_records

    os.environ.update(LABEL_STUDIO_URL=server.url, LABEL_STUDIO_API_KEY=server.api_key)
    runner = CliRunner()
    with phase("label push"):
        pushed = runner.invoke(app, ["label", "push", str(config), "--what", "suspects", "--limit", str(limit)])
    print(f"label push (exit {pushed.exit_code}): {' '.join(pushed.output.split())}")
    ls = LabelStudio(base_url=server.url, api_key=server.api_key)
    (project,) = [p for p in ls.projects.list() if p.title == f"{MODEL} suspects"]
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda task: task.id)
    ids = [str(task.data["example_id"]) for task in tasks]
    print(f"Pushed ({len(tasks)} tasks, {sum(bool(t.predictions) for t in tasks)} pre-annotated, "
          f"{sum(splits.get(i) not in ('train', 'val') for i in ids)} blind): {hits(ids, planted, sighted)}")
    print(f"Same examples, same order as label_issues.csv's first {len(ids)}: {ids == ranking[:len(ids)]}")
    with phase("perfect reviewer (HTTP)"):
        for task in tasks:
            body = {"result": [{"from_name": "label", "to_name": "input", "type": "choices",
                                "value": {"choices": [truth[task.data["example_id"]]]}}]}
            answer = httpx.post(f"{server.url}/api/tasks/{task.id}/annotations/", json=body,
                                headers=server.headers(), timeout=30)
            if answer.status_code != 201:
                print(f"task {task.id}: annotation answered {answer.status_code}: {answer.text[:200]}")
    with phase("label pull"):
        pulled = runner.invoke(app, ["label", "pull", str(config)])
    print(f"label pull (exit {pulled.exit_code}): {' '.join(pulled.output.split())}")
    records = read_records(spec.data.labels_folder)
    corrected = {r.example_id for r in records if r.kind == "correction"}
    print(f"Labels store: {len(records)} record(s), {len(corrected)} correction(s); corrections == flips pushed "
          f"({len(set(ids) & planted)}): {corrected == set(ids) & planted}; every record's label is the true one: "
          f"{all(r.new_label == truth[r.example_id] for r in records)}")
    return {r.example_id: str(r.new_label) for r in records if r.kind == "correction"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=30, help="seeded choice of this many intents (77: all)")
    parser.add_argument("--rows", type=int, default=0, help="seeded sample of this many texts (0: all)")
    parser.add_argument("--limit", type=int, default=100, help="suspects pushed")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (workdir, server data)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="review-loop-"))
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        os.environ.pop(name, None)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.local_server import local_prefect_server

    started = time.perf_counter()  # a Prefect server of its own, as the integration tests start one
    with local_prefect_server(scratch / "prefect-home") as prefect, \
            temporary_settings({PREFECT_API_URL: prefect.api_url}):
        phases["Prefect server start"] = time.perf_counter() - started
        os.environ["PREFECT_API_URL"] = prefect.api_url
        measure(args, scratch)
    if args.keep:
        print(f"Scratch folder kept: {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(args: argparse.Namespace, scratch: Path) -> None:
    from flows.transfer_learning import transfer_learning
    from tasks.config.loading import load_spec
    from tasks.data.split import train_val_ids
    from tasks.labeling.loop import recorded_splits
    from tests.labelstudio_server import label_studio_server

    with phase("data"):
        data, labels, texts, planted = planted_data(scratch, args.classes, args.rows)
        config = scratch / "config.yaml"
        config.write_text(CONFIG.format(data=data, workdir=scratch / "work", model=MODEL))
        spec = load_spec(config)
    with phase("run 1"):
        first = transfer_learning(str(config))
    splits = recorded_splits(spec)
    sighted = {i for i, split in splits.items() if split in ("train", "val")}
    (issues_csv,) = sorted((spec.workdir / "reports" / MODEL).glob("*/label_issues.csv"))
    issues = pd.read_csv(issues_csv)
    print(f"Run 1: version {first.outcome.registration.version}, gate {first.outcome.decision.verdict}; "
          f"{len(issues)} suspects in label_issues.csv; flips per split: "
          + ", ".join(f"{s} {sum(splits[i] == s for i in planted)}" for s in ("train", "val", "test")))
    print(f"label_issues.csv, first {args.limit} (no server): "
          f"{hits(list(issues['example_id'][:args.limit]), planted, sighted)}")
    started = time.perf_counter()
    with label_studio_server(scratch / "label-studio") as server:
        phases["Label Studio start"] = time.perf_counter() - started
        corrected = review(server, config, spec, args.limit, labels["true"], planted, sighted, splits,
                           list(issues["example_id"]))
    labels = {"given": labels["given"], "reviewed": {**labels["given"], **corrected}, "true": labels["true"]}
    with phase("run 2 (labels)"):
        second = transfer_learning(str(config), trigger="labels")
    print(f"Run 2: version {second.outcome.registration.version}, gate {second.outcome.decision.verdict}, "
          f"{second.prepared.dataset.labels_corrected} label(s) corrected by the store")
    with phase("scoring on the labels"):
        rows = [(name, run.selected.val_scores, version_scores(spec, run, texts, labels))
                for name, run in (("run 1 (before)", first), ("run 2 (after)", second))]
    val = train_val_ids(first.split.manifest_path)[1]
    wrong = {name: sum(labels[name][i] != labels["true"][i] for i in val) for name in ("given", "reviewed")}
    print(f"\nValidation: {len(val)} examples, the same in both runs: "
          f"{val == train_val_ids(second.split.manifest_path)[1]}; wrong labels in it: given {wrong['given']}, "
          f"after the review {wrong['reviewed']}")
    print("| run | reported val accuracy / macro-F1 (its own labels) | val accuracy vs given labels | vs reviewed "
          "labels | vs true labels | val macro-F1 vs true labels |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, reported, scores in rows:
        print(f"| {name} | {reported['accuracy']:.4f} / {reported['macro_f1']:.4f} | {scores['given']:.4f} | "
              f"{scores['reviewed']:.4f} | {scores['true']:.4f} | {scores['true macro_f1']:.4f} |")
    print("\nWall seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())
          + f"; total {sum(phases.values()):.1f}")


if __name__ == "__main__":
    main()
