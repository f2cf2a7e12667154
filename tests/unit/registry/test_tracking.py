"""What the MLflow UI shows of a run, on a real SQLite store: a nested run lasts as long as its work
(FAILED when the work fails), experiments carry their description in the model-training view, the
internal ledger says what it is, a killed run's open stage run is marked KILLED with it, and a
run's page URL exists only where there is a server to open it on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.registry.ledger import LEDGER_EXPERIMENT, record_test_evaluation
from tasks.registry.resume_chain import KilledRun, mark_killed
from tasks.registry.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING,
    NOTE_TAG,
    child_run,
    describe_run,
    experiment_id,
    run_page_url,
    start_run,
)


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_child_run_is_open_for_exactly_its_work_and_nested_under_its_parent(client, tmp_path):
    experiment = experiment_id(client, "insects", tmp_path)
    parent = start_run(client, experiment, "insects-manual-2026-12-03-065000")
    before = int(time.time() * 1000)
    with child_run(client, experiment, "finetune-1", parent, tags={"stage": "finetune-1"}) as run_id:
        assert client.get_run(run_id).info.status == "RUNNING"  # created when the work starts
        time.sleep(0.6)  # the work
    after = int(time.time() * 1000)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "finetune-1"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["stage"] == "finetune-1"
    assert before <= run.info.start_time < run.info.end_time <= after
    assert run.info.end_time - run.info.start_time >= 600  # its duration covers the work


def test_a_child_run_whose_work_fails_is_failed_and_the_error_passes(client, tmp_path):
    experiment = experiment_id(client, "insects", tmp_path)
    parent = start_run(client, experiment, "parent")
    with pytest.raises(RuntimeError, match="out of memory"), \
            child_run(client, experiment, "finetune-2", parent) as run_id:
        raise RuntimeError("out of memory")
    assert client.get_run(run_id).info.status == "FAILED"
    assert client.get_run(parent).info.status == "RUNNING"  # the parent is the flow's to end


def test_an_experiment_and_a_run_carry_their_descriptions_in_the_model_training_view(client, tmp_path):
    experiment = experiment_id(client, "insects", tmp_path, "Tell ants from bees. Contract: accuracy >= 0.9")
    tags = client.get_experiment(experiment).tags
    assert tags[NOTE_TAG] == "Tell ants from bees. Contract: accuracy >= 0.9"
    assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING == "custom_model_development"
    assert experiment_id(client, "insects", tmp_path, "Tell ants from wasps.") == experiment  # found, redescribed
    assert client.get_experiment(experiment).tags[NOTE_TAG] == "Tell ants from wasps."
    run_id = start_run(client, experiment, "run")
    describe_run(client, run_id, "**Decision: promoted**")
    assert client.get_run(run_id).data.tags[NOTE_TAG] == "**Decision: promoted**"


def test_the_test_ledger_says_it_is_internal_and_what_it_holds(client, tmp_path):
    record_test_evaluation(client, tmp_path, "insects", "history", ["a", "b"], {}, "accuracy", 0.5)
    ledger = client.get_experiment_by_name(LEDGER_EXPERIMENT)
    assert ledger is not None and ledger.lifecycle_stage == "active"  # hiding it would mean deleting it
    assert ledger.tags[NOTE_TAG].startswith("**Internal to transferflow**: the test ledger.")
    assert "test_ids.json" in ledger.tags[NOTE_TAG] and ledger.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_a_killed_runs_open_stage_run_is_killed_with_it_and_finished_stages_stay_finished(client, tmp_path):
    experiment = experiment_id(client, "insects", tmp_path)
    parent = start_run(client, experiment, "killed")
    with child_run(client, experiment, "baseline", parent) as finished:
        pass
    open_stage = start_run(client, experiment, "finetune-1", parent_run_id=parent)  # the kill came mid-stage
    other = start_run(client, experiment, "another flow run's stage", parent_run_id=start_run(client, experiment, "x"))
    mark_killed(client, KilledRun(parent, "chain", (parent,), "RUNNING", ""), experiment)
    status = {run_id: client.get_run(run_id).info.status for run_id in (parent, finished, open_stage, other)}
    assert status == {parent: "KILLED", finished: "FINISHED", open_stage: "KILLED", other: "RUNNING"}


def test_a_run_page_url_only_for_a_tracking_server():
    view = "?workflowType=machine_learning"
    assert run_page_url("http://mlflow.example:5000/", "3", "abc") == f"http://mlflow.example:5000/#/experiments/3/runs/abc{view}"
    assert run_page_url("https://mlflow.example", "3", "abc") == f"https://mlflow.example/#/experiments/3/runs/abc{view}"
    assert run_page_url("sqlite:////work/.transferflow/mlflow.db", "3", "abc") is None
