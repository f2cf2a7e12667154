"""Fine-tuning: transferflow's training loop vs a bare PyTorch loop, and the frozen-prefix cache.

A fine-tuning stage trains the last k layer groups of the backbone with the head. This script
measures, in one run, on real data (MobileNetV2 on the ants-vs-bees photos, MiniLM on SMS spam):

  (a) a bare PyTorch loop (AdamW, cross-entropy, an accuracy pass over validation each epoch)
      vs (b) `tasks.training.fit.fit` on the same model, data, batch size and unfrozen groups: what the
      loop's extras cost (lr schedule, parameter groups, metrics, best-epoch copies, progress);
  (c) for k = 1, 2, 3 unfrozen groups, a stage with the frozen-prefix cache off (the whole
      backbone every epoch) vs on (the frozen prefix once, then only the trainable suffix).

Both loops decode inputs the same way (the backbone's preprocess) and use the same modes (trainable
groups in train mode, BatchNorm in eval), device and precision, so the differences are the loops.
It prints seconds per epoch, ratios and validation accuracies; it never asserts.
Written against `fit(model, trainable, train, val, *, lr, weight_decay, epochs, patience, metric,
classes, seed, description, ..., device)` as of issue 7 (the loop was still being reworked).
Run by hand (see benchmarks/README.md):  python benchmarks/finetune_loop.py [--limit 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline import SHARED_DATASETS, offline_preamble

REPO = offline_preamble()
DEFAULT_DATA = SHARED_DATASETS
LR, WEIGHT_DECAY = 3e-4, 1e-4  # a fine-tuning lr (head lr 3e-3 x finetune.lr_ratio 0.1)


@dataclass
class Task:
    """One dataset on one backbone, split into train and validation."""

    title: str
    spec: Any                      # ModelSpec
    classes: list[str]
    ids: dict[str, list[str]]
    inputs: dict[str, list[str]]
    targets: dict[str, Any]        # split -> class indices (torch.Tensor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding hymenoptera/ and sms_spam/")
    parser.add_argument("--dataset", choices=["hymenoptera", "sms_spam", "both"], default="both")
    parser.add_argument("--limit", type=int, default=None, help="at most this many examples per split")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement (a stage's default)")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 3], help="unfrozen layer groups to compare")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    import torch

    from tasks.models.devices import resolve_device, resolve_num_workers

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    device, workers = resolve_device("auto"), resolve_num_workers("auto")
    names = ["hymenoptera", "sms_spam"] if args.dataset == "both" else [args.dataset]
    for name in names:
        task = load_task(name, args)
        print(f"\n{task.title}: {len(task.ids['train'])} train / {len(task.ids['val'])} val, {args.epochs} epochs, "
              f"batch {args.batch_size}, {device}, {workers} decoding workers, {torch.get_num_threads()} threads")
        compare_loops(task, args, device, workers)
        compare_prefix_cache(task, args, device, workers)


def load_task(name: str, args: argparse.Namespace) -> Task:
    from tasks.config.families import model_spec
    from tasks.config.spec import data_spec
    from tasks.data.readers import load_examples
    from tasks.models.classifier import class_indices

    if name == "hymenoptera":
        root = (args.data / "hymenoptera").resolve()
        table = load_examples(data_spec({"kind": "image_folder", "path": root})).table  # skips the .gif
        spec = model_spec(dict(family="torchvision", name="mobilenet_v2", image_size=args.image_size))
        title = f"MobileNetV2 {args.image_size}px on hymenoptera"
    else:
        csv = (args.data / "sms_spam" / "sms_spam.csv").resolve()
        table = load_examples(data_spec({"kind": "csv_text", "path": csv})).table
        table["given_split"] = ["val" if row % 5 == 0 else "train" for row in range(len(table))]  # fixed 80/20
        spec = model_spec(dict(family="hf_text", name="all-MiniLM-L6-v2", max_tokens=args.max_tokens))
        title = f"MiniLM ({args.max_tokens} tokens) on SMS spam"
    classes = sorted(table["label"].unique())
    splits = {split: _at_most(table[table["given_split"] == split], args.limit) for split in ("train", "val")}
    return Task(title, spec, classes, {s: list(f["example_id"]) for s, f in splits.items()},
                {s: list(f["input"]) for s, f in splits.items()},
                {s: class_indices(f["label"], classes) for s, f in splits.items()})


def _at_most(frame: Any, limit: int | None) -> Any:
    """A fixed random slice (both classes, not the first folder's), in the original order."""
    return frame if limit is None or limit >= len(frame) else frame.sample(n=limit, random_state=0).sort_index()


def fresh_classifier(task: Task, device: Any) -> Any:
    """The pretrained backbone with the same new head every time (seeded)."""
    from tasks.models.backbones import ImageBackbone, load_backbone
    from tasks.models.classifier import Classifier, new_head
    from tasks.models.devices import prepare_module

    backbone = load_backbone(task.spec)
    classifier = Classifier(backbone, new_head(backbone.dim, len(task.classes), seed=0))
    prepare_module(classifier, device, convnet=isinstance(backbone, ImageBackbone))
    return classifier


def run_fit(model: Any, classifier: Any, k: int, train: Any, val: Any, task: Task, epochs: int, device: Any,
            label: str) -> tuple[float, float]:
    """Seconds and best validation accuracy of `fit` training the last k groups and the head."""
    from tasks.config.spec import MetricSpec
    from tasks.training.fit import fit

    trainable = [*classifier.backbone.layer_groups()[-k:], classifier.head]
    start = time.perf_counter()
    result = fit(model, trainable, train, val, lr=LR, weight_decay=WEIGHT_DECAY, epochs=epochs, patience=epochs,
                 metric=MetricSpec(name="accuracy", target=0.9), classes=task.classes, seed=0, description=label,
                 device=device)
    return time.perf_counter() - start, result.best_val_metric


def bare_loop(classifier: Any, k: int, task: Task, args: argparse.Namespace, device: Any,
              workers: int) -> tuple[float, float]:
    """The loop anyone would write: a DataLoader, AdamW, cross-entropy, accuracy on validation."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from tasks.models.devices import autocast
    from tasks.training.fit import _train_mode

    backbone = classifier.backbone
    trainable = [*backbone.layer_groups()[-k:], classifier.head]
    parameters = [p for module in trainable for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=LR, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.CrossEntropyLoss()

    def collate(items: list[tuple[str, Any]]) -> tuple[Any, Any]:
        return backbone.preprocess([x for x, _ in items]), torch.stack([y for _, y in items])

    def loader(split: str, shuffle: bool) -> DataLoader[Any]:
        pairs = list(zip(task.inputs[split], task.targets[split], strict=True))
        return DataLoader(pairs, batch_size=args.batch_size, shuffle=shuffle, collate_fn=collate,
                          num_workers=workers, generator=torch.Generator().manual_seed(0))

    def moved(batch: Any) -> Any:
        return {key: value.to(device) for key, value in batch.items()} if isinstance(batch, dict) else batch.to(device)

    def precision() -> Any:  # the same precision as fit: bf16 autocast on CUDA
        return autocast(device)

    train, val, accuracy = loader("train", True), loader("val", False), 0.0
    start = time.perf_counter()
    for _ in range(args.epochs):
        _train_mode(classifier, trainable)  # the same modes as fit: the loops differ, not the modes
        for inputs, targets in train:
            optimizer.zero_grad(set_to_none=True)
            with precision():
                logits = classifier(moved(inputs))
            loss_fn(logits.float(), targets.to(device)).backward()
            optimizer.step()
        classifier.eval()
        correct = 0
        with torch.inference_mode():
            for inputs, targets in val:
                with precision():
                    correct += int((classifier(moved(inputs)).argmax(1).cpu() == targets).sum())
        accuracy = max(accuracy, correct / len(task.targets["val"]))
    return time.perf_counter() - start, accuracy


def compare_loops(task: Task, args: argparse.Namespace, device: Any, workers: int) -> None:
    from tasks.models.loader import Batches

    k = args.groups[0]
    bare_s, bare_acc = bare_loop(fresh_classifier(task, device), k, task, args, device, workers)
    classifier = fresh_classifier(task, device)
    train, val = (Batches(task.inputs[s], task.targets[s], args.batch_size, classifier.backbone.preprocess,
                          num_workers=workers, pin_memory=device.type == "cuda") for s in ("train", "val"))
    fit_s, fit_acc = run_fit(classifier, classifier, k, train, val, task, args.epochs, device, "fit")
    print(f"  last {k} group(s) unfrozen, no prefix cache, per epoch (train + validation):")
    print(f"    bare PyTorch loop   {bare_s / args.epochs:8.2f} s   best val accuracy {bare_acc:.4f}")
    print(f"    transferflow fit    {fit_s / args.epochs:8.2f} s   best val accuracy {fit_acc:.4f}")
    print(f"    ratio fit / bare: {fit_s / bare_s:5.2f}x")


def compare_prefix_cache(task: Task, args: argparse.Namespace, device: Any, workers: int) -> None:
    from tasks.models.loader import Batches
    from tasks.training.prefix_cache import PrefixBatches, SuffixClassifier, compute_prefix_outputs

    print(f"  prefix cache off vs on, a stage of {args.epochs} epochs (on = the prefix pass + the epochs):")
    for k in args.groups:
        classifier = fresh_classifier(task, device)
        raw = [Batches(task.inputs[s], task.targets[s], args.batch_size, classifier.backbone.preprocess,
                       num_workers=workers, pin_memory=device.type == "cuda") for s in ("train", "val")]
        off_s, off_acc = run_fit(classifier, classifier, k, *raw, task, args.epochs, device, f"off k={k}")

        classifier = fresh_classifier(task, device)
        with tempfile.TemporaryDirectory(prefix="transferflow-prefix-") as cache_dir:
            start = time.perf_counter()
            outputs = {s: compute_prefix_outputs(classifier.backbone, task.ids[s], task.inputs[s], k,
                                                 batch_size=args.batch_size, cache_dir=Path(cache_dir))
                       for s in ("train", "val")}
            prefix_s = time.perf_counter() - start
            stored = [PrefixBatches(outputs[s], task.targets[s], args.batch_size, pin_memory=device.type == "cuda")
                      for s in ("train", "val")]
            on_fit_s, on_acc = run_fit(SuffixClassifier(classifier, k), classifier, k, *stored, task, args.epochs,
                                       device, f"on k={k}")
        on_s = prefix_s + on_fit_s
        print(f"    k={k}: off {off_s:7.2f} s ({off_s / args.epochs:6.2f} s/epoch) | on {on_s:7.2f} s = prefix "
              f"{prefix_s:6.2f} s + {on_fit_s / args.epochs:6.2f} s/epoch | off/on {off_s / on_s:5.2f}x, per epoch "
              f"{off_s / on_fit_s:5.2f}x | best val accuracy off {off_acc:.4f}, on {on_acc:.4f}")


if __name__ == "__main__":
    main()
