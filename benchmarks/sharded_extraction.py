"""Step 3a's sharded extraction on each task runner, on --images synthetic images made at benchmark
time (textured 64 px PNGs, one per example), with MobileNetV2 at --image-size:

- in process: the shards one after another in this process, torch on 2 threads (`local`);
- Dask, 1 worker x 2 threads, and 2 workers x 1 thread: a LocalCluster through prefect-dask.

Every pass embeds into a fresh cache, through the real `embed_shard` task inside a real flow run on
a real local Prefect server (what `transferflow run --task-runner dask` starts). Reported per
runner: cluster start (entering the runner), embedding wall time, images/s, and the ratio against
in process. Then the per-shard overhead of the local runner: the same images in shards of each
--shard-sizes against one shard holding all of them; the default `runtime.shard_size` must keep
it under 2%. On 2 cores expect no gain from Dask: it measures overheads. It never asserts.
Run by hand (see benchmarks/README.md):  python benchmarks/sharded_extraction.py [--images 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from offline import offline_preamble

REPO = offline_preamble()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=2048, help="shards of the runner comparison")
    parser.add_argument("--shard-sizes", default="128,512,2048", help="shard sizes of the overhead comparison")
    parser.add_argument("--overhead-images", type=int, default=4096, help="images of the overhead comparison")
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
        baseline = None
        for number, (name, runtime) in enumerate(runners):
            start, wall = embed_all(model, runtime, folder / f"cache-{number}", ids, paths, args.shard_size)
            rate = len(ids) / wall
            baseline = baseline or rate
            print(f"| {name} | {start:.1f} | {wall:.1f} | {rate:,.0f} | {rate / baseline:.2f} |", flush=True)
        some_ids, some_paths = ids[:args.overhead_images], paths[:args.overhead_images]
        local = RuntimeSpec(task_runner="local")
        _, one = embed_all(model, local, folder / "cache-one", some_ids, some_paths, len(some_ids))
        print(f"\nPer-shard overhead, in process, {len(some_ids)} images (one shard: {one:.1f} s)\n")
        print("| shard size | shards | embedding s | overhead per shard s | overhead |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for size in [int(s) for s in args.shard_sizes.split(",")]:
            _, wall = embed_all(model, local, folder / f"cache-{size}", some_ids, some_paths, size)
            shards = -(-len(some_ids) // size)
            print(f"| {size} | {shards} | {wall:.1f} | {(wall - one) / max(shards - 1, 1):.3f} | "
                  f"{(wall - one) / one:+.1%} |", flush=True)

    measure()


def embed_all(model: Any, runtime: Any, workdir: Path, ids: list[str], paths: list[str],
              shard_size: int) -> tuple[float, float]:
    """(seconds to start the runner, seconds to embed every shard) into a fresh cache."""
    from tasks.steps.embed import embed_shard, fixed_shards
    from tasks.steps.runners import task_runner

    path_of = dict(zip(ids, paths, strict=True))
    calls = [{"model": model, "runtime": runtime, "workdir": workdir, "ids": shard,
              "inputs": [path_of[i] for i in shard], "batch_size": 64} for shard in fixed_shards(ids, shard_size)]
    started = time.perf_counter()
    with task_runner(runtime) as run_all:
        ready = time.perf_counter()
        run_all(embed_shard, calls)
        done = time.perf_counter()
    return ready - started, done - ready


if __name__ == "__main__":
    main()
