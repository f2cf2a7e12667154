"""Recipe steps 1-4 as Prefect tasks: validate the config, load and audit the data, split it
before any training, and load the base model; then, for a scheduled or drift-triggered retrain,
whether there is anything new to learn from. Each returns plain values (paths and hashes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.spec import Spec, load_spec
from tasks.split import SplitRef
from tasks.step import artifact_key, publish_markdown, publish_table, step, tag_flow_run

if TYPE_CHECKING:
    from tasks.families import FamilyOptions
    from tasks.tournament import Tournament


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


@dataclass(frozen=True)
class Prepared:
    """What steps 2-4 hand to training: the data, its audit, the split and the base model (with
    several candidates: the tournament's choice, and its ranking for the fine-tuning diagnosis)."""

    dataset: DatasetRef
    quality: QualitySummary
    split: SplitRef
    base_model: BaseModelRef
    tournament: Tournament | None = None

    def ranking(self, spec: Spec) -> list[FamilyOptions]:
        """The base models to try, best first: the tournament's eligible ones, or the one model."""
        return self.tournament.ranking if self.tournament else spec.candidates[:1]


def prepare(spec: Spec, tracking: TrackingRef | None) -> Prepared:
    """Steps 2-4, shared by the training flow and `validate` (which tracks nothing, and loads
    every candidate instead of running their tournament)."""
    dataset = load_data(spec)                                   # 2. data + label quality
    quality = check_label_quality(spec, dataset, tracking)
    split = split_before_training(spec, dataset, tracking)      # 3. test quarantined from here
    split = audit_label_errors(spec, dataset, split, tracking)  # 3b. labels the data disputes
    if spec.tournament is None or tracking is None:             # 4. pretrained, offline
        models = [load_base_model(spec.with_model(model)) for model in spec.candidates]
        return Prepared(dataset, quality, split, models[0])
    from tasks.learn import contract_for
    from tasks.tournament import choose_base_model

    tournament = choose_base_model(spec, dataset, split, tracking, contract_for(spec, dataset, split))
    return Prepared(dataset, quality, split, load_base_model(spec.with_model(tournament.chosen)), tournament)


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
    from tasks.champion import current_champion
    from tasks.tracking import client_for, log_text

    if trigger == "manual":
        return None
    client = client_for(spec.workdir)
    champion = current_champion(client, spec.registry.model_name, spec.registry.alias)
    if champion is None or champion.tags.get("data_fingerprint") != dataset.fingerprint:
        return None
    reason = (f"nothing new to learn from: the data ({dataset.fingerprint[:12]}) is the data champion version "
              f"{champion.version} was trained on, so this {trigger}-triggered run trains and registers nothing")
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
    from tasks.backbones import locate_weights
    from tasks.errors import SpecError, WeightsError

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
    from tasks.tracking import client_for, end_run

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

    from tasks.tracking import client_for, experiment_id, log_file, log_params, start_run

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
    from tasks.data import fingerprint, load_examples, save_table
    from tasks.errors import DataError
    from tasks.odd_inputs import take_out

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


@step("2b check label quality")
def check_label_quality(spec: Spec, dataset: DatasetRef, tracking: TrackingRef | None) -> QualitySummary:
    """Run the GX suite; stop the flow with the report when an error-level check fails."""
    from tasks.data import LoadedData, read_table
    from tasks.errors import DataQualityError
    from tasks.quality import audit_labels

    loaded = LoadedData(read_table(dataset.table_path), dataset.declared_classes, dataset.skipped_files)
    report = audit_labels(loaded, spec.data, spec.metric, dataset.odd_inputs, dataset.conflicts_dropped)
    markdown = report.markdown()
    publish_markdown(artifact_key(spec.registry.model_name, "label-quality"), markdown,
                     f"Label-quality report for {spec.data.path}")
    if tracking:
        from tasks.tracking import client_for, log_text

        log_text(client_for(spec.workdir), tracking.run_id, markdown, "quality/label_quality.md")
        taken_out = [("odd input", line) for line in dataset.odd_inputs] + \
            [("conflicting labels", line) for line in dataset.conflicts_dropped]
        if taken_out:
            import pandas as pd

            log_text(client_for(spec.workdir), tracking.run_id,
                     pd.DataFrame(taken_out, columns=["why", "what"]).to_csv(index=False), "quality/taken_out.csv")
    warnings = tuple(f"{w.name}: {w.detail}" for w in report.warnings)
    for warning in warnings:
        print(f"WARNING {warning}")
    if not report.passed:
        raise DataQualityError(f"{spec.data.path}: the label-quality check failed; nothing was trained.\n"
                               f"{report.failure_summary()}")
    print(f"Label-quality checks passed ({len(report.checks)} checks, {len(report.warnings)} warning(s))")
    return QualitySummary(report.class_counts, warnings)


@step("3 split before training")
def split_before_training(spec: Spec, dataset: DatasetRef, tracking: TrackingRef | None) -> SplitRef:
    from tasks.data import read_table
    from tasks.errors import DataError
    from tasks.split import split_examples, split_history_folder

    try:
        split = split_examples(read_table(dataset.table_path), spec.split, dataset.fingerprint,
                               split_history_folder(spec.workdir, spec.registry.model_name), spec.modality)
    except DataError as error:
        raise DataError(f"{spec.data.path}: {error}") from None
    for warning in split.warnings:
        print(f"WARNING {warning}")
    publish_table(artifact_key(spec.registry.model_name, "split-sizes"),
                  [{"split": k, "examples": v} for k, v in split.sizes.items()],
                  "Examples per split (test quarantined until the final evaluation)")
    if tracking:
        from tasks.tracking import client_for, log_file, log_params

        client = client_for(spec.workdir)
        log_file(client, tracking.run_id, split.manifest_path, "split")
        log_params(client, tracking.run_id, {"data_fingerprint": dataset.fingerprint,
                                             "test_fingerprint": split.test_fingerprint,
                                             "split_manifest_sha256": split.manifest_sha256,
                                             **{f"n_{k}": v for k, v in split.sizes.items()}})
    notes = f" ({'; '.join(split.notes)})" if split.notes else ""
    print("Split: " + ", ".join(f"{k} {v}" for k, v in split.sizes.items()) + notes)
    return split


@step("3b audit labels (train and validation)")
def audit_label_errors(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef | None) -> SplitRef:
    """Rank the training and validation examples whose label the data disputes (tasks.label_audit),
    on the first base model's cached embeddings (the baseline reuses them), and act on
    `data.label_issues`: report, drop (a new manifest lists the dropped ids), or fail."""
    from tasks.backbones import load_backbone
    from tasks.data import read_table
    from tasks.devices import resolve_num_workers
    from tasks.errors import DataQualityError
    from tasks.features import cached_embeddings, open_cache
    from tasks.label_audit import find_label_issues, find_outliers, to_drop
    from tasks.split import train_val_ids, without_examples

    train_ids, val_ids = train_val_ids(split.manifest_path)
    table = read_table(dataset.table_path).drop_duplicates("example_id").set_index("example_id")
    examples = table.loc[train_ids + val_ids].reset_index()
    backbone = load_backbone(spec.candidates[0])
    features, computed = cached_embeddings(open_cache(spec.workdir, backbone), backbone,
                                           list(examples["example_id"]), list(examples["input"]),
                                           spec.train.batch_size, resolve_num_workers(spec.runtime.num_workers))
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
    if tracking is not None:
        _publish_label_issues(spec, tracking, found)
        from tasks.tracking import client_for, log_params, log_text

        client = client_for(spec.workdir)
        log_text(client, tracking.run_id, outliers.to_csv(index=False), "quality/outliers.csv")
        log_params(client, tracking.run_id, {"label_audit_embeddings_computed": computed,
                                             "label_issues_found": len(found)})
    if found.empty or spec.data.label_issues == "report":
        return split
    if spec.data.label_issues == "fail":
        raise DataQualityError(f"{spec.data.path}: {len(found)} label(s) disputed by the data (data.label_issues: "
                               f"fail); the most doubtful: {shown}. Fix: correct them, or set data.label_issues: "
                               "report or drop.")
    dropped = to_drop(issues, spec.data.max_drop_fraction)
    capped = f" (capped at max_drop_fraction {spec.data.max_drop_fraction:g})" if len(dropped) < len(found) else ""
    print(f"Dropping {len(dropped)} of {len(found)} disputed example(s) from train/validation{capped}")
    return without_examples(split, dropped, f"labels disputed by the label audit (data.label_issues: drop){capped}")


def _publish_label_issues(spec: Spec, tracking: TrackingRef, found: Any) -> None:
    """label_issues.csv on the parent run, a Prefect table of the first 50, and for images a
    contact sheet of the most doubtful ones."""
    from tasks.tracking import client_for, log_figure, log_text

    client = client_for(spec.workdir)
    log_text(client, tracking.run_id, found.to_csv(index=False), "quality/label_issues.csv")
    publish_table(artifact_key(spec.registry.model_name, "label-issues"),
                  found.head(50).drop(columns=["input"]).to_dict("records") or [{"disputed labels": 0}],
                  f"Labels the data disputes ({len(found)}), most doubtful first; all in quality/label_issues.csv "
                  f"of MLflow run {tracking.run_id}")
    if spec.modality == "image" and not found.empty:
        from tasks.plots import suspects_figure

        log_figure(client, tracking.run_id, suspects_figure(found.head(16)), "quality/label_suspects.png")


@step("4 load base model")
def load_base_model(spec: Spec) -> BaseModelRef:
    from tasks.backbones import load_backbone

    backbone = load_backbone(spec.model)
    groups = len(backbone.layer_groups())
    print(f"Base model {backbone.source}: {backbone.dim}-d embeddings, {groups} layer groups, "
          f"{backbone.parameter_count:,} parameters")
    return BaseModelRef(backbone.source, backbone.dim, groups, spec.model.family, spec.model.name,
                        backbone.weights.description, backbone.weights_sha256, backbone.parameter_count)

