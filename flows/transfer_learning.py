"""The recipe as a Prefect flow: each step is one task from `tasks/`; this file only orders them.

Runs on the local ephemeral engine when PREFECT_API_URL is unset, against a real Prefect server
(and its UI) when it is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from tasks.learn import StageResult, fine_tune, select_on_validation, train_baseline
from tasks.prepare import (QualitySummary, check_label_quality, load_base_model, load_data, split_before_training,
                           start_tracking, validate_config)
from tasks.release import GateOutcome, TestResult, evaluate_once_on_test, gate_and_register, write_model_card
from tasks.spec import Spec
from tasks.split import SplitRef
from tasks.tracking import client_for, end_run


@dataclass(frozen=True)
class RunSummary:
    spec: Spec
    run_id: str
    quality: QualitySummary
    split: SplitRef
    stages: list[StageResult]
    selected: StageResult
    test: TestResult
    outcome: GateOutcome


@flow(name="transfer-learning", log_prints=True)
def transfer_learning(config_path: str, data_path: str | None = None) -> RunSummary:
    spec = validate_config(config_path, data_path)                          # 1. the contract
    tracking = start_tracking(spec, config_path)
    try:
        dataset = load_data(spec)                                           # 2. data + label quality
        quality = check_label_quality(spec, dataset, tracking)
        split = split_before_training(spec, dataset, tracking)              # 3. test quarantined from here
        base_model = load_base_model(spec)                                  # 4. pretrained, offline
        stages = [train_baseline(spec, dataset, split, tracking)]          # 5. frozen baseline, cached
        if not stages[0].meets_target and spec.train.finetune_epochs > 0:
            stages.append(fine_tune(spec, dataset, split, stages[0], tracking))  # 6. unfreeze the last group
        selected = select_on_validation(spec, stages, tracking)
        test = evaluate_once_on_test(spec, dataset, split, selected, tracking)  # 7. test once, gate
        outcome = gate_and_register(spec, dataset, split, selected, test, tracking)
        write_model_card(spec, dataset, quality, split, base_model, stages, selected, test, outcome, tracking)
    except BaseException:
        end_run(client_for(spec.workdir), tracking.run_id, succeeded=False)
        raise
    end_run(client_for(spec.workdir), tracking.run_id, succeeded=True)
    return RunSummary(spec, tracking.run_id, quality, split, stages, selected, test, outcome)


@flow(name="validate-config-and-data", log_prints=True)
def validate_only(config_path: str, data_path: str | None = None) -> tuple[Spec, QualitySummary, SplitRef]:
    """Steps 1-4 without training or tracking: is this config and this data ready to run?"""
    spec = validate_config(config_path, data_path)
    dataset = load_data(spec)
    quality = check_label_quality(spec, dataset, None)
    split = split_before_training(spec, dataset, None)
    load_base_model(spec)
    return spec, quality, split
