"""What a base-model tournament costs: ants vs bees (the shipped config) with one base model vs
with the offline image models as candidates, each run a fresh `transferflow` flow in its own
process and workdir (cold embedding cache), fine-tuning off so the difference is step 4.

Prints the tournament table (per candidate: seconds, validation metric, throughput, parameters,
peak memory) and the wall time of each run with their ratio: the tournament's cost relative to
one baseline run. Never asserts. Run by hand (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from offline import offline_preamble

REPO = offline_preamble()
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
CANDIDATES = [{"family": "torchvision", "name": "mobilenet_v2"}, {"family": "timm", "name": "tf_efficientnet_lite0"}]
CHILD = """
import json, sys
from dataclasses import asdict
from flows.runtime import apply_defaults, create_prefect_home
apply_defaults(); create_prefect_home()
from flows.transfer_learning import transfer_learning
summary = transfer_learning(sys.argv[1])
tournament = summary.prepared.tournament
print("RESULT " + json.dumps({
    "model": f"{summary.spec.model.family}:{summary.spec.model.name}", "baseline_val": summary.stages[0].val_value,
    "test": summary.test.value, "rows": [asdict(r) for r in tournament.results] if tournament else []}))
"""


def config(folder: Path, candidates: bool, image_size: int) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "ants-vs-bees.yaml").read_text())
    raw["data"]["path"] = str((REPO / "configs" / raw["data"]["path"]).resolve())
    models = [{**model, "image_size": image_size} for model in CANDIDATES]
    raw["model"] = {"candidates": models} if candidates else models[0]
    raw["finetune"] = {**raw.get("finetune", {}), "max_stages": 0}
    raw["workdir"] = str(folder / "work")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(folder: Path, candidates: bool, image_size: int) -> tuple[dict, float]:
    folder.mkdir()
    env = {**os.environ, **ALLOCATOR, "PREFECT_HOME": str(folder / "prefect")}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(config(folder, candidates, image_size))], cwd=REPO,
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT ")), None)
    if done.returncode or line is None:
        sys.exit(f"run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT ")), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tournament-bench-") as root:
        single, single_wall = run(Path(root) / "single", False, args.image_size)
        tournament, tournament_wall = run(Path(root) / "tournament", True, args.image_size)
    print(f"ants vs bees, {args.image_size} px, fine-tuning off, cold caches\n")
    print("| candidate | status | val accuracy | inputs/s | parameters | peak memory MiB | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in tournament["rows"]:
        value = "-" if row["val_value"] is None else f"{row['val_value']:.4f}"
        speed = "-" if row["throughput"] is None else f"{row['throughput']:,.1f}"
        memory = "-" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:,.0f}"
        print(f"| {row['model']} | {row['status']} | {value} | {speed} | {row['parameters']:,} | {memory} | "
              f"{row['seconds']:.1f} |")
    print(f"\none base model ({single['model']}): {single_wall:.1f} s wall, baseline val {single['baseline_val']:.4f}, "
          f"test {single['test']:.4f}")
    print(f"tournament (chose {tournament['model']}): {tournament_wall:.1f} s wall, baseline val "
          f"{tournament['baseline_val']:.4f}, test {tournament['test']:.4f}")
    print(f"tournament / one run: {tournament_wall / single_wall:.2f}x")


if __name__ == "__main__":
    main()
