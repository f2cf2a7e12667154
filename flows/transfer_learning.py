"""The recipe as a Prefect flow: each step is one task from `tasks/`; this file only orders them.

Runs on the local ephemeral engine when PREFECT_API_URL is unset, against a real Prefect server
(and its UI) when it is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prefect import flow

from tasks.decision_log import write_decision_log
from tasks.learn import (
    StageResult,
    contract_for,
    gradual_unfreezing,
    select_on_validation,
    starting_point,
    train_baseline,
)
from tasks.model_limits import retrain_limit
from tasks.monitor import store_drift_reference
from tasks.prepare import (
    Prepared,
    QualitySummary,
    UnchangedData,
    prepare,
    tracked_flow_run,
    unchanged_since_champion,
    validate_config,
)
from tasks.release import (
    GateOutcome,
    TestResult,
    evaluate_once_on_test,
    gate_and_register,
    promotion_lock,
    set_operating_point,
    write_model_card,
)
from tasks.spec import Spec
from tasks.split import SplitRef
from tasks.step import label_flow_run

Trigger = Literal["manual", "schedule", "drift"]  # what started a run: its name and tags say so


@dataclass(frozen=True)
class RunSummary:
    spec: Spec
    run_id: str
    prepared: Prepared
    stages: list[StageResult]
    decisions: list[dict[str, Any]]
    selected: StageResult
    test: TestResult
    outcome: GateOutcome

    @property
    def quality(self) -> QualitySummary:
        return self.prepared.quality

    @property
    def split(self) -> SplitRef:
        return self.prepared.split


@flow(name="transfer-learning", log_prints=True)
def transfer_learning(config_path: str, data_path: str | None = None,
                      trigger: Trigger = "manual") -> RunSummary | UnchangedData:
    spec = validate_config(config_path, data_path)                            # 1. the contract
    label_flow_run(spec.registry.model_name, trigger)
    with retrain_limit(spec.registry.model_name), tracked_flow_run(spec, config_path) as tracking:
        prepared = prepare(spec, tracking)                                    # 2-4. data, audit, split, model
        dataset, split = prepared.dataset, prepared.split
        unchanged = unchanged_since_champion(spec, dataset, tracking, trigger)
        if unchanged:                                                         # a retrain with nothing new
            return unchanged
        start = starting_point(spec, tracking)                                # pretrained, or the champion's
        contract = contract_for(spec, dataset, split)                        # the metric and its guard
        baseline = train_baseline(spec, dataset, split, tracking, start, contract)  # 5. frozen, cached
        stages, decisions = gradual_unfreezing(spec, dataset, split, baseline, tracking, start, contract)  # 6.
        selected = select_on_validation(spec, stages, decisions, tracking, contract, list(dataset.classes))
        write_decision_log(spec, decisions.entries, selected.name, tracking)
        selected = set_operating_point(spec, dataset, split, selected, tracking)  # per-class contracts
        with promotion_lock(spec):                                            # 7. test once, gate
            test = evaluate_once_on_test(spec, dataset, split, selected, tracking)
            outcome = gate_and_register(spec, dataset, split, selected, test, tracking)
        write_model_card(spec, prepared, stages, selected, test, outcome, tracking, decisions.entries)
        store_drift_reference(spec, dataset, split, selected, outcome, tracking)  # 7d. drift reference
    return RunSummary(spec, tracking.run_id, prepared, stages, decisions.entries, selected, test, outcome)


@flow(name="validate-config-and-data", log_prints=True)
def validate_only(config_path: str, data_path: str | None = None) -> tuple[Spec, Prepared]:
    """Steps 1-4 without training or tracking: is this config and this data ready to run?"""
    spec = validate_config(config_path, data_path)
    return spec, prepare(spec, None)
