"""The decision log of a run: what the validation curves said after each stage and what was
done about it, as `decisions.json` and a markdown table (MLflow artifacts of the parent run,
and a Prefect artifact), so "why did it stop there?" has a written answer."""

from __future__ import annotations

import json
from typing import Any

from tasks.config.spec import Spec
from tasks.prepare import TrackingRef
from tasks.step import artifact_key, publish_markdown, step

DRIVING_NUMBERS = ("best_val_metric", "best_before", "baseline_val_metric", "best_epoch", "epochs", "guard_value")


def decisions_markdown(entries: list[dict[str, Any]], metric_key: str, selected: str | None = None) -> str:
    lines = [f"# Decisions ({metric_key} on validation)", "", "| stage | action | reason | numbers |",
             "| --- | --- | --- | --- |"]
    for entry in entries:
        numbers = ", ".join(f"{key} {value:.4g}" for key, value in entry["numbers"].items() if key in DRIVING_NUMBERS)
        reason = entry["reason"].replace("|", "\\|")
        lines.append(f"| {entry['stage']} | `{entry['action']}` | {reason} | {numbers} |")
    if selected:
        lines += ["", f"Selected on validation: **{selected}** (never chosen with the test split)."]
    return "\n".join(lines) + "\n"


@step("write decision log")
def write_decision_log(spec: Spec, entries: list[dict[str, Any]], selected: str, tracking: TrackingRef) -> str:
    from tasks.registry.tracking import client_for, log_text

    client = client_for(spec.workdir)
    markdown = decisions_markdown(entries, spec.metric.key, selected)
    log_text(client, tracking.run_id, json.dumps(entries, indent=2), "decisions.json")
    log_text(client, tracking.run_id, markdown, "decisions.md")
    artifact_uri = client.get_run(tracking.run_id).info.artifact_uri
    publish_markdown(artifact_key(spec.registry.model_name, "decisions"),
                     markdown + f"\nCurves: `{artifact_uri}/plots/learning_curves.png`, per-class validation "
                                f"scores: `{artifact_uri}/plots/per_class_validation.png` (MLflow run "
                                f"`{tracking.run_id}`).\n",
                     "What the validation curves said after each stage, and what was done")
    return markdown
