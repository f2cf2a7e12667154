"""Recipe steps 3-3c as Prefect tasks: split before any training (test quarantined from here), the
label audit on train and validation, and the leakage check across splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.config.spec import Spec
from tasks.core.errors import DataError, DataQualityError
from tasks.data.split import SplitRef
from tasks.reports.data_report import Section
from tasks.steps.refs import DatasetRef, TrackingRef
from tasks.steps.step import artifact_key, publish_table, step


@step("3 split before training")
def split_before_training(spec: Spec, dataset: DatasetRef) -> SplitRef:
    """The history is the registry model's, kept where its registry is (the tracking server, shared by
    every workdir using it); with a Prefect server, writers of one model queue on its limit."""
    from tasks.data.split import split_examples, split_history_folder
    from tasks.data.table import read_table
    from tasks.registry.split_history_store import history_store
    from tasks.steps.limits import model_limit

    model_name = spec.registry.model_name
    try:
        with model_limit("split", model_name):
            split = split_examples(read_table(dataset.table_path), spec.split, dataset.fingerprint,
                                   split_history_folder(spec.workdir, model_name), spec.modality,
                                   hash_cache=spec.workdir / "phash", store=history_store(spec.workdir, model_name))
    except DataError as error:
        raise DataError(f"{spec.data.path}: {error}") from None
    for warning in split.warnings:
        print(f"WARNING {warning}")
    notes = f" ({'; '.join(split.notes)})" if split.notes else ""
    print("Split: " + ", ".join(f"{k} {v}" for k, v in split.sizes.items()) + notes)
    return split


def record_split(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef | None,
                 before_drops: SplitRef) -> None:
    """The split training will use (after any policy drops) as the Prefect table and, with
    tracking, the run's `split/` manifest and params; the manifest before the drops goes to
    `split/before_drops/` (its hash in a param), so both are on record."""
    publish_table(artifact_key(spec.registry.model_name, "split-sizes"),
                  [{"split": k, "examples": v} for k, v in split.sizes.items()],
                  "Examples per split (test quarantined until the final evaluation)")
    if tracking is None:
        return
    from tasks.registry.tracking import log_file, log_params

    client = tracking.client
    log_file(client, tracking.run_id, split.manifest_path, "split")
    params = {"data_fingerprint": dataset.fingerprint, "test_fingerprint": split.test_fingerprint,
              "split_manifest_sha256": split.manifest_sha256, **{f"n_{k}": v for k, v in split.sizes.items()}}
    if split.manifest_path != before_drops.manifest_path:
        log_file(client, tracking.run_id, before_drops.manifest_path, "split/before_drops")
        params["split_manifest_before_drops_sha256"] = before_drops.manifest_sha256
    log_params(client, tracking.run_id, params)


def split_section(split: SplitRef) -> Section:
    """Step 3's part of the report: split sizes, the near-copy groups kept whole, and warnings."""
    sizes = ", ".join(f"{name} {count}" for name, count in split.sizes.items())
    body = "\n".join(f"- {note}" for note in (*split.notes, *split.warnings))
    return Section("Split and near-copy groups", "warn" if split.warnings else "ok",
                   f"{sizes} (test quarantined until the final evaluation).", body)


@step("3b audit labels (train and validation)")
def audit_label_errors(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef | None,
                       folder: Path) -> tuple[SplitRef, Section]:
    """Rank the training and validation examples whose label the data disputes (tasks.audit.label_audit),
    on the first base model's cached embeddings (the baseline reuses them), and act on
    `data.label_issues`: report, drop (a new manifest lists the dropped ids), or fail. Writes
    label_issues.csv, outliers.csv and, for images, label_suspects.png in the report folder."""
    import pandas as pd

    from tasks.audit.label_audit import find_label_issues, find_outliers, to_drop
    from tasks.core.atomic import write_text_atomic
    from tasks.data.split import without_examples
    from tasks.reports.data_report import markdown_table

    table = pd.concat(dataset.train_val_examples(split).values())
    examples = table.reset_index()
    features, computed = _first_model_embeddings(spec, list(examples["example_id"]), list(examples["input"]))
    issues = find_label_issues(examples, features, list(dataset.classes), seed=spec.split.seed)
    found = issues.table.assign(source=issues.table["example_id"].map(table["source"]))
    shown = "; ".join(f"{r.source} ({r.given_label} -> {r.suggested_label}, {r.score:.3f})"
                      for r in found.head(5).itertuples())
    print(f"Label audit ({spec.candidates[0].describe()} embeddings, cleanlab on calibrated out-of-fold probe "
          f"probabilities, {issues.audited} train/validation examples): {len(found)} disputed label(s)"
          + (f": {shown}" if shown else "") + f". Trust: {issues.trust()}")
    outliers = find_outliers(examples, features, exact_search_max=spec.data.exact_search_max).assign(
        source=lambda frame: frame["example_id"].map(table["source"]))
    print("Most unusual inputs (cleanlab OutOfDistribution on the embeddings, reported only): "
          + "; ".join(f"{r.source} ({r.score:.3f})" for r in outliers.head(3).itertuples()))
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "label_issues.csv", found.to_csv(index=False))
    write_text_atomic(folder / "outliers.csv", outliers.to_csv(index=False))
    files = ["label_issues.csv", "outliers.csv"]
    if spec.data.PICTURED and not found.empty:
        from tasks.reports.plots import save_figure, suspects_figure

        save_figure(suspects_figure(found.head(16)), folder / "label_suspects.png")
        files.append("label_suspects.png")
    _publish_label_issues(spec, tracking, found)
    if tracking is not None:
        from tasks.registry.tracking import log_params

        log_params(tracking.client, tracking.run_id, {
            "label_audit_embeddings_computed": computed, "label_issues_found": len(found),
            "label_audit_probe_accuracy": round(issues.probe_accuracy, 4),
            "label_audit_temperature": round(issues.temperature, 4),
            "label_issues_false_alarms_at_least": round(issues.expected_false_alarms(), 2)})
    rows = label_issue_rows(found, spec.modality == "text")
    body = markdown_table(rows) + "\n\nMost unusual inputs (reported, never dropped): " + "; ".join(
        f"{r.source} ({r.score:.3f})" for r in outliers.head(5).itertuples())
    policy = f"label_issues: {spec.data.label_issues}"
    if found.empty or spec.data.label_issues == "report":
        summary = (f"{len(found)} of {issues.audited} train/validation label(s) disputed by the data ({policy}); "
                   f"{issues.trust()}.")
        return split, Section("Disputed labels (label audit)", "warn" if len(found) else "ok", summary, body,
                              tuple(files))
    if spec.data.label_issues == "fail":
        raise DataQualityError(f"{spec.data.path}: {len(found)} label(s) disputed by the data (data.label_issues: "
                               f"fail); the most doubtful: {shown}. Fix: correct them, or set data.label_issues: "
                               "report or drop.")
    dropped = to_drop(issues, spec.data.max_drop_fraction)
    capped = f" (capped at max_drop_fraction {spec.data.max_drop_fraction:g})" if len(dropped) < len(found) else ""
    print(f"Dropping {len(dropped)} of {len(found)} disputed example(s) from train/validation{capped}")
    summary = (f"{len(found)} of {issues.audited} train/validation label(s) disputed; {len(dropped)} dropped, "
               f"most doubtful first{capped} ({policy}; the manifest lists them); {issues.trust()}.")
    return (without_examples(split, dropped, f"labels disputed by the label audit (data.label_issues: drop){capped}",
                             table["label"]),
            Section("Disputed labels (label audit)", "warn", summary, body, tuple(files)))


def _first_model_embeddings(spec: Spec, ids: list[str], inputs: list[str]) -> tuple[Any, int]:
    """The frozen embeddings of the first base model (the one the baseline starts with), from the
    cache step 3a filled (computed here only for an example it did not embed), and how many were computed."""
    from tasks.models.backbones import load_backbone
    from tasks.models.devices import on_runtime_device, resolve_num_workers
    from tasks.models.features import cached_embeddings, open_cache

    backbone = load_backbone(spec.candidates[0])
    on_runtime_device(spec.runtime.device, backbone)  # the device step 3a embedded on: the same cache key
    return cached_embeddings(open_cache(spec.workdir, backbone), backbone, ids, inputs, spec.train.batch_size,
                             resolve_num_workers(spec.runtime.num_workers))


SHOWN_ISSUES = 50  # rows of the Prefect table; label_issues.csv has them all
TEXT_SHOWN = 80    # characters of a text example shown in a row


def _publish_label_issues(spec: Spec, tracking: TrackingRef | None, found: Any) -> None:
    """A Prefect table of the most doubtful labels (the whole list is label_issues.csv)."""
    where = f"MLflow run {tracking.run_id}" if tracking else "the data report folder"
    shown = f"top {SHOWN_ISSUES} of {len(found)}" if len(found) > SHOWN_ISSUES else f"all {len(found)}"
    publish_table(artifact_key(spec.registry.model_name, "label-issues"),
                  label_issue_rows(found.head(SHOWN_ISSUES), spec.modality == "text") or [{"disputed labels": 0}],
                  f"Labels the data disputes: {shown}, most doubtful first; all in label_issues.csv of {where}")


def label_issue_rows(found: Any, text: bool) -> list[dict[str, Any]]:
    """The label audit's table as a person reads it: where the example is first (and, for texts,
    the text), then the given and suggested labels and the scores; the example id, cut to 8
    characters, last (the CSV has it whole)."""
    return [{"source": row.source, **({"text": str(row.input)[:TEXT_SHOWN]} if text else {}),
             "given label": row.given_label, "suggested label": row.suggested_label, "score": row.score,
             "p(suggested)": row.p_suggested, "id": row.example_id[:8]} for row in found.itertuples()]


@step("3c check leakage across splits")
def check_leakage(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef | None,
                  folder: Path) -> tuple[SplitRef, Section]:
    """Near-copies across splits that the group keys missed (tasks.audit.leakage), on the first base
    model's embeddings, and `data.leakage`: drop the less held-out copy of each pair, report, or
    fail. Reads the test inputs (logged as a "leakage check" read, never an evaluation): never
    their labels. Writes leakage_pairs.csv (and for images leakage_pairs.png)."""
    from tasks.audit.leakage import (
        MIN_TRAIN_FOR_LEAKAGE,
        calibrate,
        cross_split_pairs,
        cross_split_pairs_approximate,
        less_held_out_copies,
    )
    from tasks.core.atomic import write_text_atomic
    from tasks.data.split import quarantined_test_ids, train_val_ids, without_examples
    from tasks.data.table import read_examples
    from tasks.reports.data_report import markdown_table

    train_ids, val_ids = train_val_ids(split.manifest_path)
    if len(train_ids) < MIN_TRAIN_FOR_LEAKAGE:
        return split, Section("Leakage across splits", "warn", f"Not checked: {len(train_ids)} training example(s) "
                              "are too few to calibrate what a near-copy is.")
    test_ids = quarantined_test_ids(split.manifest_path, reader="check_leakage: test inputs, no labels",
                                    purpose="leakage check")
    ids = train_ids + val_ids + test_ids
    splits = ["train"] * len(train_ids) + ["val"] * len(val_ids) + ["test"] * len(test_ids)
    table = read_examples(dataset.table_path)
    features, _ = _first_model_embeddings(spec, ids, list(table.loc[ids, "input"]))
    calibration = calibrate(features[:len(train_ids)], seed=spec.split.seed, fixed=spec.data.leakage_similarity)
    index_checks: list[str] = []
    if len(ids) > spec.data.exact_search_max:  # exact search is quadratic: a faiss IVF index, recall checked
        pairs, index_checks = cross_split_pairs_approximate(ids, splits, features, calibration.threshold,
                                                            spec.split.seed)
        print("Leakage search: approximate above data.exact_search_max "
              f"({spec.data.exact_search_max}): " + "; ".join(index_checks))
    else:
        pairs = cross_split_pairs(ids, splits, features, calibration.threshold)
    for side in ("held_out", "other"):
        pairs[f"{side}_source"] = pairs[f"{side}_id"].map(table["source"])
        pairs[f"{side}_input"] = pairs[f"{side}_id"].map(table["input"])
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "leakage_pairs.csv", pairs.to_csv(index=False))
    files = ["leakage_pairs.csv"]
    if spec.data.PICTURED and not pairs.empty:
        from tasks.reports.plots import leakage_figure, save_figure

        save_figure(leakage_figure(pairs.head(8)), folder / "leakage_pairs.png")
        files.append("leakage_pairs.png")
    shown = "; ".join(f"{r.held_out_split} {r.held_out_source} ~ {r.other_split} {r.other_source} ({r.similarity:.3f})"
                      for r in pairs.head(3).itertuples())
    print(f"Leakage check ({spec.candidates[0].describe()} embeddings, {calibration.describe()}): {len(pairs)} "
          "near-copy pair(s) across splits" + (f": {shown}" if shown else ""))
    if tracking is not None:
        from tasks.registry.tracking import log_params

        log_params(tracking.client, tracking.run_id, {
            "leakage_threshold": round(calibration.threshold, 6), "leakage_pairs_found": len(pairs)})
    search = ("Search: approximate, " + "; ".join(index_checks) + ".\n\n" if index_checks
              else "Search: exact (every pair above the threshold).\n\n")
    body = (f"Threshold: {calibration.describe()}.\n\n{search}" + markdown_table(pairs[[
        "held_out_split", "held_out_source", "other_split", "other_source", "similarity"]].to_dict("records")))
    policy = f"leakage: {spec.data.leakage}"
    if pairs.empty or spec.data.leakage == "report":
        summary = f"{len(pairs)} near-copy pair(s) across splits ({policy})."
        return split, Section("Leakage across splits", "warn" if len(pairs) else "ok", summary, body, tuple(files))
    if spec.data.leakage == "fail":
        raise DataQualityError(f"{spec.data.path}: {len(pairs)} near-copy pair(s) across train/validation/test "
                               f"(data.leakage: fail); the closest: {shown}. Fix: remove one copy of each pair "
                               "(see leakage_pairs.csv), or set data.leakage: drop or report.")
    dropped = less_held_out_copies(pairs)
    summary = (f"{len(pairs)} near-copy pair(s) across splits; the less held-out copy of each dropped "
               f"({len(dropped)} example(s) from train/validation; {policy}; the manifest lists them).")
    print(f"Dropping {len(dropped)} train/validation near-copies of more held-out examples")
    kept = without_examples(split, dropped, "near-copies of more held-out examples (data.leakage: drop)",
                            table["label"])  # train/validation labels only: the test side never drops
    return kept, Section("Leakage across splits", "warn", summary, body, tuple(files))
