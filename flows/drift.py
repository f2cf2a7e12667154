"""The drift check as a Prefect flow: a batch of new unlabeled inputs, embedded by the champion's
own backbone, tested against the reference stored when it was promoted. On drift the batch is kept
for labeling and `transferflow.drift.detected` is emitted (a retrain deployment can listen)."""

from __future__ import annotations

from dataclasses import replace

from prefect import flow

from tasks.monitoring.drift_report import DriftReport
from tasks.monitoring.kept_batches import batch_digest
from tasks.steps.monitor import (
    check_for_drift,
    earlier_check,
    find_champion,
    keep_incoming_batch,
    publish_drift_report,
    read_incoming_batch,
)
from tasks.steps.step import flow_run_name, label_flow_run, tag_flow_run
from tasks.steps.validate import validate_config


@flow(name="drift-check", flow_run_name=flow_run_name("drift-check"), log_prints=True)
def drift_check(config_path: str, incoming: str, trigger: str = "manual",
                text_column: str | None = None) -> DriftReport:
    """`text_column` defaults to the config's data.text_column (CSV batches only)."""
    spec = validate_config(config_path)
    label_flow_run(spec.registry.model_name, "drift-check")
    tag_flow_run(f"started-by:{trigger}")
    batch = read_incoming_batch(spec, incoming, text_column)          # checked whole before anything else
    champion = find_champion(spec)
    digest = batch_digest(batch)
    earlier = earlier_check(spec, champion, digest)                   # the same batch, the same champion
    if earlier is not None:
        tag_flow_run("drift:already-checked")
        print(earlier.summary())
        return earlier
    report = check_for_drift(spec, champion, batch, digest)           # MMD permutation test on embeddings
    if report.drift:
        report = replace(report, stored_batch=keep_incoming_batch(spec, batch, report, trigger))
    return publish_drift_report(spec, config_path, report, trigger)  # MLflow, Prefect artifact, event
