"""What the orchestration costs: the whole Prefect flow vs the same compute in a plain script.

The flow wraps the recipe's compute (embed the images with the frozen backbone, train the head,
predict the test split once) in a Prefect flow with a Great Expectations label-quality suite,
MLflow tracking (params, per-epoch metrics, checkpoints, plots, model card) and an MLflow model
registration. This script runs, in one process, on the real ants-vs-bees photos with MobileNetV2:

  1. bare compute: load + split the data, embed train/val/test, `fit` the head, one test
     prediction pass; no Prefect, MLflow or GX (its own workdir, cold embedding cache);
  2. a trivial flow twice: the first call starts Prefect's ephemeral server, the second does not,
     so their difference isolates the server start;
  3. the real `transfer_learning` flow on the same config (another workdir, cold cache; fine-tuning
     off, so it does exactly the bare compute plus the orchestration).

It prints wall seconds and the ratio flow/bare with and without the server start. It measures; it
never asserts. Run by hand (see benchmarks/README.md):  python benchmarks/flow_overhead.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO / ".." / "shared" / "datasets" / "hymenoptera"


def write_config(folder: Path, data: Path, image_size: int, workdir: Path) -> Path:
    config = {
        "task": "Tell whether a photo shows ants or bees (benchmark).",
        "metric": {"name": "accuracy", "target": 0.5},  # reached by the baseline: no fine-tuning
        "data": {"kind": "image_folder", "path": str(data)},
        "model": {"family": "torchvision", "name": "mobilenet_v2", "image_size": image_size},
        "train": {"finetune_epochs": 0},  # and off anyway, so both sides do the same compute
        "registry": {"model_name": "bench-ants-vs-bees"},
        "workdir": str(workdir),
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def bare_compute(config: Path, workdir: Path) -> float:
    """The flow's compute with the same spec, minus orchestration; returns the test accuracy."""
    import torch

    from tasks.backbones import load_backbone
    from tasks.data import fingerprint, load_examples
    from tasks.features import cached_embeddings, open_cache
    from tasks.metrics import classification_metrics, contract_value
    from tasks.spec import load_spec
    from tasks.split import quarantined_test_ids, split_examples, train_val_ids
    from tasks.train import Batches, fit, new_head, predict_proba

    spec = load_spec(config)
    loaded = load_examples(spec.data)
    table = loaded.table
    classes = list(loaded.declared_classes)
    split = split_examples(table, spec.split, fingerprint(table["example_id"], table["label"]), workdir)
    train_ids, val_ids = train_val_ids(split.manifest_path)
    ids = {"train": train_ids, "val": val_ids, "test": quarantined_test_ids(split.manifest_path, "benchmark")}
    table = table.drop_duplicates("example_id").set_index("example_id")
    backbone = load_backbone(spec.model)
    cache = open_cache(workdir, backbone)
    batch = spec.train.batch_size
    x = {name: torch.from_numpy(cached_embeddings(cache, backbone, i, list(table.loc[i, "input"]), batch)[0])
         for name, i in ids.items()}
    y = {name: torch.tensor([classes.index(label) for label in table.loc[i, "label"]]) for name, i in ids.items()}
    head = new_head(backbone.dim, len(classes), spec.train.seed)
    fit(head, [head], Batches(x["train"], y["train"], batch), Batches(x["val"], y["val"], 1024),
        lr=spec.train.head_learning_rate, weight_decay=spec.train.weight_decay, epochs=spec.train.head_epochs,
        patience=max(spec.train.patience, 10), metric=spec.metric, classes=classes, seed=spec.train.seed,
        description="bare head")
    predicted = predict_proba(head, Batches(x["test"], y["test"], batch)).argmax(axis=1)
    return contract_value(classification_metrics(y["test"].numpy(), predicted, classes), spec.metric)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="hymenoptera root: <split>/<label>/<image>")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (workdirs, MLflow store)")
    args = parser.parse_args()
    data = args.data.resolve()
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        sys.exit(f"Dataset not found: {data} needs train/<label>/* and val/<label>/*. Pass --data PATH.")

    temp = Path(tempfile.mkdtemp(prefix="transferflow-bench-"))
    if not args.keep:
        import atexit

        # Registered before Prefect's own atexit hook, so it runs after the server has stopped.
        atexit.register(shutil.rmtree, temp, ignore_errors=True)
    os.environ["PREFECT_HOME"] = str(temp / "prefect")
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):  # always the local ephemeral engine + temp store
        os.environ.pop(name, None)
    from flows.runtime import apply_defaults

    apply_defaults()

    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    bare_config = write_config(temp, data, args.image_size, temp / "bare-work")
    start = time.perf_counter()
    bare_test = bare_compute(bare_config, temp / "bare-work")
    bare_s = time.perf_counter() - start

    flow_config = write_config(temp, data, args.image_size, temp / "flow-work")
    start = time.perf_counter()
    from prefect import flow

    from flows.transfer_learning import transfer_learning
    import_s = time.perf_counter() - start

    @flow(name="noop")
    def noop() -> int:
        return 1

    start = time.perf_counter()
    noop()
    first_noop_s = time.perf_counter() - start
    start = time.perf_counter()
    noop()
    noop_s = time.perf_counter() - start
    server_s = first_noop_s - noop_s

    start = time.perf_counter()
    summary = transfer_learning(str(flow_config))
    flow_s = time.perf_counter() - start

    print(f"\nMobileNetV2 {args.image_size}px, hymenoptera split {summary.split.sizes}, "
          f"{torch.get_num_threads()} threads; both sides: cold embedding cache, head only")
    print(f"  bare compute (data + embed + fit + test pass)    {bare_s:8.2f} s   test accuracy {bare_test:.4f}")
    print(f"  import prefect + flow modules                    {import_s:8.2f} s")
    print(f"  trivial flow, 1st call (server start + engine)   {first_noop_s:8.2f} s")
    print(f"  trivial flow, 2nd call (engine only)             {noop_s:8.2f} s")
    print(f"  => Prefect ephemeral server start (difference)   {server_s:8.2f} s")
    print(f"  transfer_learning flow (server already up)       {flow_s:8.2f} s   test accuracy {summary.test.value:.4f}, "
          f"gate {summary.outcome.decision.verdict}, stages {[s.name for s in summary.stages]}")
    print(f"  ratio flow / bare, without server start: {flow_s / bare_s:6.2f}x  (+{flow_s - bare_s:.2f} s)")
    print(f"  ratio flow / bare, with server start:    {(flow_s + server_s) / bare_s:6.2f}x  "
          f"(+{flow_s + server_s - bare_s:.2f} s)")
    print("  the flow adds: Prefect engine (task runs, state tracking, artifacts) and its server start,\n"
          "  the GX label-quality suite, MLflow logging (params, per-epoch metrics, checkpoints, plots,\n"
          "  model card) and the MLflow model registration; it also reloads the backbone in each step using it.")
    if args.keep:
        print(f"  work files kept in {temp}")


if __name__ == "__main__":
    main()
