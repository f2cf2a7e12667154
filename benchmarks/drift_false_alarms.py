"""False alarms of the drift check in the configuration that runs: a fine-tuned champion, a reference
of examples it never trained on, and in-domain batches it never saw, over --seeds seeds; beside
it, the reference the check used before (training examples, embedded by the same fine-tuned
backbone, which has fitted them).

Per case (text: MiniLM on SMS spam; image: MobileNetV2 on ants vs bees), one real
`transfer_learning` flow with the target forced high, so a fine-tuning stage runs, and the backbone
of its last fine-tuning stage embeds everything. "Unseen" inputs are the run's validation and test
examples plus a pool outside its data with the same class mix (SMS rows the slice does not hold;
the hymenoptera val/ folder). Per seed, three tests, each with the stored reference's size:

- unseen (now): reference and batch drawn apart from the unseen inputs: exchangeable, so a sound
  check alarms in at most alpha of the seeds, and the seeds are close to independent;
- training (before): a reference drawn from the training examples, the batch from the unseen ones;
- as stored: the run's own reference (validation, then test: `reference_examples`' rule), fixed,
  against batches from the outside pool. One fixed reference makes the seeds' alarms move together,
  so its count may stray from the bound by chance; the same row with the pretrained backbone tells
  fine-tuning's part from the data's;
- fixed references: --references draws of a reference from the unseen inputs, each kept fixed for
  all seeds (as one champion keeps its own): the spread of their alarm counts is what one champion
  can get, their mean what the check promises on average.

Prints false alarms per row, the binomial 99% upper bound at drift.alpha (independent seeds), and
the median p-value (about 0.5 when calibrated). It measures; it never asserts.
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
    """400 SMS (300 ham, 100 spam) as the data; the pool: 1,500 ham and 500 spam texts it does not
    hold (the data's class mix)."""
    import pandas as pd

    sms = pd.read_csv(SHARED_DATASETS / "sms_spam" / "sms_spam.csv").drop_duplicates("text")
    shuffled = sms.sample(frac=1.0, random_state=0)
    ham, spam = shuffled[shuffled["label"] == "ham"], shuffled[shuffled["label"] == "spam"]
    data = pd.concat([ham[:300], spam[:100]])
    data.to_csv(folder / "sms.csv", index=False)
    pool = list(ham["text"][300:1800]) + list(spam["text"][100:600])
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


def run_case(name: str, seeds: int, batch: int, permutations: int, references: int) -> None:
    import numpy as np
    import yaml
    from scipy.stats import binom

    from flows.transfer_learning import transfer_learning
    from tasks.data.table import read_examples
    from tasks.models.backbones import load_backbone
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
        stored_ids = (splits["val"] + splits["test"])[:spec.drift.reference_size]  # validation first

        def embed(inputs: list[str], backbone=classifier.backbone) -> np.ndarray:  # type: ignore[no-untyped-def]
            return embed_inputs(backbone, inputs, spec.train.batch_size)

        stored = embed(list(table.loc[stored_ids, "input"]))
        training = embed(list(table.loc[splits["train"], "input"]))
        outside = embed(pool)
        pretrained = load_backbone(spec.model)
        stored_pretrained = embed(list(table.loc[stored_ids, "input"]), pretrained)
        outside_pretrained = embed(pool, pretrained)
        unseen = np.concatenate([stored, outside])
        size = len(stored)
        p_values: dict[str, list[float]] = {"unseen (now)": [], "training (before)": [], "as stored": [],
                                            "as stored, pretrained": []}
        for seed in range(seeds):
            rng = np.random.default_rng(1000 + seed)
            order = rng.permutation(len(unseen))
            reference, drawn = unseen[order[:size]], unseen[order[size:size + batch]]
            p_values["unseen (now)"].append(mmd_permutation_test(reference, drawn, permutations, seed).p_value)
            old = training[rng.choice(len(training), min(size, len(training)), replace=False)]
            p_values["training (before)"].append(mmd_permutation_test(old, drawn, permutations, seed).p_value)
            from_outside = outside[rng.choice(len(outside), batch, replace=False)]
            p_values["as stored"].append(mmd_permutation_test(stored, from_outside, permutations, seed).p_value)
            p_values["as stored, pretrained"].append(mmd_permutation_test(
                stored_pretrained, outside_pretrained[rng.choice(len(outside), batch, replace=False)], permutations,
                seed).p_value)
        fixed_alarms = []
        for draw in range(references):
            order = np.random.default_rng(5000 + draw).permutation(len(unseen))
            reference, rest = unseen[order[:size]], unseen[order[size:]]
            picks = [np.random.default_rng(seed).choice(len(rest), batch, replace=False) for seed in range(seeds)]
            fixed_alarms.append(sum(mmd_permutation_test(reference, rest[pick], permutations, seed).p_value
                                    < spec.drift.alpha for seed, pick in enumerate(picks)))
    alpha = spec.drift.alpha
    bound = int(binom.ppf(0.99, seeds, alpha))
    print(f"\n{name}: {spec.model.describe()}, stage {stage.name} (fine-tuned; flow {trained:.0f} s); reference "
          f"{size} examples, batches of {batch}, {len(unseen)} unseen inputs ({len(outside)} outside the data), "
          f"{permutations} permutations, alpha {alpha:g}, binomial 99% bound {bound} of {seeds}")
    for key, values in p_values.items():
        alarms = sum(p < alpha for p in values)
        print(f"  reference {key:<22} false alarms {alarms:3d} / {seeds} "
              f"({'within' if alarms <= bound else 'ABOVE'} the bound)  median p {float(np.median(values)):.3f}")
    print(f"  {references} fixed references from the unseen inputs: false alarms per {seeds} seeds "
          f"{sorted(fixed_alarms)}, mean {np.mean(fixed_alarms):.1f} (alpha x seeds = {alpha * seeds:g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50, help="incoming inputs per seed")
    parser.add_argument("--permutations", type=int, default=199)
    parser.add_argument("--references", type=int, default=10, help="fixed references drawn for the spread")
    args = parser.parse_args()
    from flows.runtime import apply_defaults, create_prefect_home

    apply_defaults()
    create_prefect_home()
    for name in CASES if args.case == "all" else [args.case]:
        run_case(name, args.seeds, args.batch, args.permutations, args.references)


if __name__ == "__main__":
    main()
