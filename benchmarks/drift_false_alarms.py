"""False alarms of the drift check in the configuration that runs: a fine-tuned champion, its stored
reference (examples it never trained on: validation, then test inputs), and in-domain batches it
never saw, over --seeds seeds; beside it, the reference the check used before (a sample of the
training examples, embedded by the same fine-tuned backbone).

Per case (text: MiniLM on SMS spam; image: MobileNetV2 on ants vs bees), one real
`transfer_learning` flow with the target forced high, so a fine-tuning stage runs; the backbone of
its last fine-tuning stage embeds the reference (as `tasks.steps.monitor.reference_examples` picks
it), the old training reference, and a pool of in-domain inputs outside the training data (SMS
rows the slice does not hold; the hymenoptera val/ folder). Each seed draws one batch from the pool
and runs the MMD permutation test against both references. Prints false alarms per reference, the
binomial 99% upper bound at drift.alpha, and the median p-value (about 0.5 when calibrated). The
batches share one finite pool and one reference, so seeds are not independent: the bound is a
yardstick, not an exact test. It measures; it never asserts.
Run by hand (see benchmarks/README.md):  python benchmarks/drift_false_alarms.py [--case text] [--seeds 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from offline import SHARED_DATASETS, offline_preamble

REPO = offline_preamble()


def text_case(folder: Path) -> tuple[dict, list[str]]:
    """400 SMS (300 ham, 100 spam) as the data; every other distinct SMS text is the unseen pool."""
    import pandas as pd

    sms = pd.read_csv(SHARED_DATASETS / "sms_spam" / "sms_spam.csv").drop_duplicates("text")
    shuffled = sms.sample(frac=1.0, random_state=0)
    data = pd.concat([shuffled[shuffled["label"] == "ham"][:300], shuffled[shuffled["label"] == "spam"][:100]])
    data.to_csv(folder / "sms.csv", index=False)
    pool = [t for t in shuffled["text"] if t not in set(data["text"])]
    config = {"data": {"kind": "csv_text", "path": str(folder / "sms.csv"), "classes": ["ham", "spam"]},
              "model": {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 48}}
    return config, pool


def image_case(folder: Path) -> tuple[dict, list[str]]:
    """hymenoptera train/ (ants, bees) as the data; its val/ photos are the unseen pool."""
    source = SHARED_DATASETS / "hymenoptera"
    pool = sorted(str(p) for p in (source / "val").rglob("*.jpg"))
    config = {"data": {"kind": "image_folder", "path": str(source / "train")},
              "model": {"family": "torchvision", "name": "mobilenet_v2", "image_size": 160}}
    return config, pool


CASES = {"text": text_case, "image": image_case}


def run_case(name: str, seeds: int, batch: int, permutations: int) -> None:
    import numpy as np
    import yaml
    from scipy.stats import binom

    from flows.transfer_learning import transfer_learning
    from tasks.data.table import read_examples
    from tasks.models.checkpoints import legacy_config, restore_selected
    from tasks.models.features import embed_inputs
    from tasks.monitoring.mmd import mmd_permutation_test

    with tempfile.TemporaryDirectory(prefix=f"transferflow-drift-alarms-{name}-") as temporary:
        folder = Path(temporary)
        config, pool = CASES[name](folder)
        config |= {"task": f"drift false alarms ({name})", "metric": {"name": "accuracy", "target": 0.999},
                   "finetune": {"max_stages": 1, "epochs_per_stage": 2}, "registry": {"model_name": f"alarms-{name}"},
                   "drift": {"permutations": permutations}, "workdir": str(folder / "work")}
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        started = time.perf_counter()
        summary = transfer_learning(str(path))
        trained = time.perf_counter() - started
        stage = next(s for s in reversed(summary.stages) if "baseline" not in s.name)
        spec, classes = summary.spec, list(summary.prepared.dataset.classes)
        classifier, _ = restore_selected(stage.checkpoint, stage.checkpoint_sha256, legacy_config(spec.model, classes))
        splits = json.loads(summary.split.manifest_path.read_text())["splits"]
        table = read_examples(summary.prepared.dataset.table_path)
        size = spec.drift.reference_size
        unseen_ids = (splits["val"] + splits["test"])[:size]  # validation first, as reference_examples
        rng = np.random.default_rng(0)
        old_ids = list(rng.choice(splits["train"], min(len(unseen_ids), len(splits["train"])), replace=False))

        def embed(inputs: list[str]) -> np.ndarray:
            return embed_inputs(classifier.backbone, inputs, spec.train.batch_size)

        references = {"unseen (now)": embed(list(table.loc[unseen_ids, "input"])),
                      "training (before)": embed(list(table.loc[old_ids, "input"]))}
        pool_embeddings = embed(pool[:2000])
        p_values: dict[str, list[float]] = {key: [] for key in references}
        for seed in range(seeds):
            drawn = np.random.default_rng(1000 + seed).choice(len(pool_embeddings), batch, replace=False)
            for key, reference in references.items():
                p_values[key].append(mmd_permutation_test(reference, pool_embeddings[drawn], permutations,
                                                          seed).p_value)
    alpha = spec.drift.alpha
    bound = int(binom.ppf(0.99, seeds, alpha))
    print(f"\n{name}: {spec.model.describe()}, stage {stage.name} (fine-tuned; flow {trained:.0f} s), "
          f"{seeds} in-domain batches of {batch} from {len(pool_embeddings)} unseen inputs, "
          f"{permutations} permutations, alpha {alpha:g}, binomial 99% bound {bound}")
    for key, values in p_values.items():
        alarms = sum(p < alpha for p in values)
        print(f"  reference {key:<18} n={len(references[key]):4d}  false alarms {alarms:3d} / {seeds} "
              f"({'within' if alarms <= bound else 'ABOVE'} the bound)  median p {float(np.median(values)):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50, help="incoming inputs per seed")
    parser.add_argument("--permutations", type=int, default=199)
    args = parser.parse_args()
    from flows.runtime import apply_defaults, create_prefect_home

    apply_defaults()
    create_prefect_home()
    for name in CASES if args.case == "all" else [args.case]:
        run_case(name, args.seeds, args.batch, args.permutations)


if __name__ == "__main__":
    main()
