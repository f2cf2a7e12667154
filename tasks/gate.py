"""The gate: one test evaluation, a ledger of every evaluation of a test set, and the decision.

A test set that has been evaluated many times has guided choices and is no longer untouched:
the ledger (an MLflow experiment keyed by the test fingerprint) makes that count visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from tasks.atomic import exclusive_lock
from tasks.metrics import meets_target
from tasks.spec import MetricSpec
from tasks.tracking import end_run, experiment_id, log_scores, start_run

LEDGER_EXPERIMENT = "transferflow-test-ledger"


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    metric: str
    test_value: float
    target: float
    prior_evaluations: int

    @property
    def verdict(self) -> str:
        return "promoted" if self.passed else "rejected"

    @property
    def reason(self) -> str:
        relation = ">=" if self.passed else "<"
        text = f"test {self.metric} = {self.test_value:.4f} {relation} target {self.target:g}"
        if self.prior_evaluations:
            text += (f"; WARNING: this test set was evaluated {self.prior_evaluations} time(s) before, so it "
                     "has informed earlier choices: treat it as a validation set and collect fresh test data")
        else:
            text += "; first evaluation of this test set"
        return text


def record_test_evaluation(client: MlflowClient, workdir: Path, test_fingerprint: str, data_fingerprint: str,
                           model_name: str, source_run_id: str, metric_key: str, value: float) -> int:
    """Add this evaluation to the ledger; returns how many evaluations of this test set came before.

    Counting and recording happen under one exclusive file lock in the workdir, so concurrent
    runs on this machine cannot both count the same prior evaluations. (Run ids and client-side
    start times give no commit order, so record-then-count alone is not exact.)"""
    ledger = experiment_id(client, LEDGER_EXPERIMENT, workdir)
    with exclusive_lock(workdir / "locks" / "test-ledger.lock"):
        prior = len(_all_runs(client, ledger, f"tags.test_fingerprint = '{test_fingerprint}'"))
        run_id = start_run(client, ledger, f"{model_name}-test-{test_fingerprint[:8]}", tags={
            "test_fingerprint": test_fingerprint, "data_fingerprint": data_fingerprint,
            "registered_model": model_name, "source_run_id": source_run_id, "metric": metric_key,
        })
    log_scores(client, run_id, {metric_key: value})
    end_run(client, run_id, succeeded=True)
    return prior


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


def decide(test_value: float, metric: MetricSpec, prior_evaluations: int) -> GateDecision:
    return GateDecision(meets_target(test_value, metric), metric.key, test_value, metric.target, prior_evaluations)
