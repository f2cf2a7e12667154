"""Load: --runs flow runs of tiny SMS configs (MiniLM at 16 tokens, 45 messages each, --models model
names in turn) submitted at once to one local `prefect server` and a process work pool with a
concurrency limit of --limit, taken by one `prefect worker start`. The shipped `retrain-digits-gpu`
deployment is deployed to the pool and run with each config (TRANSFERFLOW_DEVICE=cpu).

Prints the wall time from submission to the last run's end, the runs' states, versions per model,
and the peak resident memory of the worker's whole process tree (the worker and the flow-run
processes it starts), sampled every 0.25 s with psutil. Measures; never asserts.
Run by hand (see benchmarks/README.md):  python benchmarks/load.py [--runs 10] [--limit 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from offline import SHARED_DATASETS, offline_preamble

REPO = offline_preamble()
PREFECT = str(Path(sys.executable).parent / "prefect")
POOL, DEPLOYMENT = "transferflow-gpu", "retrain-digits-gpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--limit", type=int, default=2)
    args = parser.parse_args()

    from flows.local_server import local_prefect_server

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        with local_prefect_server(folder / "prefect") as server:
            os.environ["PREFECT_API_URL"] = server.api_url
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: server.api_url}):
                measure(args, folder)


def sms_slice(destination: Path) -> Path:
    with (SHARED_DATASETS / "sms_spam" / "sms_spam.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    picked = [r for r in rows if r["label"] == "ham"][:30] + [r for r in rows if r["label"] == "spam"][:15]
    with destination.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in picked)
    return destination


def measure(args: argparse.Namespace, folder: Path) -> None:
    from mlflow import MlflowClient
    from prefect import get_client
    from prefect.deployments import run_deployment

    data = sms_slice(folder / "sms.csv")
    configs = []
    for number in range(args.runs):
        config = {"task": "Flag SMS messages that are spam.", "metric": {"name": "accuracy", "target": 0.5},
                  "data": {"kind": "csv_text", "path": str(data), "classes": ["ham", "spam"]},
                  "model": {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 16},
                  "train": {"head_epochs": 10 + number}, "finetune": {"max_stages": 0},
                  "registry": {"model_name": f"load-{number % args.models}"}, "workdir": str(folder / "work")}
        (folder / f"run-{number}").mkdir()
        configs.append(folder / f"run-{number}" / "config.yaml")
        configs[-1].write_text(yaml.safe_dump(config))
    prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect("work-pool", "set-concurrency-limit", POOL, str(args.limit))
    prefect("--no-prompt", "deploy", "--name", DEPLOYMENT, "--prefect-file", "deployments/prefect.yaml")
    shipped = next(d for d in yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]
                   if d["name"] == DEPLOYMENT)
    env = {**shipped["work_pool"]["job_variables"]["env"], "TRANSFERFLOW_DEVICE": "cpu"}
    started = time.monotonic()
    runs = [run_deployment(f"transfer-learning/{DEPLOYMENT}", timeout=0, job_variables={"env": env},
                           parameters={"config_path": str(config), "trigger": "manual"}) for config in configs]
    with (folder / "worker.log").open("w") as log:
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL], cwd=folder, env=os.environ.copy(),
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    peak = [0.0]
    stop = threading.Event()
    sampler = threading.Thread(target=sample_tree_rss, args=(worker.pid, peak, stop), daemon=True)
    sampler.start()
    try:
        while True:
            with get_client(sync_client=True) as client:
                states = [client.read_flow_run(run.id).state for run in runs]
            if all(state is not None and state.is_final() for state in states):
                break
            time.sleep(1)
        wall = time.monotonic() - started
    finally:
        stop.set()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    store = MlflowClient(f"sqlite:///{folder / 'work' / 'mlflow.db'}")
    versions = {f"load-{m}": len(store.search_model_versions(f"name = 'load-{m}'")) for m in range(args.models)}
    print(f"{args.runs} runs, {args.models} models, pool limit {args.limit}, 2 cores")
    print(f"wall: {wall:.0f} s ({wall / args.runs:.1f} s per run); states: "
          f"{sorted({s.type.value for s in states})}; versions per model: {versions}")
    print(f"peak resident memory of the worker's process tree: {peak[0] / 2**20:,.0f} MiB")


def sample_tree_rss(pid: int, peak: list[float], stop: threading.Event) -> None:
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        total = 0
        try:
            for process in [root, *root.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            return
        peak[0] = max(peak[0], total)
        time.sleep(0.25)


def prefect(*args: str) -> None:
    subprocess.run([PREFECT, *args], cwd=REPO, env=os.environ.copy(), stdin=subprocess.DEVNULL, check=True,
                   capture_output=True, timeout=300)


if __name__ == "__main__":
    main()
