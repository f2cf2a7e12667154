"""A process work pool and a worker, as a team runs them: the shipped deployments/prefect.yaml's
`retrain-digits-gpu` deployed with `prefect deploy` to the session's real Prefect server, a
`prefect worker start --pool transferflow-gpu --limit 1` in its own process group (stopped by that
group, passed or failed), and the deployment run with a tiny SMS config. This machine has no GPU,
so the run's job variables set TRANSFERFLOW_DEVICE=cpu, as a CPU pool's would: the run completes,
and its MLflow params show the device the environment set, over the config's `auto`."""

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
MODEL = "sms-on-a-worker"


def prefect_cli(*args: str, cwd: Path = REPO) -> str:
    result = subprocess.run([PREFECT, *args], cwd=cwd, env=os.environ.copy(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_worker_runs_the_gpu_deployment_with_the_device_its_environment_sets(tmp_path):
    from prefect import get_client
    from prefect.deployments import run_deployment

    from tests.conftest import shared_dataset

    data = csv_slice(shared_dataset("sms_spam") / "sms_spam.csv", tmp_path / "sms.csv", {"ham": 30, "spam": 15})
    config = sms_config(tmp_path, data, tmp_path / "work", model={"max_tokens": 16}, train={"head_epochs": 10},
                        registry={"model_name": MODEL})
    prefect_cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect_cli("--no-prompt", "deploy", "--name", DEPLOYMENT, "--prefect-file", "deployments/prefect.yaml")
    shipped = next(d for d in yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]
                   if d["name"] == DEPLOYMENT)
    env = {**shipped["work_pool"]["job_variables"]["env"], "TRANSFERFLOW_DEVICE": "cpu"}
    assert shipped["work_pool"]["job_variables"]["env"]["TRANSFERFLOW_DEVICE"] == "cuda"  # as shipped
    flow_run = run_deployment(f"transfer-learning/{DEPLOYMENT}", timeout=0, job_variables={"env": env},
                              parameters={"config_path": str(config), "trigger": "manual"})
    log = tmp_path / "worker.log"
    with log.open("w") as output:
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL, "--limit", "1"], cwd=tmp_path,
                                  env=os.environ.copy(), stdin=subprocess.DEVNULL, stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while True:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(flow_run.id).state
            if state is not None and state.is_final():
                break
            assert time.monotonic() < deadline, f"the run is still {state}:\n{log.read_text()[-3000:]}"
            time.sleep(2)
    finally:
        stop_group(worker)
    assert state.is_completed(), f"{state}:\n{log.read_text()[-3000:]}"
    store = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    [run] = [r for r in store.search_runs([store.get_experiment_by_name(MODEL).experiment_id])
             if r.data.tags.get("prefect_flow_run_id") == str(flow_run.id)]
    assert run.data.params["runtime.device"] == "cpu"  # the config says nothing: its default is auto
    assert len(store.search_model_versions(f"name = '{MODEL}'")) == 1


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
