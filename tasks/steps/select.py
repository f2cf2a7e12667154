"""Recipe step 6's end as Prefect tasks: the model selected on validation only (never the test
split), and the decision log of every stage written where a reviewer reads it (MLflow, Prefect)."""

from __future__ import annotations

import json
from typing import Any

from tasks.config.spec import OneModelSpec, Spec
from tasks.decisions.log import Decisions, decisions_markdown
from tasks.steps.refs import StageResult, TrackingRef
from tasks.steps.step import artifact_key, figure_markdown, publish_markdown, step
from tasks.training.metrics import Contract

SELECTED_TAG = "selected"  # on the stage run selection chose


@step("select on validation")
def select_on_validation(spec: Spec, stages: list[StageResult], decisions: Decisions, tracking: TrackingRef,
                         contract: Contract, classes: list[str]) -> StageResult:
    """The best stage on validation by the contract (guard first, then the metric; ties keep the
    earlier, simpler model). The curves the choice rests on, and the selected model's per-class
    scores, are logged with it."""
    from tasks.registry.tracking import log_figure
    from tasks.reports.plots import learning_curves_figure, per_class_figure

    selected = choose_stage(stages, contract)
    client = tracking.client
    client.set_tag(selected.run_id, SELECTED_TAG, "true")  # the stage run the registered model comes from
    actions = {entry["stage"]: entry["action"] for entry in decisions.entries}
    target = spec.metric.target
    log_figure(client, tracking.run_id, learning_curves_figure(
        [(s.name, s.history) for s in stages], actions, spec.metric.key, stages[0].val_value, target,
        {s.name: s.best_epoch for s in stages}), "plots/learning_curves.png")
    log_figure(client, tracking.run_id, per_class_figure(
        selected.val_scores, classes, spec.metric.key, target, f"validation scores per class ({selected.name})"),
        "plots/per_class_validation.png")
    print(f"Selected {selected.name} (validation {spec.metric.key} {selected.val_value:.4f})")
    return selected


def choose_stage(stages: list[StageResult], contract: Contract) -> StageResult:
    """The baseline unless a later stage beats the best so far on validation (a result keeping the
    guard beats one that breaks it; ties keep the earlier, simpler model). Never the test split."""
    selected = stages[0]
    for stage in stages[1:]:
        if stage.keep and contract.better(stage.val_scores, selected.val_scores):
            selected = stage
    return selected


@step("write decision log")
def write_decision_log(spec: OneModelSpec, entries: list[dict[str, Any]], selected: str, tracking: TrackingRef) -> str:
    from tasks.registry.tracking import log_text

    client = tracking.client
    markdown = decisions_markdown(entries, spec.metric.key, selected)
    log_text(client, tracking.run_id, json.dumps(entries, indent=2), "decisions.json")
    log_text(client, tracking.run_id, markdown, "decisions.md")
    figures = [figure_markdown(tracking, "plots/learning_curves.png", "Learning curves of every stage"),
               figure_markdown(tracking, "plots/per_class_validation.png", "Per-class validation scores")]
    publish_markdown(artifact_key(spec.registry.model_name, "decisions"),
                     markdown + "\n## Plots (MLflow run `" + tracking.run_id + "`)\n\n" + "\n\n".join(figures) + "\n",
                     "What the validation curves said after each stage, and what was done")
    return markdown
