"""What gradual unfreezing buys: the whole flow on real data, baseline vs final validation metric,
the final test metric, and every decision taken.

Cases (`--case`, repeatable; default all): the embedded demo (digits, as shipped), ants vs bees as
shipped, ants vs bees with the target forced to 0.99 so fine-tuning must run its stages, SMS
spam as shipped, and the spoken words (issue 20): as shipped, with the target forced to 0.99, and
with one word ("stop") cut to 5% of the clips under a recall contract on it, with the recipe's
class-weighted loss from the baseline on (`finetune.class_weights: on`, what the docs advise for a
rare class the contract is about) and off. Each case is one `transferflow run` in a fresh child process with its own
workdir (a cold cache, a fresh registry), so cases do not see each other's champions. Prints a
table; never asserts. Run by hand (see benchmarks/README.md).
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
from typing import Any

import yaml
from offline import SHARED_DATASETS, offline_preamble

REPO = offline_preamble()
SHARED = SHARED_DATASETS
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
CASES: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "demo": ("digits-demo.yaml", {}),
    "ants": ("ants-vs-bees.yaml", {}),
    "ants-forced": ("ants-vs-bees.yaml", {"metric": {"target": 0.99}}),
    "sms": ("sms-spam.yaml", {}),
    "words": ("spoken-words.yaml", {}),
    "words-forced": ("spoken-words.yaml", {"metric": {"target": 0.99}}),
    "words-rare": ("spoken-words.yaml", {"metric": {"name": "recall", "class": "stop", "target": 0.8},
                                         "finetune": {"class_weights": "on"}}),
    "words-rare-unweighted": ("spoken-words.yaml", {"metric": {"name": "recall", "class": "stop", "target": 0.8},
                                                    "finetune": {"class_weights": "off"}}),
}
RARE_WORD, RARE_SHARE, RARE_CLIPS_PER_WORD = "stop", 0.05, 200
# Run inside the child: the flow, then the facts this table needs, as one JSON line.
CHILD = """
import json, sys
from flows.runtime import apply_defaults, create_prefect_home
apply_defaults(); create_prefect_home()  # the CLI's settings: telemetry off, a patient engine start
from flows.transfer_learning import transfer_learning
summary = transfer_learning(sys.argv[1])
print("RESULT " + json.dumps({
    "metric": summary.spec.metric.key, "target": summary.spec.metric.target,
    "baseline_val": summary.stages[0].val_value, "selected": summary.selected.name,
    "final_val": summary.selected.val_value, "test": summary.test.value,
    "stages": [[s.name, s.val_value] for s in summary.stages],
    "decisions": [[d["stage"], d["action"]] for d in summary.decisions],
    "operating_point": summary.selected.operating_point, "gate": summary.outcome.decision.verdict,
    "test_guard": [summary.test.guard.key, summary.test.guard_value] if summary.test.guard else None}))
"""


def case_config(name: str, folder: Path) -> Path:
    """The shipped config with absolute data paths, the case's overrides and its own workdir."""
    file_name, overrides = CASES[name]
    raw = yaml.safe_load((REPO / "configs" / file_name).read_text())
    data = raw["data"]
    if not data.get("materialize_from"):
        data["path"] = str((REPO / "configs" / data["path"]).resolve())
    else:
        data["path"] = str(folder / "data")
    if name.startswith("words-rare"):
        data["path"] = str(rare_word_data(folder / "data"))
        del data["materialize_from"]
    for block, values in overrides.items():
        raw[block] = {**raw.get(block, {}), **values}
    raw["workdir"] = str(folder / "work")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def rare_word_data(folder: Path) -> Path:
    """The spoken words, RARE_CLIPS_PER_WORD of each, with RARE_WORD's cut to RARE_SHARE of all clips
    (the first ones kept): about 74 of 1,474, so 11 in validation and in test."""
    from tasks.data.spoken_words import WORDS, write_spoken_words

    write_spoken_words(folder, clips_per_word=RARE_CLIPS_PER_WORD)
    others = RARE_CLIPS_PER_WORD * (len(WORDS) - 1)
    keep = round(RARE_SHARE * others / (1 - RARE_SHARE))
    for clip in sorted((folder / RARE_WORD).iterdir())[keep:]:
        clip.unlink()
    return folder


def run_case(name: str, root: Path) -> tuple[dict, float]:
    folder = root / name
    folder.mkdir()
    config = case_config(name, folder)
    env = {**os.environ, **ALLOCATOR, "PREFECT_HOME": str(folder / "prefect")}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(config)], cwd=REPO, env=env, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - started
    line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT ")), None)
    if done.returncode or line is None:
        sys.exit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(line.removeprefix("RESULT "))
    # The flow's own line: the validation score at the threshold and its lower bound.
    result["operating_line"] = next((row.split("Operating point: ", 1)[1]
                                     for row in (done.stdout + done.stderr).splitlines()
                                     if "Operating point: " in row), "")
    return result, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: every case")
    args = parser.parse_args()
    names = args.case or list(CASES)
    missing = [n for n in names if n in ("ants", "ants-forced", "sms") and not SHARED.exists()]
    if missing:
        sys.exit(f"{SHARED} is absent: the cases {missing} need ../shared/datasets")
    print("| case | metric (target) | baseline val | final val (stage) | test | gate | decisions | wall s |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- | ---: |")
    with tempfile.TemporaryDirectory(prefix="finetune-quality-") as root:
        for name in names:
            result, wall = run_case(name, Path(root))
            decisions = "; ".join(f"{stage}: {action}" for stage, action in result["decisions"])
            point = result["operating_point"]
            threshold = f", threshold {point['threshold']:.3f}" if point else ""
            print(f"| {name} | {result['metric']} (>= {result['target']:g}) | {result['baseline_val']:.4f} | "
                  f"{result['final_val']:.4f} ({result['selected']}{threshold}) | {result['test']:.4f} | "
                  f"{result['gate']} | {decisions} | {wall:.0f} |", flush=True)
            if result["operating_line"]:
                print(f"  ({name}) operating point: {result['operating_line']}", flush=True)
            if result["test_guard"]:
                print(f"  ({name}) test {result['test_guard'][0]}: {result['test_guard'][1]:.4f}", flush=True)


if __name__ == "__main__":
    main()
