"""A process work pool and a worker under load, as a team runs them: the shipped
deployments/prefect.yaml's `retrain-digits-gpu` deployed with `prefect deploy` to the session's real
Prefect server, its pool given a concurrency limit of 2, three runs of it submitted at once with
tiny SMS configs for two model names (one model twice), then one `prefect worker start --pool
transferflow-gpu` in its own process group (stopped by that group, passed or failed).

This machine has no GPU, so the runs' job variables set TRANSFERFLOW_DEVICE=cpu, as a CPU pool's
would. Asserted: all three complete; two run at once, never three; each has its MLflow run
(FINISHED, with the device the environment set over the config's `auto`) and its registered
version; and each model's alias ends on its last promoted version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.integration.conftest import csv_slice, sms_config

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
DEPLOYMENT = "retrain-digits-gpu"
POOL = "transferflow-gpu"
MODELS = ("sms-on-a-worker", "sms-also-on-a-worker")


def prefect_cli(*args: str, cwd: Path = REPO) -> str:
    result = subprocess.run([PREFECT, *args], cwd=cwd, env=os.environ.copy(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_three_runs_at_once_on_a_pool_limited_to_two_all_complete_with_their_versions(tmp_path):
    from prefect import get_client
    from prefect.deployments import run_deployment

    from tests.conftest import shared_dataset

    data = csv_slice(shared_dataset("sms_spam") / "sms_spam.csv", tmp_path / "sms.csv", {"ham": 30, "spam": 15})
    configs = [sms_config(tmp_path / name, data, tmp_path / "work", model={"max_tokens": 16},
                          train={"head_epochs": epochs}, registry={"model_name": model})
               for name, model, epochs in [("a1", MODELS[0], 10), ("a2", MODELS[0], 12), ("b", MODELS[1], 10)]]
    prefect_cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect_cli("work-pool", "set-concurrency-limit", POOL, "2")
    prefect_cli("--no-prompt", "deploy", "--name", DEPLOYMENT, "--prefect-file", "deployments/prefect.yaml")
    shipped = next(d for d in yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]
                   if d["name"] == DEPLOYMENT)
    env = {**shipped["work_pool"]["job_variables"]["env"], "TRANSFERFLOW_DEVICE": "cpu"}
    assert shipped["work_pool"]["job_variables"]["env"]["TRANSFERFLOW_DEVICE"] == "cuda"  # as shipped
    flow_runs = [run_deployment(f"transfer-learning/{DEPLOYMENT}", timeout=0, job_variables={"env": env},
                                parameters={"config_path": str(config), "trigger": "manual"}) for config in configs]
    log = tmp_path / "worker.log"
    with log.open("w") as output:
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL], cwd=tmp_path, env=os.environ.copy(),
                                  stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 540
        while True:
            with get_client(sync_client=True) as client:
                finished = [client.read_flow_run(run.id) for run in flow_runs]
            if all(run.state is not None and run.state.is_final() for run in finished):
                break
            assert time.monotonic() < deadline, f"still {[r.state for r in finished]}:\n{log.read_text()[-3000:]}"
            time.sleep(2)
    finally:
        stop_group(worker)
    states = [r.state for r in finished]
    assert all(state.is_completed() for state in states), f"{states}:\n{log.read_text()[-3000:]}"
    assert most_at_once([(run.start_time, run.end_time) for run in finished]) == 2, "not 2 at once"
    store = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    for model, runs in ((MODELS[0], finished[:2]), (MODELS[1], finished[2:])):
        parents = {r.data.tags.get("prefect_flow_run_id"): r
                   for r in store.search_runs([store.get_experiment_by_name(model).experiment_id])}
        versions = sorted(store.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version))
        assert len(versions) == len(runs), f"{model}: {len(versions)} versions for {len(runs)} runs"
        assert {v.run_id for v in versions} == {parents[str(run.id)].info.run_id for run in runs}
        for run in runs:
            parent = parents[str(run.id)]
            assert parent.info.status == "FINISHED" and parent.data.params["runtime.device"] == "cpu"
        promoted = [v for v in versions if v.tags["decision"] == "promoted"]
        assert promoted and store.get_model_version_by_alias(model, "champion").version == promoted[-1].version


def most_at_once(spans: list[tuple]) -> int:
    """The largest number of (start, end) spans open at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGINT (a worker may need both), then SIGKILL: the worker's whole group."""
    for sent in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue
