"""Recipe step 2 as Prefect tasks: load the data (odd inputs and conflicting labels taken out with
their reason; the cross-check's disagreements held out), the Great Expectations label-quality suite,
and the data report."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.config.spec import Spec
from tasks.core.errors import DataError
from tasks.reports.data_report import Outcome, Section
from tasks.steps.refs import DatasetRef, QualitySummary, ReportRef, TrackingRef
from tasks.steps.step import artifact_key, publish_markdown, step

if TYPE_CHECKING:
    import pandas as pd

    from tasks.audit.cross_check import CrossCheck


@step("2a load data")
def load_data(spec: Spec) -> DatasetRef:
    """The example table, without the odd inputs (`data.odd_inputs: drop`) and the examples under
    two labels (`data.conflicting_labels: drop`): both listed with their reason, never silent."""
    from tasks.audit.cross_check import cross_check
    from tasks.audit.odd_inputs import take_out
    from tasks.core.hashing import fingerprint
    from tasks.data.labels_store import apply_store
    from tasks.data.readers import load_examples
    from tasks.data.table import save_table

    loaded, store = apply_store(load_examples(spec.data), spec.data)  # reviewed labels, before any check
    if store.corrected or store.added:
        print(f"Labels store {spec.data.labels_folder}: {store.corrected} label(s) corrected, "
              f"{store.added} example(s) added ({store.pulls} pull(s), {store.reverted_pulls} reverted)")
    kept = take_out(loaded, spec.data)
    table, odd, conflicts = kept.table, kept.odd, kept.conflicts
    found_classes = loaded.declared_classes or tuple(sorted(loaded.table["label"].dropna().unique()))
    check = cross_check(loaded.table, table, spec.data, found_classes)  # on what 2a kept, before the checks
    table = without_disagreements(table, check, spec)
    if table.empty:
        raise DataError(f"{spec.data.path}: no examples left after quarantining {len(odd)} odd input(s) and "
                        f"{len(conflicts)} conflicting one(s). Fix: check the data (see data.odd_inputs).")
    dataset_fingerprint = fingerprint(table["example_id"], table["label"].fillna(""))
    classes = loaded.declared_classes or tuple(sorted(table["label"].dropna().unique()))
    path = save_table(table, spec.workdir, dataset_fingerprint)
    taken_out = (f" ({len(odd)} odd input(s) {'quarantined' if spec.data.odd_inputs == 'drop' else 'found'}"
                 f"{f', {len(conflicts)} under two labels dropped' if conflicts else ''})" if odd or conflicts else "")
    print(f"Loaded {len(table)} examples in {len(classes)} classes from {spec.data.path}{taken_out}")
    return DatasetRef(path, dataset_fingerprint, tuple(classes), loaded.declared_classes, loaded.skipped_files,
                      tuple(q.describe() for q in odd), tuple(q.describe() for q in conflicts), check,
                      store.corrected, store.added)


def labels_store_section(spec: Spec, dataset: DatasetRef) -> Section | None:
    """Step 2a's reviewed labels in the report: how many the labels store corrected and added (None
    when it changed nothing), so a changed fingerprint has its reason beside it."""
    if not dataset.labels_corrected and not dataset.labels_added:
        return None
    return Section("Labels store", "ok",
                   f"{dataset.labels_corrected} label(s) corrected and {dataset.labels_added} example(s) added "
                   f"from {spec.data.labels_folder} (`transferflow label pull`); corrected test examples stay "
                   "in test, new examples go where the split places them (to training under given splits).")


def without_disagreements(table: pd.DataFrame, check: CrossCheck | None, spec: Spec) -> pd.DataFrame:
    """The table less the examples the two labellers disagree on (`cross_check_disagreements: drop`),
    each named in the log here and in the report's cross-check section and disagreements.csv."""
    from tasks.audit.cross_check import hold_out_disagreements

    if check is None:
        return table
    print(f"Cross-check: Cohen's kappa {check.kappa:.3f} on {check.overlap} examples labelled twice "
          f"(min {check.min_kappa:g}), {len(check.disagreements)} disagreement(s)")
    if spec.data.cross_check_disagreements != "drop":
        return table
    kept, held_out = hold_out_disagreements(table, check)
    for example in held_out:
        print(f"Held out until the labellers agree: {example.describe()}")
    return kept


def cross_check_section(spec: Spec, dataset: DatasetRef, folder: Path, tracking: TrackingRef | None) -> Section | None:
    """Step 2a's cross-check in the report (disagreements.csv, the annotators' confusion matrix) and,
    in a training run, its numbers in the MLflow run: `cross_check_kappa`, `cross_check_overlap`,
    `cross_check_disagreements` and each class's `cross_check_agreement_<class>`."""
    from tasks.reports.cross_check_report import cross_check_report

    check = dataset.cross_check
    if check is None:
        return None
    section = cross_check_report(check, spec.data, folder)
    if tracking is not None:
        from tasks.config.spec import class_metric_key
        from tasks.registry.tracking import log_scores

        log_scores(tracking.client, tracking.run_id, {
            "cross_check_kappa": check.kappa, "cross_check_overlap": check.overlap,
            "cross_check_disagreements": len(check.disagreements),
            **{class_metric_key("cross_check_agreement", label): value for label, value in check.agreement().items()}})
    return section


def odd_inputs_section(spec: Spec, dataset: DatasetRef, folder: Path) -> Section:
    """Step 2a's part of the report: what was taken out before any check (taken_out.csv)."""
    import pandas as pd

    from tasks.core.atomic import write_text_atomic
    from tasks.reports.data_report import markdown_table

    taken_out = [("odd input", line) for line in dataset.odd_inputs] + \
        [("conflicting labels", line) for line in dataset.conflicts_dropped]
    if not taken_out:
        return Section("Odd inputs and conflicting labels", "ok",
                       f"None found (policies: odd_inputs {spec.data.odd_inputs}, conflicting_labels "
                       f"{spec.data.conflicting_labels}).")
    folder.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame(taken_out, columns=["why", "what"])
    write_text_atomic(folder / "taken_out.csv", rows.to_csv(index=False))
    stops = spec.data.odd_inputs == "fail" and bool(dataset.odd_inputs)
    verb = "found (the label-quality check stops on them)" if stops else "quarantined"
    summary = (f"{len(dataset.odd_inputs)} odd input(s) {verb} (odd_inputs: {spec.data.odd_inputs}); "
               f"{len(dataset.conflicts_dropped)} cop(ies) of examples under two labels dropped "
               f"(conflicting_labels: {spec.data.conflicting_labels}).")
    return Section("Odd inputs and conflicting labels", "fail" if stops else "warn", summary,
                   markdown_table(rows.to_dict("records")), ("taken_out.csv",))


@step("2b check label quality")
def check_label_quality(spec: Spec, dataset: DatasetRef, folder: Path) -> QualitySummary:
    """Run the GX suite; its result says whether the flow may go on (`prepare` stops it with the
    report when an error-level check fails)."""
    import json

    from tasks.audit.quality import audit_labels
    from tasks.core.atomic import write_text_atomic
    from tasks.data.table import LoadedData, read_table
    from tasks.reports.data_docs import write_data_docs

    loaded = LoadedData(read_table(dataset.table_path), dataset.declared_classes, dataset.skipped_files)
    report = audit_labels(loaded, spec.data, spec.metric, dataset.odd_inputs, dataset.conflicts_dropped)
    markdown = report.markdown()
    publish_markdown(artifact_key(spec.registry.model_name, "label-quality"), markdown,
                     f"Label-quality report for {spec.data.path}")
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "label_quality.md", markdown)
    write_text_atomic(folder / "gx_results.json", json.dumps(report.gx_results, indent=1))
    docs = _replace_folder(folder / "data_docs", lambda fresh: write_data_docs(report, fresh))
    warnings = tuple(f"{w.name}: {w.detail}" for w in report.warnings)
    for warning in warnings:
        print(f"WARNING {warning}")
    failed = report.failure_summary().splitlines()
    outcome: Outcome = "fail" if not report.passed else "warn" if warnings else "ok"
    summary = (f"{len(failed)} error-level check(s) failed: " + " ".join(line.strip() for line in failed)
               if failed else f"{len(report.checks)} checks on {report.n_examples} examples, "
                              f"{len(warnings)} warning(s).")
    section = Section("Label-quality suite (Great Expectations)", outcome, summary, report.checks_table(),
                      ("label_quality.md", "gx_results.json", str(docs.relative_to(folder))))
    if report.passed:
        print(f"Label-quality checks passed ({len(report.checks)} checks, {len(report.warnings)} warning(s))")
    return QualitySummary(report.class_counts, warnings, report.passed, report.failure_summary(), section)


def _replace_folder(target: Path, build: Callable[[Path], Path]) -> Path:
    """Build a folder of this tool's own (the Data Docs site) beside `target`, then swap it in, so
    a reader never sees half a site and no page of an earlier run lingers. Two runs on the same
    data (one report folder) swap one at a time, under a lock. Returns what `build` returned,
    under `target`."""
    import shutil
    import uuid

    from tasks.core.atomic import exclusive_lock

    fresh = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    built = build(fresh)
    retired = target.with_name(f".{target.name}.retired.{uuid.uuid4().hex[:8]}")
    with exclusive_lock(target.with_name(f".{target.name}.lock")):
        if target.exists():
            os.replace(target, retired)
        os.replace(fresh, target)
    shutil.rmtree(retired, ignore_errors=True)
    return target / built.relative_to(fresh)


def finish_data_report(spec: Spec, dataset: DatasetRef, class_counts: dict[str, int], sections: list[Section],
                       tracking: TrackingRef | None, folder: Path, stopped: str | None = None) -> ReportRef:
    """Write report.md, show it in the Prefect UI, and log it with every file its sections wrote to
    the MLflow run (under quality/). `class_counts`: the label-quality check's (distinct examples)."""
    from tasks.reports.data_report import DataReport, write_report

    report = DataReport(str(spec.data.path), dataset.fingerprint, class_counts, spec.metric.class_name,
                        tuple(sections), stopped)
    path = write_report(report, folder)
    publish_markdown(artifact_key(spec.registry.model_name, "data-report"), report.markdown(folder),
                     f"Data report for {spec.data.path}: {report.verdict()}")
    print(f"Data report: {report.verdict()} ({path})")
    if tracking is not None:
        from tasks.registry.tracking import log_file

        client = tracking.client
        for name in dict.fromkeys([path.name, *(name.split("/")[0] for section in sections for name in section.files)]):
            if (folder / name).is_dir():  # the Data Docs site
                client.log_artifacts(tracking.run_id, str(folder / name), f"quality/{name}")
            else:
                log_file(client, tracking.run_id, folder / name, "quality")
    return ReportRef(path, report.verdict())
