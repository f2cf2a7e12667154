"""The test ledger: what every evaluation on a test split read, so no test example is ever
counted as untouched after a choice was made with it.

A test example that earlier evaluations have used has informed choices and is no longer
untouched. The ledger (an MLflow experiment, one run per evaluation with the ids it read) counts
that exposure per example, within one split history of one registry model, so growing the data
does not reset the count.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from tasks.core.atomic import exclusive_lock
from tasks.decisions.gate import Exposure
from tasks.registry.tracking import end_run, experiment_id, log_scores, log_text, start_run

LEDGER_EXPERIMENT = "transferflow-test-ledger"
READ_IDS_ARTIFACT = "test_ids.json"


def record_test_evaluation(client: MlflowClient, workdir: Path, model_name: str, split_history: str,
                           test_ids: list[str], tags: dict[str, str], metric_key: str,
                           value: float) -> tuple[dict[str, int], int]:
    """Add this evaluation (and the ids it read) to the ledger. Returns, per test id, how many
    earlier evaluations of this model and split history read it, and how many earlier
    evaluations read any of them.

    Counting and recording happen under one exclusive file lock in the workdir, so concurrent
    runs on this machine cannot both count the same prior evaluations. (Run ids and client-side
    start times give no commit order, so record-then-count alone is not exact.)"""
    ledger = experiment_id(client, LEDGER_EXPERIMENT, workdir)
    wanted = set(test_ids)
    with exclusive_lock(workdir / "locks" / "test-ledger.lock"):
        uses: Counter[str] = Counter()
        touching = 0
        for run in _all_runs(client, ledger, f"tags.registered_model = '{model_name}' "
                                             f"and tags.split_history = '{split_history}'"):
            read = wanted & set(_read_ids(client, run.info.run_id))
            uses.update(read)
            touching += bool(read)
        run_id = start_run(client, ledger, f"{model_name}-test-{split_history[:8]}", tags={
            **tags, "registered_model": model_name, "split_history": split_history, "metric": metric_key})
        log_text(client, run_id, json.dumps(sorted(wanted)), READ_IDS_ARTIFACT)
    log_scores(client, run_id, {metric_key: value})
    end_run(client, run_id, succeeded=True)
    return {example_id: uses[example_id] for example_id in test_ids}, touching


def exposure_of(prior_uses: dict[str, int], prior_evaluations: int) -> Exposure:
    seen = [n for n in prior_uses.values() if n]
    return Exposure(len(prior_uses), len(seen), prior_evaluations, max(seen, default=0))




def _read_ids(client: MlflowClient, run_id: str) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        return json.loads(Path(client.download_artifacts(run_id, READ_IDS_ARTIFACT, folder)).read_text())




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
