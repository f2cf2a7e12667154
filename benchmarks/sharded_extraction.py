"""Step 3a's sharded extraction on each task runner, on --images synthetic images made at benchmark
time (textured 64 px PNGs, one per example), with MobileNetV2 at --image-size:

- in process: the shards one after another in this process, torch on 2 threads (`local`);
- Dask, 1 worker x 2 threads, and 2 workers x 1 thread: a LocalCluster through prefect-dask.

Every pass embeds into a fresh cache, through the real `embed_shard` task inside a real flow run on
a real local Prefect server (what `transferflow run --task-runner dask` starts). Reported per
runner: cluster start (entering the runner), embedding wall time, images/s, and the ratio against
in process. Then the fixed cost of a shard on the local runner and on Dask (1 x 2): --overhead-tasks
tasks of one image each, their time per task less one image's compute, shown as a share of a
shard's compute at each of --shard-sizes; the default `runtime.shard_size` must keep it under 2%.
On 2 cores expect no gain from Dask: it measures overheads. It never asserts.
Run by hand (see benchmarks/README.md):  python benchmarks/sharded_extraction.py [--images 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from offline import offline_preamble

REPO = offline_preamble()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=4096, help="shards of the runner comparison")
    parser.add_argument("--shard-sizes", default="256,512,1024,2048,4096", help="shard sizes the overhead is shown at")
    parser.add_argument("--overhead-tasks", type=int, default=64, help="one-image tasks timed per runner (0: skip)")
    args = parser.parse_args()

    from flows.local_server import local_prefect_server

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        paths = make_images(folder / "images", args.images)
        with local_prefect_server(folder / "prefect") as server:
            import os

            os.environ["PREFECT_API_URL"] = server.api_url
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: server.api_url}):
                benchmark(args, paths, folder)


def make_images(folder: Path, count: int) -> list[str]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        path = folder / f"image-{index:06d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def benchmark(args: argparse.Namespace, paths: list[str], folder: Path) -> None:
    from prefect import flow

    from tasks.config.families import model_spec
    from tasks.config.spec import DaskSpec, RuntimeSpec

    model = model_spec({"family": "torchvision", "name": "mobilenet_v2", "image_size": args.image_size})
    ids = [f"id-{i:06d}" for i in range(len(paths))]
    runners = [("in process (2 threads)", RuntimeSpec(task_runner="local")),
               ("Dask 1 worker x 2 threads", RuntimeSpec(task_runner="dask", dask=DaskSpec(workers=1,
                                                                                            threads_per_worker=2))),
               ("Dask 2 workers x 1 thread", RuntimeSpec(task_runner="dask", dask=DaskSpec(workers=2,
                                                                                            threads_per_worker=1)))]

    @flow(name="benchmark-sharded-extraction")
    def measure() -> None:
        import torch

        torch.set_num_threads(2)
        print(f"{len(paths)} images at {args.image_size} px, shards of {args.shard_size}\n")
        print("| runner | cluster start s | embedding s | images/s | vs in process |")
        print("| --- | ---: | ---: | ---: | ---: |")
        baseline, rates = None, []
        for number, (name, runtime) in enumerate(runners):
            start, wall = embed_all(model, runtime, folder / f"cache-{number}", ids, paths, args.shard_size)
            rate = len(ids) / wall
            baseline = baseline or rate
            rates.append(rate)
            print(f"| {name} | {start:.1f} | {wall:.1f} | {rate:,.0f} | {rate / baseline:.2f} |", flush=True)
        if not args.overhead_tasks:
            return
        print(f"\nPer-shard overhead: {args.overhead_tasks} tasks of one image each per runner; their time per "
              "task less one image's compute is the fixed cost of a shard, shown as a share of a shard's compute\n")
        sizes = [int(s) for s in args.shard_sizes.split(",")]
        print("| runner | s per one-image task | fixed cost per shard s | " + " | ".join(
            f"overhead at {size}" for size in sizes) + " |")
        print("| --- | ---: | ---: | " + " | ".join("---:" for _ in sizes) + " |")
        for number, (name, runtime) in enumerate(runners[:2]):
            rate = rates[number]
            _, wall = embed_all(model, runtime, folder / f"overhead-{number}", ids[:args.overhead_tasks + 4],
                                paths[:args.overhead_tasks + 4], 1, warm_up=4)
            fixed = wall / args.overhead_tasks - 1 / rate
            print(f"| {name} | {wall / args.overhead_tasks:.3f} | {fixed:.3f} | " + " | ".join(
                f"{fixed / (size / rate):.1%}" for size in sizes) + " |", flush=True)

    measure()


def embed_all(model: Any, runtime: Any, workdir: Path, ids: list[str], paths: list[str], shard_size: int,
              warm_up: int = 0) -> tuple[float, float]:
    """(seconds to start the runner, seconds to embed the shards) into a fresh cache; the first
    `warm_up` shards run before the clock starts (each worker then has its backbone loaded)."""
    from tasks.steps.embed import embed_shard, fixed_shards
    from tasks.steps.runners import task_runner

    path_of = dict(zip(ids, paths, strict=True))
    calls = [{"model": model, "runtime": runtime, "workdir": workdir, "ids": shard,
              "inputs": [path_of[i] for i in shard], "batch_size": 64} for shard in fixed_shards(ids, shard_size)]
    started = time.perf_counter()
    with task_runner(runtime) as run_all:
        ready = time.perf_counter()
        run_all(embed_shard, calls[:warm_up])
        timed = time.perf_counter()
        shards = run_all(embed_shard, calls[warm_up:])
        done = time.perf_counter()
    processes = Counter(shard.process for shard in shards)
    print(f"  ({len(shards)} shards over {len(processes)} process(es): {sorted(processes.values())})", flush=True)
    return ready - started, done - timed


if __name__ == "__main__":
    main()
