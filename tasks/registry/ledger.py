"""The test ledger: what every evaluation on a test split read, so no test example is ever
counted as untouched after a choice was made with it.

A test example that earlier evaluations have used has informed choices and is no longer
untouched. The ledger (an MLflow experiment, one run per evaluation with the ids it read) counts
that exposure per example, within one split history of one registry model, so growing the data
does not reset the count.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from tasks.core.atomic import exclusive_lock
from tasks.decisions.gate import Exposure
from tasks.registry.lineage import SPLIT_FOLDER
from tasks.registry.tracking import (
    end_run,
    experiment_id,
    internal_experiment_note,
    log_scores,
    log_text,
    read_json_artifact,
    start_run,
)

LEDGER_EXPERIMENT = "transferflow-test-ledger"
READ_IDS_ARTIFACT = "test_ids.json"
LEDGER_DESCRIPTION = internal_experiment_note(
    "the test ledger. One run per evaluation on a test split, with the test ids it read "
    f"(`{READ_IDS_ARTIFACT}`), so the gate knows how often each test example has already informed a choice.")


def record_test_evaluation(client: MlflowClient, workdir: Path, model_name: str, split_history: str,
                           test_ids: list[str], tags: dict[str, str], metric_key: str,
                           value: float, repeats_runs: tuple[str, ...] = ()) -> tuple[dict[str, int], int]:
    """Add this evaluation (and the ids it read) to the ledger. Returns, per test id, how many
    earlier evaluations of this model and split history read it, and how many earlier
    evaluations read any of them.

    `repeats_runs`: the killed runs a resumed run continues. A record of theirs for the same
    checkpoint (`tags["checkpoint_sha256"]`) and the same ids is this very evaluation, taken again
    after a kill in step 7: it is neither counted as an earlier one nor recorded a second time.

    Counting and recording happen under one exclusive file lock in the workdir, so concurrent
    runs on this machine cannot both count the same prior evaluations. (Run ids and client-side
    start times give no commit order, so record-then-count alone is not exact.)"""
    ledger = experiment_id(client, LEDGER_EXPERIMENT, workdir, LEDGER_DESCRIPTION)
    wanted = set(test_ids)
    with exclusive_lock(workdir / "locks" / "test-ledger.lock"):
        uses: Counter[str] = Counter()
        touching = 0
        repeated: str | None = None
        for run in _all_runs(client, ledger, f"tags.registered_model = '{model_name}' "
                                             f"and tags.split_history = '{split_history}'"):
            read = wanted & _ids_read_by(client, run, wanted)
            if repeated is None and _same_evaluation(run, tags, repeats_runs) and read == wanted:
                repeated = run.info.run_id
                continue
            uses.update(read)
            touching += bool(read)
        if repeated is not None:
            print(f"Test ledger: record {repeated} is this evaluation, taken by the killed run before the resume "
                  "(same checkpoint, same test ids): not recorded or counted twice")
            return {example_id: uses[example_id] for example_id in test_ids}, touching
        run_id = start_run(client, ledger, f"{model_name}-test-{split_history[:8]}", tags={
            **tags, "registered_model": model_name, "split_history": split_history, "metric": metric_key,
            "test_ids": "pending"})
        try:
            log_text(client, run_id, json.dumps(sorted(wanted)), READ_IDS_ARTIFACT)
        except BaseException:
            end_run(client, run_id, succeeded=False)  # later counts read it as the whole test split
            raise
        client.set_tag(run_id, "test_ids", "logged")
    log_scores(client, run_id, {metric_key: value})
    end_run(client, run_id, succeeded=True)
    return {example_id: uses[example_id] for example_id in test_ids}, touching


def _same_evaluation(record: Run, tags: dict[str, str], repeats_runs: tuple[str, ...]) -> bool:
    recorded = record.data.tags
    return (recorded.get("source_run_id") in repeats_runs and recorded.get("test_ids") == "logged"
            and bool(tags.get("checkpoint_sha256")) and recorded.get("checkpoint_sha256") == tags["checkpoint_sha256"])


def exposure_of(prior_uses: dict[str, int], prior_evaluations: int) -> Exposure:
    seen = [n for n in prior_uses.values() if n]
    return Exposure(len(prior_uses), len(seen), prior_evaluations, max(seen, default=0))


def _ids_read_by(client: MlflowClient, record: Run, wanted: set[str]) -> set[str]:
    """The test ids an earlier evaluation read. A record whose ids never landed (the upload failed,
    or the process died right after creating it) is reported and counted as having read its flow
    run's whole logged test split, or, when that cannot be read either, every id this evaluation
    reads: exposure may be over-counted, never under-counted, and one broken record never stops
    the runs after it."""
    ids = read_json_artifact(client, record.info.run_id, READ_IDS_ARTIFACT)
    if isinstance(ids, list):
        return set(map(str, ids))
    logged = _logged_test_split(client, record.data.tags.get("source_run_id", ""))
    counted = logged if logged is not None else wanted
    print(f"WARNING test ledger record {record.info.run_id} has no readable {READ_IDS_ARTIFACT}: counted as having "
          + ("read its run's whole logged test split" if counted is not wanted else "read every test example here"))
    return counted


def _logged_test_split(client: MlflowClient, run_id: str) -> set[str] | None:
    """The test ids of the split manifest a flow run logged (the test split never changes with
    policy drops, so any manifest there names the same ids), or None."""
    try:
        files = client.list_artifacts(run_id, SPLIT_FOLDER) if run_id else []
    except (MlflowException, OSError):
        return None
    for file in files:
        manifest = None if file.is_dir else read_json_artifact(client, run_id, file.path)
        test = manifest.get("splits", {}).get("test") if isinstance(manifest, dict) else None
        if isinstance(test, list):
            return set(map(str, test))
    return None


def _all_runs(client: MlflowClient, experiment: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    page_token = None
    while True:
        page = client.search_runs([experiment], filter_string=filter_string, max_results=1000,
                                  page_token=page_token)
        runs += page
        page_token = page.token
        if not page_token:
            return runs
