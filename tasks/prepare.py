"""Recipe steps 1-4 as Prefect tasks: validate the config, load and audit the data, split it
before any training, and load the base model; then, for a scheduled or drift-triggered retrain,
whether there is anything new to learn from. Each returns plain values (paths and hashes)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config.spec import Spec, load_spec
from tasks.core.errors import DataError, DataQualityError
from tasks.data.split import SplitRef
from tasks.reports.data_report import Outcome, Section
from tasks.step import artifact_key, publish_markdown, publish_table, step, tag_flow_run

if TYPE_CHECKING:
    from tasks.config.families import FamilyOptions
    from tasks.tournament import Tournament


MIN_TRAIN_FOR_LEAKAGE = 3   # the leakage threshold is calibrated on nearest neighbours within train


@dataclass(frozen=True)
class TrackingRef:
    """The flow run's MLflow parent run; steps that also serve `validate` accept None (no tracking)."""

    run_id: str
    experiment_id: str


@dataclass(frozen=True)
class DatasetRef:
    table_path: Path
    fingerprint: str
    classes: tuple[str, ...]
    declared_classes: tuple[str, ...] | None
    skipped_files: tuple[str, ...]
    # "source (label): reason" of each odd input (dropped, or under `odd_inputs: fail` kept for the
    # check to stop on) and of each copy of an example under two labels dropped by `conflicting_labels`.
    odd_inputs: tuple[str, ...] = ()
    conflicts_dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaseModelRef:
    """What the model card says about the base model (the model itself stays inside tasks)."""

    source: str
    dim: int
    layer_groups: int
    family: str = ""
    name: str = ""
    weights: str = ""          # where the weights came from: wheel, enum member, hub id + revision, path
    weights_sha256: str = ""
    parameters: int = 0


@dataclass(frozen=True)
class QualitySummary:
    class_counts: dict[str, int]
    warnings: tuple[str, ...]
    passed: bool
    failure: str          # the failed error-level checks, one per line
    section: Section      # its part of the data report


@dataclass(frozen=True)
class ReportRef:
    """The data report written by steps 2-3: where it is, and its one-line verdict."""

    path: Path
    verdict: str


@dataclass(frozen=True)
class Prepared:
    """What steps 2-4 hand to training: the data, its audit, the split and the base model (with
    several candidates: the tournament's choice, and its ranking for the fine-tuning diagnosis)."""

    dataset: DatasetRef
    quality: QualitySummary
    split: SplitRef
    base_model: BaseModelRef
    tournament: Tournament | None = None
    report: ReportRef | None = None

    def ranking(self, spec: Spec) -> list[FamilyOptions]:
        """The base models to try, best first: the tournament's eligible ones, or the one model."""
        return self.tournament.ranking if self.tournament else spec.candidates[:1]


def prepare(spec: Spec, tracking: TrackingRef | None, dataset: DatasetRef | None = None) -> Prepared:
    """Steps 2-4, shared by the training flow and `validate` (which tracks nothing, and loads
    every candidate instead of running their tournament). Steps 2-3 also write the data report
    (`tasks.reports.data_report`), whether they pass or a policy stops the run. `dataset`: step 2a's
    result when the caller has loaded the data already (the flow, to see whether it is new)."""
    from tasks.reports.data_report import report_folder

    dataset = dataset or load_data(spec)                        # 2. data + label quality
    folder = report_folder(spec.workdir, spec.registry.model_name, dataset.fingerprint)
    sections = [odd_inputs_section(spec, dataset, folder)]
    quality: QualitySummary | None = None
    try:
        quality = check_label_quality(spec, dataset, folder)
        sections.append(quality.section)
        if not quality.passed:
            raise DataQualityError(f"{spec.data.path}: the label-quality check failed; nothing was trained.\n"
                                   f"{quality.failure}")
        first_split = split_before_training(spec, dataset)  # 3. test quarantined from here
        sections.append(split_section(first_split))
        split, audit = audit_label_errors(spec, dataset, first_split, tracking, folder)  # 3b. labels disputed
        sections.append(audit)
        split, leaks = check_leakage(spec, dataset, split, tracking, folder)      # 3c. near-copies across splits
        sections.append(leaks)
        record_split(spec, dataset, split, tracking, before_drops=first_split)
    except DataError as error:
        counts = quality.class_counts if quality else {}
        stopped = finish_data_report(spec, dataset, counts, sections, tracking, folder, stopped=str(error))
        raise type(error)(f"{error}\nData report: {stopped.path}") from None
    report = finish_data_report(spec, dataset, quality.class_counts, sections, tracking, folder)
    if spec.tournament is None or tracking is None:             # 4. pretrained, offline
        models = [load_base_model(spec.with_model(model)) for model in spec.candidates]
        return Prepared(dataset, quality, split, models[0], report=report)
    from tasks.learn import contract_for
    from tasks.tournament import choose_base_model

    tournament = choose_base_model(spec, dataset, split, tracking, contract_for(spec, dataset, split))
    return Prepared(dataset, quality, split, load_base_model(spec.with_model(tournament.chosen)), tournament, report)


@dataclass(frozen=True)
class UnchangedData:
    """A scheduled or drift-triggered run found the champion's own training data: it trains nothing."""

    run_id: str
    champion_version: str
    reason: str


@step("retrain: anything new to learn from?")
def unchanged_since_champion(spec: Spec, dataset: DatasetRef, tracking: TrackingRef,
                             trigger: str) -> UnchangedData | None:
    """A retrain that a schedule or a drift alarm started is worth training only on data the
    champion has not seen; by hand, a run always trains (the user asked for it)."""
    from tasks.registry.champion import current_champion
    from tasks.registry.tracking import client_for, log_text

    if trigger == "manual":
        return None
    client = client_for(spec.workdir)
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


@step("1 validate config")
def validate_config(config_path: str, data_path: str | None = None) -> Spec:
    """The config, and that its base model's weights are on this machine (before any work)."""
    from tasks.core.errors import SpecError, WeightsError
    from tasks.models.backbones import locate_weights

    spec = load_spec(config_path, data_path)
    described = []
    for model in spec.candidates:
        try:
            weights = locate_weights(model)
        except (SpecError, WeightsError) as error:  # the model's name or weights: say which config
            raise type(error)(f"{config_path}: {error}") from None
        described.append(f"{model.describe()}, {weights.description}")
    what = "base model" if len(described) == 1 else f"{len(described)} candidate base models"
    print(f"Task: {spec.task}  |  contract: {spec.metric.describe()}  |  {what}: " + "; ".join(described))
    return spec


@contextmanager
def tracked_flow_run(spec: Spec, config_path: str) -> Iterator[TrackingRef]:
    """The flow's MLflow parent run: RUNNING while the steps run, then FINISHED, or FAILED when
    any step (or an interrupt) stops the flow."""
    from tasks.registry.tracking import client_for, end_run

    tracking = start_tracking(spec, config_path)
    try:
        yield tracking
    except BaseException:
        end_run(client_for(spec.workdir), tracking.run_id, succeeded=False)
        raise
    end_run(client_for(spec.workdir), tracking.run_id, succeeded=True)


@step("start tracking")
def start_tracking(spec: Spec, config_path: str) -> TrackingRef:
    from prefect.runtime import flow_run

    from tasks.registry.tracking import client_for, experiment_id, log_file, log_params, start_run

    client = client_for(spec.workdir)
    experiment = experiment_id(client, spec.registry.model_name, spec.workdir)
    run_id = start_run(client, experiment, f"transfer-learning-{flow_run.name or 'local'}", tags={
        "task": spec.task, "contract": spec.metric.describe(), "prefect_flow_run_id": str(flow_run.id or ""),
    })
    log_params(client, run_id, spec.model_dump(mode="json", by_alias=True))
    log_file(client, run_id, Path(config_path), "config")
    return TrackingRef(run_id, experiment)


@step("2a load data")
def load_data(spec: Spec) -> DatasetRef:
    """The example table, without the odd inputs (`data.odd_inputs: drop`) and the examples under
    two labels (`data.conflicting_labels: drop`): both listed with their reason, never silent."""
    from tasks.audit.odd_inputs import take_out
    from tasks.core.errors import DataError
    from tasks.core.hashing import fingerprint
    from tasks.data.table import load_examples, save_table

    loaded = load_examples(spec.data)
    kept = take_out(loaded, spec.data)
    table, odd, conflicts = kept.table, kept.odd, kept.conflicts
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
                      tuple(q.describe() for q in odd), tuple(q.describe() for q in conflicts))


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


@step("3 split before training")
def split_before_training(spec: Spec, dataset: DatasetRef) -> SplitRef:
    from tasks.core.errors import DataError
    from tasks.data.split import split_examples, split_history_folder
    from tasks.data.table import read_table

    try:
        split = split_examples(read_table(dataset.table_path), spec.split, dataset.fingerprint,
                               split_history_folder(spec.workdir, spec.registry.model_name), spec.modality,
                               hash_cache=spec.workdir / "phash")
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
    from tasks.registry.tracking import client_for, log_file, log_params

    client = client_for(spec.workdir)
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
    from tasks.audit.label_audit import find_label_issues, find_outliers, to_drop
    from tasks.core.atomic import write_text_atomic
    from tasks.data.split import train_val_ids, without_examples
    from tasks.data.table import read_examples
    from tasks.reports.data_report import markdown_table

    train_ids, val_ids = train_val_ids(split.manifest_path)
    table = read_examples(dataset.table_path)
    examples = table.loc[train_ids + val_ids].reset_index()
    features, computed = _first_model_embeddings(spec, list(examples["example_id"]), list(examples["input"]))
    issues = find_label_issues(examples, features, list(dataset.classes), seed=spec.split.seed)
    found = issues.table.assign(source=issues.table["example_id"].map(table["source"]))
    shown = "; ".join(f"{r.source} ({r.given_label} -> {r.suggested_label}, {r.score:.3f})"
                      for r in found.head(5).itertuples())
    print(f"Label audit ({spec.candidates[0].describe()} embeddings, cleanlab on out-of-fold probe probabilities, "
          f"{issues.audited} train/validation examples): {len(found)} disputed label(s)"
          + (f": {shown}" if shown else ""))
    outliers = find_outliers(examples, features).assign(source=lambda frame: frame["example_id"].map(table["source"]))
    print("Most unusual inputs (cleanlab OutOfDistribution on the embeddings, reported only): "
          + "; ".join(f"{r.source} ({r.score:.3f})" for r in outliers.head(3).itertuples()))
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "label_issues.csv", found.to_csv(index=False))
    write_text_atomic(folder / "outliers.csv", outliers.to_csv(index=False))
    files = ["label_issues.csv", "outliers.csv"]
    if spec.modality == "image" and not found.empty:
        from tasks.reports.plots import save_figure, suspects_figure

        save_figure(suspects_figure(found.head(16)), folder / "label_suspects.png")
        files.append("label_suspects.png")
    _publish_label_issues(spec, tracking, found)
    if tracking is not None:
        from tasks.registry.tracking import client_for, log_params

        log_params(client_for(spec.workdir), tracking.run_id, {"label_audit_embeddings_computed": computed,
                                                               "label_issues_found": len(found)})
    rows = found.drop(columns=["input", "example_id"]).to_dict("records")
    body = markdown_table(rows) + "\n\nMost unusual inputs (reported, never dropped): " + "; ".join(
        f"{r.source} ({r.score:.3f})" for r in outliers.head(5).itertuples())
    policy = f"label_issues: {spec.data.label_issues}"
    if found.empty or spec.data.label_issues == "report":
        summary = f"{len(found)} of {issues.audited} train/validation label(s) disputed by the data ({policy})."
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
               f"most doubtful first{capped} ({policy}; the manifest lists them).")
    return (without_examples(split, dropped, f"labels disputed by the label audit (data.label_issues: drop){capped}",
                             table["label"]),
            Section("Disputed labels (label audit)", "warn", summary, body, tuple(files)))


def _first_model_embeddings(spec: Spec, ids: list[str], inputs: list[str]) -> tuple[Any, int]:
    """The frozen embeddings of the first base model (the one the baseline starts with), from the
    cache or computed into it, and how many were computed."""
    from tasks.models.backbones import load_backbone
    from tasks.models.devices import resolve_num_workers
    from tasks.models.features import cached_embeddings, open_cache

    backbone = load_backbone(spec.candidates[0])
    return cached_embeddings(open_cache(spec.workdir, backbone), backbone, ids, inputs, spec.train.batch_size,
                             resolve_num_workers(spec.runtime.num_workers))


def _publish_label_issues(spec: Spec, tracking: TrackingRef | None, found: Any) -> None:
    """A Prefect table of the 50 most doubtful labels (the whole list is label_issues.csv)."""
    where = f"MLflow run {tracking.run_id}" if tracking else "the data report folder"
    publish_table(artifact_key(spec.registry.model_name, "label-issues"),
                  found.head(50).drop(columns=["input"]).to_dict("records") or [{"disputed labels": 0}],
                  f"Labels the data disputes ({len(found)}), most doubtful first; all in label_issues.csv of {where}")


@step("3c check leakage across splits")
def check_leakage(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef | None,
                  folder: Path) -> tuple[SplitRef, Section]:
    """Near-copies across splits that the group keys missed (tasks.audit.leakage), on the first base
    model's embeddings, and `data.leakage`: drop the less held-out copy of each pair, report, or
    fail. Reads the test inputs (logged as a "leakage check" read, never an evaluation): never
    their labels. Writes leakage_pairs.csv (and for images leakage_pairs.png)."""
    from tasks.audit.leakage import calibrate, cross_split_pairs, less_held_out_copies
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
    pairs = cross_split_pairs(ids, splits, features, calibration.threshold)
    for side in ("held_out", "other"):
        pairs[f"{side}_source"] = pairs[f"{side}_id"].map(table["source"])
        pairs[f"{side}_input"] = pairs[f"{side}_id"].map(table["input"])
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "leakage_pairs.csv", pairs.to_csv(index=False))
    files = ["leakage_pairs.csv"]
    if spec.modality == "image" and not pairs.empty:
        from tasks.reports.plots import leakage_figure, save_figure

        save_figure(leakage_figure(pairs.head(8)), folder / "leakage_pairs.png")
        files.append("leakage_pairs.png")
    shown = "; ".join(f"{r.held_out_split} {r.held_out_source} ~ {r.other_split} {r.other_source} ({r.similarity:.3f})"
                      for r in pairs.head(3).itertuples())
    print(f"Leakage check ({spec.candidates[0].describe()} embeddings, {calibration.describe()}): {len(pairs)} "
          "near-copy pair(s) across splits" + (f": {shown}" if shown else ""))
    if tracking is not None:
        from tasks.registry.tracking import client_for, log_params

        log_params(client_for(spec.workdir), tracking.run_id, {
            "leakage_threshold": round(calibration.threshold, 6), "leakage_pairs_found": len(pairs)})
    body = (f"Threshold: {calibration.describe()}.\n\n" + markdown_table(pairs[[
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


def finish_data_report(spec: Spec, dataset: DatasetRef, class_counts: dict[str, int], sections: list[Section],
                       tracking: TrackingRef | None, folder: Path, stopped: str | None = None) -> ReportRef:
    """Write report.md, show it in the Prefect UI, and log it with every file its sections wrote to
    the MLflow run (under quality/). `class_counts`: the label-quality check's (distinct examples)."""
    from tasks.reports.data_report import DataReport, write_report

    report = DataReport(str(spec.data.path), dataset.fingerprint, class_counts, spec.metric.class_name,
                        tuple(sections), stopped)
    path = write_report(report, folder)
    publish_markdown(artifact_key(spec.registry.model_name, "data-report"), report.markdown(),
                     f"Data report for {spec.data.path}: {report.verdict()}")
    print(f"Data report: {report.verdict()} ({path})")
    if tracking is not None:
        from tasks.registry.tracking import client_for, log_file

        client = client_for(spec.workdir)
        for name in dict.fromkeys([path.name, *(name.split("/")[0] for section in sections for name in section.files)]):
            if (folder / name).is_dir():  # the Data Docs site
                client.log_artifacts(tracking.run_id, str(folder / name), f"quality/{name}")
            else:
                log_file(client, tracking.run_id, folder / name, "quality")
    return ReportRef(path, report.verdict())


@step("4 load base model")
def load_base_model(spec: Spec) -> BaseModelRef:
    from tasks.models.backbones import load_backbone

    backbone = load_backbone(spec.model)
    groups = len(backbone.layer_groups())
    print(f"Base model {backbone.source}: {backbone.dim}-d embeddings, {groups} layer groups, "
          f"{backbone.parameter_count:,} parameters")
    return BaseModelRef(backbone.source, backbone.dim, groups, spec.model.family, spec.model.name,
                        backbone.weights.description, backbone.weights_sha256, backbone.parameter_count)

