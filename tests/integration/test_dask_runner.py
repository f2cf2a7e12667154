"""The Dask task runner against the in-process one, on 600 real MNIST digits from the demo's data,
with a two-candidate tournament (MobileNetV2, EfficientNet-Lite0): one run in process
(`runtime.task_runner: local`), one `transferflow run --task-runner dask` on a two-worker
LocalCluster, each in its own workdir. While the Dask run embeds its shards, one worker process is
killed with SIGKILL by its PID: Dask's nanny restarts it and the lost shard runs again.

Asserted: the run completes and registers exactly one version; every embedding equals the
in-process one to 1e-5 of its length (read back from both caches); the tournament's validation scores, the
decisions, the selected stage and the test metric are the same; and the shards really ran in more
than one worker process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from tests.digits import digits_slice
from tests.integration.evidence import version_evidence

pytestmark = pytest.mark.integration
MODEL = "digits-dask"
PER_CLASS = 60
SHARD_SIZE = 16


def digits_config(folder: Path, digits: Path, runner: str) -> Path:
    config = {
        "task": "Recognize the handwritten digit (0-9) in a small grayscale image.",
        "metric": {"name": "macro_f1", "target": 0.9},  # above the baseline: a fine-tuning stage runs
        "data": {"kind": "image_folder", "path": str(digits)},
        "model": {"candidates": [{"family": "torchvision", "name": "mobilenet_v2", "image_size": 64},
                                 {"family": "timm", "name": "tf_efficientnet_lite0", "image_size": 64}]},
        "split": {"seed": 42},
        "train": {"batch_size": 32, "head_epochs": 5},
        "finetune": {"max_stages": 1, "epochs_per_stage": 1},
        "runtime": {"task_runner": runner, "shard_size": SHARD_SIZE, "dask": {"workers": 2, "threads_per_worker": 1}},
        "registry": {"model_name": MODEL},
        "workdir": str(folder / "work"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "config.yaml"


def kill_one_worker_mid_run(cli: subprocess.Popen, shards: Path, killed: list[tuple[int, int]]) -> None:
    """Once the first cache shard exists, SIGKILL one Dask worker process (a spawned child of the
    command's process tree) by its PID; record (pid, shards written at that moment)."""
    import psutil

    deadline = time.monotonic() + 540
    while cli.poll() is None and time.monotonic() < deadline:
        written = list(shards.glob("*/*.npy")) if shards.exists() else []
        workers = [p for p in psutil.Process(cli.pid).children(recursive=True)
                   if "spawn_main" in " ".join(_cmdline(p))]
        if written and workers:
            os.kill(workers[0].pid, signal.SIGKILL)
            killed.append((workers[0].pid, len(written)))
            return
        time.sleep(0.05)


def _cmdline(process) -> list[str]:
    import psutil

    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL

    from flows.runtime import ALLOCATOR_SETTINGS
    from flows.transfer_learning import transfer_learning

    folder = tmp_path_factory.mktemp("dask-runner")
    digits = digits_slice(folder, PER_CLASS)
    local = transfer_learning(str(digits_config(folder / "local", digits, "local")))
    config = digits_config(folder / "dask", digits, "local")  # the command's flag chooses Dask
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **ALLOCATOR_SETTINGS,
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    killed: list[tuple[int, int]] = []
    with (folder / "dask.log").open("w") as log:
        cli = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config), "--task-runner", "dask"],
                               cwd=folder / "dask", env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    killer = threading.Thread(target=kill_one_worker_mid_run, args=(cli, folder / "dask" / "work" / "embeddings",
                                                                    killed))
    killer.start()
    try:
        code = cli.wait(timeout=600)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
        killer.join()
    return local, (code, (folder / "dask.log").read_text()), killed, folder


def test_the_dask_run_completes_after_a_worker_is_killed_and_registers_one_version(both_runs):
    _, (code, output), killed, folder = both_runs
    assert code == 0, output[-5000:]
    [(_, written)] = killed
    total = int(re.search(r"in (\d+) shard\(s\) of up to 16", output).group(1))
    assert written < total, f"the worker was killed after all {total} shards were written: not mid-run"
    client = MlflowClient(f"sqlite:///{folder / 'dask' / 'work' / 'mlflow.db'}")
    assert [str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")] == ["1"]
    processes = int(re.search(r"; (\d+) process\(es\)", output).group(1))
    assert processes >= 2, "the shards did not spread over the cluster's worker processes"
    assert "dask task runner" in output


def test_embeddings_equal_the_in_process_ones(both_runs):
    """Read back from each workdir's cache, independently of either run's own report."""
    from tasks.models.features import EmbeddingCache

    _, (code, output), _, folder = both_runs
    assert code == 0, output[-5000:]
    keys = sorted(p.name for p in (folder / "local" / "work" / "embeddings").iterdir())
    assert len(keys) == 2  # one cache per candidate
    assert sorted(p.name for p in (folder / "dask" / "work" / "embeddings").iterdir()) == keys
    for key in keys:
        in_process = EmbeddingCache(folder / "local" / "work" / "embeddings", key)
        on_dask = EmbeddingCache(folder / "dask" / "work" / "embeddings", key)
        ids = sorted(in_process._index)
        assert len(ids) >= 8 * PER_CLASS and on_dask.missing(ids) == []  # the first: all; the other: train+val
        # Threads split float32 sums differently (1 thread per worker here, 2 in process): each embedding
        # equals the in-process one to 1e-5 of its length (one element in 650,000 differed by 1.8e-5).
        dask_rows, local_rows = on_dask.get(ids), in_process.get(ids)
        relative = np.linalg.norm(dask_rows - local_rows, axis=1) / np.linalg.norm(local_rows, axis=1)
        assert relative.max() <= 1e-5, f"an embedding differs by {relative.max():.2e} of its length"


def test_the_same_decisions_selected_stage_and_test_metric(both_runs):
    local, (code, output), _, folder = both_runs
    assert code == 0, output[-5000:]
    client = MlflowClient(f"sqlite:///{folder / 'dask' / 'work' / 'mlflow.db'}")
    version = client.get_model_version(MODEL, "1")
    with tempfile.TemporaryDirectory() as downloads:
        decisions = json.loads(Path(client.download_artifacts(version.run_id, "decisions.json", downloads)).read_text())
        candidates = json.loads(Path(client.download_artifacts(version.run_id, "tournament/candidates.json",
                                                                downloads)).read_text())
    entries = decisions["decisions"] if isinstance(decisions, dict) else decisions
    local_candidates = {r.model: (r.status, r.val_value) for r in local.prepared.tournament.results}
    assert {c["model"]: c["status"] for c in candidates} == {m: s for m, (s, _) in local_candidates.items()}
    for candidate in candidates:
        assert candidate["val_value"] == pytest.approx(local_candidates[candidate["model"]][1], abs=1e-6)
    assert [(d["stage"], d["action"]) for d in entries] == [(d["stage"], d["action"]) for d in local.decisions]
    assert version_evidence(client, version)["selected_stage"] == local.selected.name
    assert float(version.tags["test_metric"]) == pytest.approx(local.test.value, abs=1e-6)


def test_without_a_prefect_server_the_command_starts_one_for_the_workers_and_stops_it(tmp_path):
    """On the ephemeral engine each Dask worker would start its own API server: with PREFECT_API_URL
    unset, `--task-runner dask` runs on a real local server it starts, then stops (its port no longer
    answers), and the logs reach it before it stops (no "Error logging to API" at exit)."""
    from flows.local_server import answers
    from tests.conftest import shared_dataset
    from tests.integration.conftest import csv_slice, run_transferflow, sms_config

    data = csv_slice(shared_dataset("sms_spam") / "sms_spam.csv", tmp_path / "sms.csv", {"ham": 30, "spam": 15})
    config = sms_config(tmp_path, data, tmp_path / "work", model={"max_tokens": 16}, runtime={"shard_size": 16})
    code, output = run_transferflow(["validate", str(config), "--task-runner", "dask"], cwd=tmp_path,
                                    PREFECT_API_URL="")
    assert code == 0, output[-5000:]
    url = re.search(r"Dask task runner: a local Prefect server for this run at (http://127\.0\.0\.1:\d+)", output)
    assert url, output[-3000:]
    assert re.search(r"45 examples in 3 shard\(s\) of up to 16, 3 with examples to compute, 45 computed", output)
    assert "Ready to run." in output and "Error logging to API" not in output
    assert not answers(f"{url.group(1)}/api")
