"""The gate: one test evaluation, a ledger of what every evaluation read, and the decision.

A test example that earlier evaluations have used has informed choices and is no longer
untouched. The ledger (an MLflow experiment, one run per evaluation with the ids it read) counts
that exposure per example, within one split history of one registry model, so growing the data
does not reset the count: the gate reports how much of its test split is fresh, and the metric
on the fresh part alone when there is enough of it.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run

from tasks.champion import ChampionComparison
from tasks.config.spec import MetricSpec
from tasks.core.atomic import exclusive_lock
from tasks.tracking import end_run, experiment_id, log_scores, log_text, start_run
from tasks.training.metrics import Guard, classification_metrics, contract_value, meets_target

LEDGER_EXPERIMENT = "transferflow-test-ledger"
READ_IDS_ARTIFACT = "test_ids.json"


@dataclass(frozen=True)
class Exposure:
    """How much of this run's test split earlier evaluations already read."""

    n_test: int
    seen_before: int        # test examples at least one earlier evaluation read
    prior_evaluations: int  # earlier evaluations that read any of them
    max_prior_uses: int     # the most times one of them was read before

    @property
    def fresh(self) -> int:
        return self.n_test - self.seen_before

    def describe(self) -> str:
        if not self.seen_before:
            return f"all {self.n_test} test examples are fresh (no earlier evaluation read them)"
        return (f"{self.seen_before} of {self.n_test} test examples were used by {self.prior_evaluations} earlier "
                f"evaluation(s), up to {self.max_prior_uses} time(s) each; {self.fresh} are fresh")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    metric: str
    test_value: float
    target: float
    exposure: Exposure
    fresh_value: float | None  # the metric on the fresh test examples, when there are enough
    min_fresh: int
    champion: ChampionComparison
    max_regression: float
    guard: Guard | None = None      # the floor on the complementary score of a recall/precision contract
    guard_value: float | None = None  # that score on the test split

    @property
    def verdict(self) -> str:
        return "promoted" if self.passed else "rejected"

    @property
    def guard_holds(self) -> bool:
        return self.guard is None or (self.guard_value is not None and self.guard_value >= self.guard.floor)

    @property
    def reason(self) -> str:
        relation = ">=" if self.test_value >= self.target else "<"
        text = f"test {self.metric} = {self.test_value:.4f} {relation} target {self.target:g}; "
        if self.guard is not None:
            verdict = "holds" if self.guard_holds else "BROKEN: the contract is met by answering the class too often"
            text += f"guard {self.guard.describe()}: test {self.guard.key} = {self.guard_value:.4f}, {verdict}; "
        text += f"{self.champion.describe(self.test_value, self.max_regression)}; {self.exposure.describe()}"
        if self.exposure.seen_before and self.fresh_value is not None:
            text += f"; on the {self.exposure.fresh} fresh examples alone: {self.fresh_value:.4f}"
        elif self.exposure.seen_before and self.exposure.fresh:
            text += f" (too few for a fresh-only metric: gate.min_fresh_test is {self.min_fresh})"
        if self.exposure.seen_before == self.exposure.n_test:
            text += ("; WARNING: every test example has informed earlier choices: treat this test split as a "
                     "validation set and add fresh labeled data")
        return text


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


def fresh_part_metric(y_true: np.ndarray, y_pred: np.ndarray, prior_uses: list[int], classes: list[str],
                      metric: MetricSpec, min_fresh: int) -> float | None:
    """The declared metric on the test examples no earlier evaluation read: worth reporting only
    when some were read before and enough are fresh to say something."""
    fresh = np.array(prior_uses) == 0
    if fresh.all() or fresh.sum() < min_fresh:
        return None
    return contract_value(classification_metrics(y_true[fresh], y_pred[fresh], classes), metric)


def _read_ids(client: MlflowClient, run_id: str) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        return json.loads(Path(client.download_artifacts(run_id, READ_IDS_ARTIFACT, folder)).read_text())


def decide(test_value: float, metric: MetricSpec, exposure: Exposure, fresh_value: float | None, min_fresh: int,
           champion: ChampionComparison, max_regression: float, guard: Guard | None = None,
           guard_value: float | None = None) -> GateDecision:
    """Pass when the whole test split meets the target, keeps the guard (`guard_value`, the guarded
    score on test, >= its floor) and the challenger does not trail the champion by more than
    `max_regression` there; exposure and the fresh-only metric are evidence beside it."""
    if guard is not None and guard_value is None:
        raise ValueError(f"guard {guard.key} given without its test value")
    decision = GateDecision(False, metric.key, test_value, metric.target, exposure, fresh_value, min_fresh,
                            champion, max_regression, guard, guard_value)
    passed = meets_target(test_value, metric) and decision.guard_holds and champion.allows(test_value, max_regression)
    return replace(decision, passed=passed)


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
