"""On Prefect's real engine: a flow run bears its `<model>-<trigger>-<UTC stamp>` name from its
first log line (no random name anywhere), and the runs of a step called several times are told
apart by their stage (`6 fine-tuning finetune-2`), inside a resume chain too; a step called once
bears its own name, without Prefect's random suffix.

The stand-in tasks take the real steps' names and run-name settings, with bodies that train nothing."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from prefect import Task, flow, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.runtime import flow_run

from tasks.steps.learn import StagePlan, fine_tune_stage, train_baseline
from tasks.steps.resume import ResumeChain, cached, resuming
from tasks.steps.select import select_on_validation
from tasks.steps.step import flow_run_name

CONFIG = """
task: Tell ants from bees.
metric: {name: accuracy, target: 0.9}
data: {kind: image_folder, path: data}
model: {family: torchvision, name: mobilenet_v2}
registry: {model_name: insects}
"""


def stage(spec, dataset, split, start, plan, tracking, contract) -> str:
    return plan.name


def baseline(spec, dataset, split, tracking, start, contract, class_weights=False, prefix="") -> str:
    return prefix


def select(spec, stages, decisions, tracking, contract, classes) -> str:
    return "selected"


def like(real: Task, body) -> Task:
    """`body` as a task named as the real step is, its runs named as the real step's are."""
    return Task(body, name=real.name, task_run_name=real.task_run_name)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@flow(flow_run_name=flow_run_name(), log_prints=True)
def tiny_training(config_path: str, data_path: str | None = None, trigger: str = "manual") -> str:
    print("first step")
    fine_tuning, baselines = like(fine_tune_stage, stage), like(train_baseline, baseline)
    cached(baselines)(None, None, None, None, None, None)
    cached(like(select_on_validation, select))(None, None, None, None, None, None)
    for plan in (StagePlan(1, "finetune-1", 1), StagePlan(1, "finetune-1-retry", 1, regularized=True),
                 StagePlan(2, "finetune-2", 2)):
        cached(fine_tuning)(None, None, None, None, plan, None, None)
    cached(baselines)(None, None, None, None, None, None, class_weights=True, prefix="efficientnet_lite0-")
    return str(flow_run.id)


def test_flow_and_task_runs_are_named_from_the_start_and_per_stage(tmp_path: Path):
    (tmp_path / "data" / "ants").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text(CONFIG)
    lines, logger = Lines(), logging.getLogger("prefect.flow_runs")
    logger.addHandler(lines)
    chain = ResumeChain("chain", tmp_path / "chain")
    try:
        with resuming(chain):  # the training flow's steps run `cached`: the names must survive with_options
            flow_run_id = tiny_training(str(tmp_path / "config.yaml"), trigger="schedule")
    finally:
        logger.removeHandler(lines)
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(flow_run_id).name
        deadline, task_names = time.monotonic() + 20, []
        while time.monotonic() < deadline:  # task runs reach the API through events
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            task_names = sorted(run.name for run in runs)
            if len(task_names) == 6 and not any(re.search(r"-[0-9a-f]{3}$", n) for n in task_names):
                break
            time.sleep(0.5)
    assert re.fullmatch(r"insects-schedule-\d{4}-\d\d-\d\d-\d{6}", name), name
    messages = [record.getMessage() for record in lines.records]
    assert messages[0] == f"Beginning flow run {name!r} for flow 'tiny-training'", messages[:3]
    assert all(record.flow_run_name == name for record in lines.records if hasattr(record, "flow_run_name"))
    assert task_names == ["5 feature-extraction baseline", "5 feature-extraction efficientnet_lite0-baseline-weighted",
                          "6 fine-tuning finetune-1", "6 fine-tuning finetune-1-retry", "6 fine-tuning finetune-2",
                          "select on validation"]  # a step called once: its own name, no random suffix


def test_a_config_that_does_not_load_names_the_run_after_its_file(tmp_path: Path):
    @flow(flow_run_name=flow_run_name("drift-check"))
    def broken(config_path: str) -> str:
        return str(flow_run.name)

    assert broken(str(tmp_path / "missing.yaml")).startswith("missing-drift-check-")
