"""Monitoring steps as Prefect tasks: whether a scheduled or drift-triggered retrain has anything new
to learn from, the drift reference stored when a version is promoted (step 7d), and the drift
check: read the incoming batch, find the champion, test, keep a drifted batch for labeling, report."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from tasks.config.spec import OneModelSpec, Spec
from tasks.core.errors import DataError
from tasks.data.split import SplitRef
from tasks.monitoring.drift import ChampionRef, IncomingBatch
from tasks.monitoring.drift_report import DriftReport
from tasks.monitoring.kept_batches import MANIFEST, prune_kept_batches, written_files
from tasks.steps.refs import DatasetRef, GateOutcome, StageResult, TrackingRef, UnchangedData
from tasks.steps.step import artifact_key, figure_markdown, publish_markdown, step, tag_flow_run


@step("retrain: anything new to learn from?")
def unchanged_since_champion(spec: Spec, dataset: DatasetRef, tracking: TrackingRef,
                             trigger: str) -> UnchangedData | None:
    """A retrain that a schedule, a drift alarm or a labels pull started is worth training only on
    data the champion has not seen; by hand, a run always trains (the user asked for it)."""
    from tasks.registry.champion import current_champion
    from tasks.registry.tracking import log_text

    if trigger == "manual":
        return None
    client = tracking.client
    champion = current_champion(client, spec.registry.model_name, spec.registry.alias)
    if champion is None or champion.tags.get("data_fingerprint") != dataset.fingerprint:
        return None
    reason = (f"nothing new to learn from: the data ({dataset.fingerprint[:12]}) is the data champion version "
              f"{champion.version} was trained on, so this {trigger}-triggered run audits, splits, trains and "
              "registers nothing (the champion's run holds the data report)")
    waiting = latest_incoming_batch(spec.workdir, spec.registry.model_name) if trigger == "drift" else None
    if waiting:
        reason += (f". The drifted batch waits for labels in {waiting}: label it, add it to {spec.data.path} "
                   "and run again")
    client.set_tag(tracking.run_id, "decision", "nothing-new")
    log_text(client, tracking.run_id, reason, "nothing_new.txt")
    publish_markdown(artifact_key(spec.registry.model_name, "gate-decision"),
                     f"# Nothing new to learn from\n\n{reason}",
                     "Test metric vs target, and what happened in the registry")
    tag_flow_run("decision:nothing-new")
    print(reason)
    return UnchangedData(tracking.run_id, str(champion.version), reason)


def latest_incoming_batch(workdir: Path, model_name: str) -> Path | None:
    """The newest batch a drift check kept for this model (`<workdir>/incoming/<model>/<UTC stamp>`)."""
    folder = workdir / "incoming" / model_name
    batches = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return batches[-1] if batches else None


DRIFT_EVENT = "transferflow.drift.detected"


@step("7d store drift reference")
def store_drift_reference(spec: OneModelSpec, dataset: DatasetRef, split: SplitRef, selected: StageResult,
                          outcome: GateOutcome, tracking: TrackingRef) -> int:
    """On promotion only: embed up to drift.reference_size examples the promoted weights never
    trained on (`reference_examples`) with the promoted backbone and store them, with the class mix
    it predicts and input statistics, as artifacts of the version's run. A sample of its training
    examples would look closer to the fine-tuned backbone than any fresh input, and raise false
    alarms. Returns how many examples the reference holds."""
    if not outcome.decision.passed:
        print("Not promoted: no drift reference stored")
        return 0
    from tasks.models.backbones import load_backbone
    from tasks.models.checkpoints import legacy_config, restore_selected
    from tasks.models.devices import on_runtime_device
    from tasks.models.features import cached_embeddings, open_cache
    from tasks.monitoring.drift import REFERENCE_DIR, log_reference, what_the_model_sees

    classes, batch_size = list(dataset.classes), spec.train.batch_size
    ids, inputs, sources = reference_examples(spec, dataset, split, tracking)
    classifier, checkpoint = restore_selected(selected.checkpoint, selected.checkpoint_sha256,
                                     legacy_config(spec.model, classes))
    on_runtime_device(spec.runtime.device, classifier.backbone, classifier)
    frozen = _same_weights(classifier.backbone.module, load_backbone(spec.model).module)
    # The embedding cache holds pretrained-backbone embeddings: valid only when fine-tuning changed nothing.
    embeddings = (cached_embeddings(open_cache(spec.workdir, classifier.backbone), classifier.backbone, ids, inputs,
                                    batch_size)[0] if frozen else None)
    seen = what_the_model_sees(classifier, classes, spec.model.MODALITY, inputs, batch_size, embeddings,
                               checkpoint.operating_point)
    client = tracking.client
    registration = outcome.registration
    described = " + ".join(f"{count} {name}" for name, count in sources.items() if count)
    log_reference(client, tracking.run_id, seen, {
        "model_name": registration.model_name, "version": registration.version, "classes": classes,
        "modality": spec.model.MODALITY, "backbone": "pretrained" if frozen else "fine-tuned",
        "seed": spec.drift.seed, "example_ids": ids, "sources": sources})
    # On the run that holds it, not the version: the version row keeps its five tags (tasks/registry/evidence.py).
    client.set_tag(tracking.run_id, "drift_reference", f"{REFERENCE_DIR}/ ({described} examples it never trained on)")
    print(f"Drift reference: {described} examples the promoted weights never trained on, embedded with its "
          f"backbone ({'pretrained' if frozen else 'fine-tuned'})")
    if len(ids) < SMALL_REFERENCE:
        print(f"WARNING the drift reference holds only {len(ids)} examples: with one small reference, this "
              f"champion's false-alarm rate can stray far from drift.alpha {spec.drift.alpha:g} (measured: "
              "benchmarks/drift_false_alarms.py). Add labeled data, or read an alarm with that in mind.")
    return len(ids)


SMALL_REFERENCE = 200  # below it one reference's false-alarm rate varied up to 66% at alpha 0.05 (benchmarks)


def reference_examples(spec: OneModelSpec, dataset: DatasetRef, split: SplitRef,
                       tracking: TrackingRef) -> tuple[list[str], list[str], dict[str, int]]:
    """Up to drift.reference_size inputs (a seeded sample, never labels): validation first, then the
    test inputs, read after the gate and logged as a "drift reference" read, when validation has
    fewer. Returns ids, inputs and how many came from each split."""
    import numpy as np

    from tasks.data.split import quarantined_test_ids
    from tasks.data.table import read_examples

    size, rng = spec.drift.reference_size, np.random.default_rng(spec.drift.seed)
    val = dataset.train_val_examples(split)["val"]
    val_ids = sorted(val.index) if len(val) <= size else sorted(rng.choice(sorted(val.index), size, replace=False))
    test_ids: list[str] = []
    if len(val_ids) < size:
        test = quarantined_test_ids(split.manifest_path, purpose="drift reference",
                                    reader=f"store_drift_reference run {tracking.run_id}: test inputs, no labels")
        wanted = min(size - len(val_ids), len(test))
        test_ids = sorted(rng.choice(sorted(test), wanted, replace=False)) if wanted else []
    ids = [str(i) for i in [*val_ids, *test_ids]]
    inputs = read_examples(dataset.table_path).loc[ids, "input"]
    return ids, list(inputs), {"validation": len(val_ids), "test": len(test_ids)}


def _same_weights(module: torch.nn.Module, other: torch.nn.Module) -> bool:
    mine, theirs = module.state_dict(), other.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@step("read incoming batch")
def read_incoming_batch(spec: Spec, incoming: str, text_column: str | None) -> IncomingBatch:
    from tasks.monitoring.drift import read_incoming

    batch = read_incoming(Path(incoming), spec.modality, text_column or spec.data.csv_columns.text)
    print(f"Incoming: {len(batch.inputs)} {batch.modality} input(s) from {batch.source}")
    if batch.skipped:
        shown = ", ".join(batch.skipped[:5]) + (f" (+{len(batch.skipped) - 5} more)" if len(batch.skipped) > 5 else "")
        print(f"WARNING skipped {len(batch.skipped)} file(s) that are not images: {shown}")
    return batch


@step("find the champion")
def find_champion(spec: Spec) -> ChampionRef:
    from tasks.monitoring.drift import locate_champion

    return locate_champion(spec.workdir, spec.registry.model_name, spec.registry.alias)


@step("test for drift")
def check_for_drift(spec: Spec, champion: ChampionRef, batch: IncomingBatch, digest: str = "") -> DriftReport:
    """Embed the batch with the champion's own backbone and test it against the stored reference."""
    import numpy as np

    from tasks.monitoring.drift import MAX_TESTED, class_mix_shift, load_reference, what_the_model_sees
    from tasks.monitoring.drift_report import statistic_shifts
    from tasks.monitoring.mmd import mmd_permutation_test
    from tasks.registry.champion import restore_registered
    from tasks.registry.tracking import client_for

    client = client_for(spec.workdir)
    what = f"model '{champion.model_name}' version {champion.version}"
    reference, facts = load_reference(client, champion.run_id, what)
    if facts["modality"] != batch.modality:
        raise DataError(f"{batch.source}: {what} reads {facts['modality']}s, not {batch.modality}s. "
                        "Fix: pass the kind of input the champion was trained on.")
    classifier, checkpoint = restore_registered(client, champion.run_id)
    classes = checkpoint.classes
    seen = what_the_model_sees(classifier, classes, batch.modality, list(batch.inputs), spec.train.batch_size,
                               operating_point=checkpoint.operating_point)
    tested = seen.embeddings
    if len(tested) > MAX_TESTED:
        keep = np.random.default_rng(spec.drift.seed).choice(len(tested), MAX_TESTED, replace=False)
        tested = tested[np.sort(keep)]
    result = mmd_permutation_test(reference, tested, spec.drift.permutations, spec.drift.seed)
    return DriftReport(
        model_name=champion.model_name, champion_version=champion.version, source=str(batch.source),
        drift=result.p_value < spec.drift.alpha, p_value=result.p_value, score=result.score,
        alpha=spec.drift.alpha, n=len(batch.inputs), n_tested=len(tested), reference_n=len(reference),
        permutations=spec.drift.permutations, bandwidth=result.bandwidth,
        class_mix_reference=facts["class_mix"], class_mix_incoming=seen.class_mix,
        class_mix_shift=class_mix_shift(facts["class_mix"], seen.class_mix),
        statistics=statistic_shifts(facts["statistics"], seen.statistics),
        null_scores=tuple(map(float, result.null_scores)), batch_digest=digest)


@step("keep the drifted batch for labeling")
def keep_incoming_batch(spec: Spec, batch: IncomingBatch, report: DriftReport, trigger: str) -> str:
    """Copy the batch under <workdir>/incoming/<model>/<UTC stamp>/ with a manifest: images under
    `unlabeled/` (move each into a class folder; for a CSV of files, also a sheet of their rows with
    an empty label), texts as a CSV with an empty `label` column.
    The folder is new: nothing that exists is overwritten or deleted."""
    import pandas as pd

    from tasks.config.data_kinds import reads_files
    from tasks.config.data_kinds.base import CsvFileOptions
    from tasks.core.atomic import write_atomic, write_bytes_atomic, write_text_atomic

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = spec.workdir.resolve() / "incoming" / report.model_name / stamp
    folder.mkdir(parents=True, exist_ok=False)
    if reads_files(batch.modality):
        files = [f"unlabeled/{relative}" for relative in batch.relative]
        for path, stored in zip(batch.inputs, files, strict=True):
            write_bytes_atomic(folder / stored, Path(path).read_bytes())
        how = "Move each file in unlabeled/ into <data.path>/<label>/, then run `transferflow run CONFIG`."
        if isinstance(spec.data, CsvFileOptions):  # a CSV that lists files: a sheet of its rows to fill in
            input_field, label = getattr(spec.data, spec.data.INPUT_FIELD), spec.data.label_column
            sheet = pd.DataFrame({input_field: files, label: ""})
            write_text_atomic(folder / "to_label.csv", sheet.to_csv(index=False))
            files.append("to_label.csv")
            how = (f"Fill the '{label}' column of to_label.csv, copy unlabeled/ beside data.path and append the "
                   "rows to it (their paths are relative to this folder, as to the CSV's), then run "
                   "`transferflow run CONFIG`.")
    else:
        files = ["texts.csv"]
        columns = spec.data.csv_columns
        table = pd.DataFrame({columns.text: list(batch.inputs), columns.label: ""})
        write_atomic(folder / "texts.csv", lambda handle: handle.write(table.to_csv(index=False).encode("utf-8")))
        how = (f"Fill the '{columns.label}' column of texts.csv, append the rows to data.path, then run "
               "`transferflow run CONFIG`.")
    manifest = {"model_name": report.model_name, "champion_version": report.champion_version,
                "created_utc": stamp, "source": report.source, "modality": batch.modality, "n": len(batch.inputs),
                "trigger": trigger, "p_value": report.p_value, "score": report.score, "alpha": report.alpha,
                "batch_digest": report.batch_digest, "files": files, "files_sha256": written_files(folder, files),
                "how_to_label": how}
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1))
    print(f"Stored the drifted batch for labeling in {folder}")
    removed, in_labelling = prune_kept_batches(folder.parent, spec.drift.keep_batches)
    if removed or in_labelling:
        print(f"drift.keep_batches {spec.drift.keep_batches}: removed {len(removed)} older untouched batch(es)"
              + (f"; kept {len(in_labelling)} older one(s) whose labelling has started: {in_labelling[0]}"
                 if in_labelling else ""))
    return str(folder)


@step("was this batch checked before?")
def earlier_check(spec: Spec, champion: ChampionRef, digest: str) -> DriftReport | None:
    """The first check of this batch (same content digest) against this champion, if there was one."""
    from tasks.monitoring.drift_report import DriftReport
    from tasks.registry import tracking

    client = tracking.client_for(spec.workdir)
    experiment = client.get_experiment_by_name(f"{champion.model_name}-drift")
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=1,
                              filter_string=f"tags.batch_digest = '{digest}' and "
                                            f"tags.champion_version = '{champion.version}'")
    first = tracking.read_json_artifact(client, runs[0].info.run_id, "drift_report.json") if runs else None
    return replace(DriftReport.from_json(first), already_checked=runs[0].info.run_id) if first else None


@step("report drift")
def publish_drift_report(spec: Spec, config_path: str, report: DriftReport, trigger: str) -> DriftReport:
    """The report in MLflow (experiment `<model>-drift`) and the Prefect UI; on drift, the event
    `transferflow.drift.detected` that a retrain deployment can be triggered by."""
    from tasks.monitoring.drift_report import render_markdown

    run = _log_drift_run(spec, report, trigger)
    report = replace(report, mlflow_run_id=run.run_id)
    figure = figure_markdown(run, "drift_report.png", "The test's null distribution and the class mix")
    publish_markdown(artifact_key(report.model_name, "drift"), f"{render_markdown(report)}\n{figure}\n",
                     f"Drift checks of {report.model_name}'s champion")
    tag_flow_run("drift:detected" if report.drift else "drift:none")
    if report.drift:
        _emit_drift_event(report, str(Path(config_path).expanduser().resolve()))
    print(report.summary())
    return report


def _log_drift_run(spec: Spec, report: DriftReport, trigger: str) -> TrackingRef:
    """One finished MLflow run per check: numbers, the markdown report, its JSON and the plot."""
    from tasks.monitoring.drift_report import drift_figure, render_markdown
    from tasks.registry import tracking

    name = report.model_name
    client = tracking.client_for(spec.workdir)
    experiment = tracking.experiment_id(client, f"{name}-drift", spec.workdir)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")
    run_id = tracking.start_run(client, experiment, f"{name}-drift-check-{stamp}", tags={
        "model": name, "champion_version": report.champion_version, "trigger": trigger,
        "batch_digest": report.batch_digest,
        "decision": "drift" if report.drift else "no-drift"})
    report = replace(report, mlflow_run_id=run_id)
    tracking.log_params(client, run_id, {"alpha": report.alpha, "permutations": report.permutations,
                                         "source": report.source, "reference_n": report.reference_n,
                                         "stored_batch": report.stored_batch or ""})
    tracking.log_scores(client, run_id, {"p_value": report.p_value, "mmd2": report.score, "n": report.n,
                                         "class_mix_shift": report.class_mix_shift, "drift": float(report.drift)})
    tracking.log_text(client, run_id, render_markdown(report), "drift_report.md")
    tracking.log_text(client, run_id, json.dumps(report.as_json(), indent=1), "drift_report.json")
    tracking.log_figure(client, run_id, drift_figure(report), "drift_report.png")
    tracking.end_run(client, run_id, succeeded=True)
    return TrackingRef(run_id, experiment, tracking.tracking_uri(spec.workdir))


def _emit_drift_event(report: DriftReport, config_path: str) -> None:
    from prefect.events import emit_event

    emit_event(event=DRIFT_EVENT,
               resource={"prefect.resource.id": f"transferflow.model.{report.model_name}",
                         "prefect.resource.name": report.model_name},
               payload={"config_path": config_path, "p_value": report.p_value, "score": report.score, "n": report.n,
                        "alpha": report.alpha, "champion_version": report.champion_version,
                        "stored_batch": report.stored_batch, "mlflow_run_id": report.mlflow_run_id})
