"""Resume after a kill, end to end with the `transferflow` command on 300 real MNIST digits, each
run on Prefect's local engine in its own process group (so SIGKILL takes the engine's server too).

- Workdir A: one uninterrupted `transferflow run`.
- Workdir B, one resume chain:
  1. `transferflow run`, SIGKILLed (the whole process group) when the fine-tuning stage's second
     epoch checkpoint appears;
  2. `transferflow run --resume`, SIGKILLed inside step 7: once its version is registered, before
     the release finishes;
  3. `transferflow run --resume`, which completes.

Asserted against A, read back from both MLflow stores: the same decisions.json, selected stage,
stage and test metrics to 1e-6; in B exactly one version and one test-ledger record; the killed
runs KILLED in MLflow and Crashed in Prefect; the finished steps taken from Prefect's cache; the
stage resumed after its last epoch; the resumed run holding every param, metric and artifact an
uninterrupted run logs; and the chain's persisted results removed once it completed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.digits import digits_slice
from tests.integration.evidence import version_evidence

pytestmark = pytest.mark.integration
MODEL = "digits-resume"
PER_CLASS = 30
EPOCHS = 4


def config_in(folder: Path, digits: Path) -> Path:
    config = {
        "task": "Recognize the handwritten digit (0-9) in a small grayscale image.",
        "metric": {"name": "macro_f1", "target": 0.99},  # out of reach: the fine-tuning stage runs
        "data": {"kind": "image_folder", "path": str(digits)},
        "model": {"family": "torchvision", "name": "mobilenet_v2", "image_size": 48},
        "split": {"seed": 42},
        "train": {"batch_size": 32, "head_epochs": 5},
        "finetune": {"max_stages": 1, "epochs_per_stage": EPOCHS, "augment": "none",
                     "early_stopping": {"patience": EPOCHS}},
        "registry": {"model_name": MODEL},
        "workdir": str(folder / "work"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "config.yaml"


def start(folder: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """`transferflow run` in its own process group, on the local engine (PREFECT_HOME under `folder`)."""
    from flows.runtime import ALLOCATOR_SETTINGS

    env = {**{k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")},
           **ALLOCATOR_SETTINGS, "PREFECT_HOME": str(folder / "prefect-home")}
    log = folder / f"run-{len(list(folder.glob('run-*.log')))}.log"
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(folder / "config.yaml"), *args],
                                   cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def kill_when(process: subprocess.Popen, ready, what: str, timeout: float = 420) -> None:
    """SIGKILL the process group as soon as `ready()` holds (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the run ended (code {process.returncode}) before {what}")
            if ready():
                os.killpg(process.pid, signal.SIGKILL)
                return
            time.sleep(0.02)
        pytest.fail(f"no {what} within {timeout} s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def finish(process: subprocess.Popen, log: Path) -> tuple[int, str]:
    try:
        code = process.wait(timeout=480)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return code, log.read_text()


def second_epoch_saved(work: Path) -> bool:
    return any((work / "resume").glob("*/*/epochs/*/epoch-0002.pt")) if (work / "resume").exists() else False


def version_registered(work: Path) -> bool:
    """A version row in the registry (read without waiting: a locked database reads as not yet)."""
    database = work / "mlflow.db"
    if not database.exists():
        return False
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.05) as connection:
            return bool(connection.execute("SELECT count(*) FROM model_versions WHERE name = ?",
                                           (MODEL,)).fetchone()[0])
    except sqlite3.OperationalError:
        return False


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    digits = digits_slice(folder, PER_CLASS)
    config_in(folder / "a", digits)
    config_in(folder / "b", digits)
    started = time.monotonic()
    whole = finish(*start(folder / "a"))
    whole_seconds = time.monotonic() - started
    first, first_log = start(folder / "b")
    kill_when(first, lambda: second_epoch_saved(folder / "b" / "work"), "the second epoch checkpoint")
    second, second_log = start(folder / "b", "--resume")
    kill_when(second, lambda: version_registered(folder / "b" / "work"), "a registered version (step 7)")
    started = time.monotonic()
    third = finish(*start(folder / "b", "--resume"))
    print(f"resume after the step-7 kill: {time.monotonic() - started:.1f} s; uninterrupted run: {whole_seconds:.1f} s")
    return folder, whole, (first_log.read_text(), second_log.read_text()), third


def client_of(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder / 'work' / 'mlflow.db'}")


def parent_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(MODEL)
    runs = client.search_runs([experiment.experiment_id], "tags.`transferflow.resume_chain` != ''",
                              order_by=["attributes.start_time ASC"])
    return [run for run in runs if "mlflow.parentRunId" not in run.data.tags]


def artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as downloads:
        return Path(client.download_artifacts(run_id, path, downloads)).read_text()


def test_the_chain_completes_with_one_version_and_one_ledger_record(chain):
    folder, whole, _, (code, output) = chain
    assert whole[0] == 0, whole[1][-5000:]
    assert code == 0, output[-5000:]
    client = client_of(folder / "b")
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 1, [v.version for v in versions]
    _, half, resumed = parent_runs(client)
    assert versions[0].run_id == resumed.info.run_id
    assert "Removed version 1 of digits-resume: the killed run registered it but never finished its release" in output
    ledger = client.get_experiment_by_name("transferflow-test-ledger")
    records = client.search_runs([ledger.experiment_id], f"tags.registered_model = '{MODEL}'")
    assert [r.data.tags["source_run_id"] for r in records] == [half.info.run_id]
    assert "not recorded or counted twice" in output


def test_the_killed_runs_are_marked_and_the_chain_is_linked(chain):
    folder, _, _, (code, output) = chain
    assert code == 0, output[-5000:]
    killed, half, resumed = parent_runs(client_of(folder / "b"))
    assert [r.info.status for r in (killed, half, resumed)] == ["KILLED", "KILLED", "FINISHED"]
    assert half.data.tags["resumed_from"] == killed.info.run_id
    assert resumed.data.tags["resumed_from"] == half.info.run_id
    assert len({r.data.tags["transferflow.resume_chain"] for r in (killed, half, resumed)}) == 1
    with sqlite3.connect(folder / "b" / "prefect-home" / "prefect.db") as prefect_db:
        for run in (killed, half):
            flow_run = run.data.tags["prefect_flow_run_id"]
            state = prefect_db.execute("SELECT state_type FROM flow_run WHERE id = ?", (flow_run,)).fetchone()
            assert state == ("CRASHED",), (flow_run, state)


def test_the_resumed_runs_took_finished_steps_from_the_cache_and_the_stage_from_its_last_epoch(chain):
    folder, _, (first_output, second_output), (code, output) = chain
    assert code == 0, output[-5000:]
    resumed_epoch = re.search(r"finetune-1: resumed after epoch (\d+)", second_output)
    assert resumed_epoch and 2 <= int(resumed_epoch.group(1)) < EPOCHS, second_output[-5000:]
    assert "finetune-1: resumed after epoch" not in first_output
    for step in ("2b check label quality", "3b audit labels", "3c check leakage", "4 load base model",
                 "5 feature-extraction baseline"):
        assert re.search(rf"Task run '{re.escape(step)}[^']*' - Finished in state Cached", second_output), step
    for step in ("6 fine-tuning finetune-1", "select on validation"):  # finished by the second run, cached in the third
        assert re.search(rf"Task run '{re.escape(step)}[^']*' - Finished in state Cached", output), step
    assert not re.search(r"Task run '(3 split before training|7a evaluate once on the test set)[^']*' - Finished in "
                         "state Cached", output)  # never cached
    assert not (folder / "b" / "work" / "resume").exists() or not any((folder / "b" / "work" / "resume").glob("*/*"))


def test_the_same_decisions_stage_and_metrics_as_an_uninterrupted_run(chain):
    folder, (whole_code, whole_output), _, (code, output) = chain
    assert whole_code == 0 and code == 0, (whole_output + output)[-5000:]
    [uninterrupted] = parent_runs(client_of(folder / "a"))
    resumed = parent_runs(client_of(folder / "b"))[-1]
    a, b = client_of(folder / "a"), client_of(folder / "b")
    assert json.loads(artifact_text(b, resumed.info.run_id, "decisions.json")) == json.loads(
        artifact_text(a, uninterrupted.info.run_id, "decisions.json"))
    assert version_evidence(b, b.search_model_versions(f"name = '{MODEL}'")[0])[
        "selected_stage"] == version_evidence(a, a.get_model_version(MODEL, "1"))["selected_stage"]
    tested = {k: v for k, v in uninterrupted.data.metrics.items() if k.startswith("test_")}
    assert tested and {k: resumed.data.metrics[k] for k in tested} == pytest.approx(tested, abs=1e-6)
    for name in ("baseline", "finetune-1"):
        ours = b.search_runs([resumed.info.experiment_id], f"tags.stage = '{name}'")
        theirs = a.search_runs([uninterrupted.info.experiment_id], f"tags.stage = '{name}'")
        assert len(theirs) == 1 and ours, name
        best = {k: v for k, v in theirs[0].data.metrics.items() if k.startswith("best_val_")}
        assert {k: ours[0].data.metrics[k] for k in best} == pytest.approx(best, abs=1e-6), name


def shape(path: str) -> str:
    """An artifact path less what differs between two workdirs: the GX validation time, the split history id."""
    return re.sub(r"^split/[0-9a-f]{8}-", "split/<history>-", re.sub(r"\d{8}T\d{6}\.\d+Z", "<time>", path))


def test_the_resumed_run_holds_what_an_uninterrupted_run_logs(chain):
    from tasks.registry.resume_chain import _artifact_files

    folder, _, _, (code, output) = chain
    assert code == 0, output[-5000:]
    [uninterrupted] = parent_runs(client_of(folder / "a"))
    resumed = parent_runs(client_of(folder / "b"))[-1]
    assert set(uninterrupted.data.params) <= set(resumed.data.params)
    assert set(uninterrupted.data.metrics) <= set(resumed.data.metrics)
    whole_files = {shape(path) for path in _artifact_files(client_of(folder / "a"), uninterrupted.info.run_id)}
    resumed_files = {shape(path) for path in _artifact_files(client_of(folder / "b"), resumed.info.run_id)}
    assert len(whole_files) > 20 and whole_files - resumed_files == set()
    assert "Filled from the killed run(s)" in output
