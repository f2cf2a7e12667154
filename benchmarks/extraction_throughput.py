"""Embedding extraction: transferflow's path (`tasks.models.features.embed_inputs`: DataLoader decoding,
inference mode, the backbone's own preprocessing) vs a bare `torch.inference_mode` forward loop
with the same model, batch size and preprocessing, for each offline model (for sound files: decode,
resample, log-mel spectrogram and forward).

Goal (issues 8 and 20): transferflow reaches at least 90% of the bare loop's throughput. Both sides are
timed alternately, `--rounds` times each, after one warm-up pass; the best round of each counts
(the least disturbed by the rest of the machine). Prints inputs/s and the ratio; never asserts.
Run by hand (see benchmarks/README.md):  python benchmarks/extraction_throughput.py [--limit 256]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from offline import SHARED_DATASETS, offline_preamble

REPO = offline_preamble()
DEFAULT_DATA = SHARED_DATASETS
MODELS = [
    ({"family": "torchvision", "name": "mobilenet_v2", "image_size": 224}, "hymenoptera"),
    ({"family": "timm", "name": "tf_efficientnet_lite0", "image_size": 224}, "hymenoptera"),
    ({"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 128}, "sms_spam"),
    ({"family": "spectrogram", "name": "mobilenet_v2", "max_seconds": 1.0, "n_mels": 128, "image_size": 224},
     "spoken_words"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding hymenoptera/ and sms_spam/")
    parser.add_argument("--limit", type=int, default=256, help="inputs embedded per timed pass")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["image", "text", "audio"], help="only the models of this modality")
    args = parser.parse_args()

    import torch

    from tasks.config.families import model_spec
    from tasks.models.backbones import ImageBackbone, load_backbone
    from tasks.models.devices import prepare_module, resolve_device, resolve_num_workers

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    device, workers = resolve_device("auto"), resolve_num_workers("auto")
    print(f"{args.limit} inputs per pass, batch {args.batch_size}, {args.rounds} rounds (best counts), {device}, "
          f"{workers} decoding workers, {torch.get_num_threads()} threads\n")
    print("| model | bare loop inputs/s | transferflow inputs/s | transferflow / bare |")
    print("| --- | ---: | ---: | ---: |")
    for raw, dataset in MODELS:
        if args.only and args.only != model_spec(raw).MODALITY:
            continue
        backbone = load_backbone(model_spec(raw))
        prepare_module(backbone.module, device, convnet=isinstance(backbone, ImageBackbone))
        inputs = load_inputs(args.data, dataset, args.limit)
        bare, ours = [], []
        bare_loop(backbone, inputs[:args.batch_size], args.batch_size, device)  # warm-up both paths
        transferflow_path(backbone, inputs[:args.batch_size], args.batch_size, workers)
        for _ in range(args.rounds):
            bare.append(timed(bare_loop, backbone, inputs, args.batch_size, device))
            ours.append(timed(transferflow_path, backbone, inputs, args.batch_size, workers))
        best_bare, best_ours = len(inputs) / min(bare), len(inputs) / min(ours)
        print(f"| {raw['family']}:{raw['name']} | {best_bare:,.1f} | {best_ours:,.1f} | {best_ours / best_bare:.2f} |",
              flush=True)


def load_inputs(data: Path, dataset: str, limit: int) -> list[str]:
    """Image paths (every split, the .gif skipped by the loader), SMS texts, or spoken-word clips
    (made once with espeak-ng under the system temp folder), first `limit`."""
    import tempfile

    from tasks.config.spec import data_spec
    from tasks.data.readers import load_examples
    from tasks.data.spoken_words import WORDS, write_spoken_words

    if dataset == "spoken_words":
        folder = Path(tempfile.gettempdir()) / f"transferflow-bench-spoken-words-{limit}"
        if not folder.exists():
            staging = folder.with_name(folder.name + ".partial")
            write_spoken_words(staging, clips_per_word=-(-limit // len(WORDS)))
            staging.rename(folder)
        raw = {"kind": "audio_folder", "path": folder}
    elif dataset == "hymenoptera":
        raw = {"kind": "image_folder", "path": (data / "hymenoptera").resolve()}
    else:
        raw = {"kind": "csv_text", "path": (data / "sms_spam" / "sms_spam.csv").resolve()}
    table = load_examples(data_spec(raw)).table
    return list(table["input"])[:limit]


def timed(function: Any, *args: Any) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def bare_loop(backbone: Any, inputs: list[str], batch_size: int, device: Any) -> None:
    """What anyone would write: decode a batch with the model's preprocessing, forward it."""
    import torch

    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = backbone.preprocess(inputs[start:start + batch_size])
            if isinstance(batch, dict):
                batch = {key: value.to(device) for key, value in batch.items()}
            else:
                batch = batch.to(device)
            backbone.embed(batch).float().cpu().numpy()


def transferflow_path(backbone: Any, inputs: list[str], batch_size: int, workers: int) -> None:
    from tasks.models.features import embed_inputs

    embed_inputs(backbone, inputs, batch_size, workers)


if __name__ == "__main__":
    main()
