"""Which run `--resume` continues, and what it refuses, on a real MLflow store."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tasks.core.errors import TransferflowError
from tasks.registry.resume_chain import (
    CHAIN_TAG,
    HOST_TAG,
    PID_TAG,
    RESUMED_FROM_TAG,
    fill_from_earlier_runs,
    last_resumable_run,
)
from tasks.registry.tracking import client_for, experiment_id, log_params, log_scores, log_text, start_run

CONFIG = Path("config.yaml")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = client_for(tmp_path)
    return client, experiment_id(client, "m", tmp_path)


def dead_pid() -> str:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return str(process.pid)


def parent(client, experiment, chain: str, pid: str, **tags: str) -> str:
    return start_run(client, experiment, "run", tags={CHAIN_TAG: chain, HOST_TAG: socket.gethostname(),
                                                      PID_TAG: pid, **tags})


def test_the_last_killed_run_of_a_kept_chain_is_continued_with_its_whole_chain(store):
    client, experiment = store
    first = parent(client, experiment, "c1", dead_pid())
    client.set_terminated(first, "KILLED")
    second = parent(client, experiment, "c1", dead_pid(), **{RESUMED_FROM_TAG: first})
    killed = last_resumable_run(client, experiment, {"c1"}, CONFIG)
    assert (killed.run_id, killed.chain_id, killed.earlier_runs, killed.status) == (second, "c1", (first, second),
                                                                                     "RUNNING")


def test_nothing_to_resume_is_one_clear_error(store):
    client, experiment = store
    with pytest.raises(TransferflowError, match="found no run to continue in this workdir"):
        last_resumable_run(client, experiment, set(), CONFIG)
    done = parent(client, experiment, "c1", dead_pid())
    client.set_terminated(done, "FINISHED")
    with pytest.raises(TransferflowError, match=f"the last run, {done}, ended FINISHED: there is nothing to resume"):
        last_resumable_run(client, experiment, {"c1"}, CONFIG)
    parent(client, experiment, "c2", dead_pid())  # newer, but its results are not in this workdir
    with pytest.raises(TransferflowError, match="ended FINISHED"):
        last_resumable_run(client, experiment, {"c1"}, CONFIG)


def test_a_run_whose_process_is_alive_here_is_not_resumed(store):
    import os

    client, experiment = store
    alive = parent(client, experiment, "c1", str(os.getpid()))
    with pytest.raises(TransferflowError, match=f"run {alive} is still running \\(PID {os.getpid()}"):
        last_resumable_run(client, experiment, {"c1"}, CONFIG)


def test_filling_copies_only_what_the_resumed_run_lacks_and_never_overwrites(store):
    client, experiment = store
    killed = parent(client, experiment, "c1", dead_pid())
    log_params(client, killed, {"audit_dropped": 3, "shared": "old"})
    log_scores(client, killed, {"leakage_pairs": 2.0})
    log_text(client, killed, "audit", "quality/audit.md")
    log_text(client, killed, "old split", "split/manifest.json")
    resumed = parent(client, experiment, "c1", dead_pid(), **{RESUMED_FROM_TAG: killed})
    log_params(client, resumed, {"shared": "old"})
    log_text(client, resumed, "new split", "split/manifest.json")
    copied = fill_from_earlier_runs(client, resumed, (killed,))
    run = client.get_run(resumed)
    assert run.data.params == {"audit_dropped": "3", "shared": "old"} and run.data.metrics == {"leakage_pairs": 2.0}
    assert copied == {"params": 1, "metrics": 1, "tags": 0, "artifacts": 1}
    with tempfile.TemporaryDirectory() as scratch:
        assert Path(client.download_artifacts(resumed, "quality/audit.md", scratch)).read_text() == "audit"
        assert Path(client.download_artifacts(resumed, "split/manifest.json", scratch)).read_text() == "new split"
    assert run.data.tags[HOST_TAG] and run.data.tags[CHAIN_TAG] == "c1"
    assert fill_from_earlier_runs(client, resumed, (killed,)) == {"params": 0, "metrics": 0, "tags": 0,
                                                                   "artifacts": 0}
