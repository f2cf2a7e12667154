"""Feature-extraction baseline, cached vs uncached: what the embedding cache buys.

The recipe's baseline trains a linear head on a frozen backbone. Because the backbone is frozen,
its output for an image never changes, so the flow embeds each image once (content-addressed cache)
and trains the head on the stored vectors. This script measures that choice against the naive way,
in one run, on the real ants-vs-bees photos with MobileNetV2, same head, same epochs, same data:

  (a) cached: embed train+val once into a fresh cache, then train the head on the vectors;
  (b) cached again on the now-warm cache (what a second run of the flow pays);
  (c) uncached: run the frozen backbone on the raw images in every epoch (train and validation).

It prints wall seconds, the ratio uncached/cached and each variant's validation accuracy (the
variants compute the same function, so accuracies should be close). It measures; it never asserts.
Run by hand (see benchmarks/README.md):  python benchmarks/cached_vs_uncached_baseline.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from offline import SHARED_DATASETS, offline_preamble

REPO = offline_preamble()
DEFAULT_DATA = SHARED_DATASETS / "hymenoptera"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="hymenoptera root: <split>/<label>/<image>")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    data = args.data.resolve()
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        sys.exit(f"Dataset not found: {data} needs train/<label>/* and val/<label>/*. Pass --data PATH.")

    import torch

    from tasks.config.families import model_spec
    from tasks.config.spec import MetricSpec, data_spec
    from tasks.data.readers import load_examples
    from tasks.models.backbones import load_backbone
    from tasks.models.classifier import Classifier, new_head
    from tasks.models.features import cached_embeddings, open_cache
    from tasks.models.loader import Batches
    from tasks.training.fit import FitResult, fit

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    table = load_examples(data_spec({"kind": "image_folder", "path": data})).table  # skips the .gif
    classes = sorted(table["label"].unique())
    split = {name: table[table["given_split"] == name] for name in ("train", "val")}
    ids = {name: list(frame["example_id"]) for name, frame in split.items()}
    paths = {name: list(frame["input"]) for name, frame in split.items()}
    targets = {name: torch.tensor([classes.index(label) for label in frame["label"]]) for name, frame in split.items()}
    backbone = load_backbone(model_spec(dict(family="torchvision", name="mobilenet_v2", image_size=args.image_size)))
    metric = MetricSpec(name="accuracy", target=0.9)
    settings = dict(lr=3e-3, weight_decay=1e-4, epochs=args.epochs, patience=args.epochs,  # no early stop
                    metric=metric, classes=classes, seed=0)

    def cached(workdir: Path, label: str) -> tuple[float, FitResult]:
        start = time.perf_counter()
        cache = open_cache(workdir, backbone)  # reads the shard index from disk, as a new run would
        features = {
            name: torch.from_numpy(cached_embeddings(cache, backbone, ids[name], paths[name], args.batch_size)[0])
            for name in ("train", "val")}
        head = new_head(backbone.dim, len(classes), seed=0)
        result = fit(head, [head], Batches(features["train"], targets["train"], args.batch_size),
                     Batches(features["val"], targets["val"], 1024), description=label, **settings)
        return time.perf_counter() - start, result

    def uncached() -> tuple[float, FitResult]:
        start = time.perf_counter()
        head = new_head(backbone.dim, len(classes), seed=0)
        result = fit(Classifier(backbone, head), [head],
                     *(Batches(paths[name], targets[name], args.batch_size, backbone.preprocess)
                       for name in ("train", "val")), description="uncached", **settings)
        return time.perf_counter() - start, result

    with tempfile.TemporaryDirectory(prefix="transferflow-bench-") as workdir:
        cold_s, cold = cached(Path(workdir), "cached, cold")
        warm_s, warm = cached(Path(workdir), "cached, warm")
    raw_s, raw = uncached()

    print(f"\nMobileNetV2 {args.image_size}px, {len(ids['train'])} train / {len(ids['val'])} val images, "
          f"{args.epochs} epochs, batch {args.batch_size}, {torch.get_num_threads()} threads")
    rows = [("cached, cold cache (embed once + head)", cold_s, cold),
            ("cached, warm cache (reuse + head)", warm_s, warm),
            ("uncached (backbone every epoch)", raw_s, raw)]
    for name, seconds, result in rows:
        print(f"  {name:<40} {seconds:8.2f} s   best val accuracy {result.best_val_metric:.4f} "
              f"(epoch {result.best_epoch}), last {result.history[-1].val_metric:.4f}")
    print(f"  ratio uncached / cached (cold): {raw_s / cold_s:6.2f}x")
    print(f"  ratio uncached / cached (warm): {raw_s / warm_s:6.2f}x")
    gap = abs(raw.best_val_metric - cold.best_val_metric)
    print(f"  val accuracy gap uncached vs cached: {gap:.4f} "
          + ("(similar, as expected: same frozen features)" if gap <= 0.02 else
             "(NOT similar: more than 0.02 apart, though both train the same head on the same frozen features)"))


if __name__ == "__main__":
    main()
