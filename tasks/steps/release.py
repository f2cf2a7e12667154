"""Recipe steps 6b-7f as Prefect tasks: the operating point (chosen on validation, the last choice
made before the test read), one evaluation on the quarantined test split, the gate, the registry
(alias only on pass) and the announcement. The model card (7c) is tasks/steps/card.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from tasks.config.spec import OneModelSpec
from tasks.data.split import SplitRef
from tasks.decisions.anchor import ClassicCheck
from tasks.decisions.gate import ChampionComparison, GateDecision
from tasks.registry.serving import Registration
from tasks.steps.refs import DatasetRef, GateOutcome, StageResult, TestResult, TrackingRef
from tasks.steps.resume import resumed_runs
from tasks.steps.step import artifact_key, publish_markdown, step, tag_flow_run
from tasks.training.metrics import Contract

if TYPE_CHECKING:
    from mlflow import MlflowClient


PREVIOUS_CHAMPION = "previous_champion"  # the champion version a run was compared with ("none": the first)


@contextmanager
def promotion_lock(spec: OneModelSpec) -> Iterator[None]:
    """Step 7 as one critical section per model: read the champion, read the test ids once, score
    both, decide, set the alias. No other run can promote in between, so no run moves the alias on
    a stale view of the champion. A file lock holds it for every process sharing this workdir; with
    a Prefect server, its global concurrency limit `transferflow-promote-<model>` (leased, so a
    crashed holder frees it) also holds it for processes on other machines. Always in this order."""
    from tasks.core.atomic import exclusive_lock
    from tasks.steps.limits import promotion_limit

    with (exclusive_lock(spec.workdir / "locks" / f"promote-{spec.registry.model_name}.lock"),
          promotion_limit(spec.registry.model_name)):
        yield


def emit_gate_event(model_name: str, decision: GateDecision, registration: Registration) -> None:
    """`transferflow.model.promoted` / `.rejected` on the resource `transferflow.model.<name>`:
    what users hang their own automations (notifications, deployments) on."""
    from prefect.events import emit_event

    emit_event(event=f"transferflow.model.{decision.verdict}",
               resource={"prefect.resource.id": f"transferflow.model.{model_name}",
                         "prefect.resource.name": model_name},
               payload={"version": registration.version, "metric": decision.metric,
                        "test_metric": decision.test_value, "target": decision.target,
                        "champion_version": decision.champion.version,
                        "champion_test_metric": decision.champion.value, "reason": decision.reason})


def version_history(client: MlflowClient, model_name: str, alias: str) -> str:
    """A markdown table of the model's versions, newest first, from their evidence."""
    from datetime import UTC, datetime

    from tasks.registry.champion import current_champion
    from tasks.registry.evidence import version_evidence

    holder_version = current_champion(client, model_name, alias)  # search results may carry no aliases
    holder = str(holder_version.version) if holder_version else None
    lines = [f"# {model_name}: version history", "",
             "| version | registered (UTC) | train / val / test | test metric | champion then | decision |",
             "| ---: | --- | --- | ---: | --- | --- |"]
    versions = sorted(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: -int(v.version))
    for v in versions:
        tags = version_evidence(client, v)
        when = datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        sizes = " / ".join(tags.get(f"n_{name}", "?") for name in ("train", "val", "test"))
        previous = tags.get(PREVIOUS_CHAMPION, tags.get("champion_version", "?"))  # the key before it was renamed
        champion_then = (f"v{previous}: {float(tags['champion_test_metric']):.4f}"
                         if "champion_test_metric" in tags else previous)
        marker = f" (**{alias}**)" if str(v.version) == holder else ""
        lines.append(f"| {v.version}{marker} | {when} | {sizes} | {tags.get('metric', '?')} "
                     f"{float(tags.get('test_metric', 'nan')):.4f} | {champion_then} | {tags.get('decision', '?')} |")
    return "\n".join(lines)


def champion_tags(champion: ChampionComparison) -> dict[str, str]:
    """Evidence about the champion this run was compared with (the one before it), for the new
    version's evidence and the parent run."""
    if champion.version is None:
        return {PREVIOUS_CHAMPION: "none"}
    tags = {PREVIOUS_CHAMPION: champion.version}
    if champion.left_out:
        tags["champion_test_examples_left_out"] = str(champion.left_out)
    if champion.value is None:
        return {**tags, "champion_comparison": f"skipped: {champion.skipped_because}"}
    return {**tags, "champion_test_metric": f"{champion.value:.6f}"}


def guard_tags(test: TestResult) -> dict[str, str]:
    """Evidence about the guard and the operating point, for the new version."""
    tags = {"operating_point": test.operating_point.describe() if test.operating_point else "argmax"}
    if test.guard is None:
        return tags
    return {**tags, "guard": test.guard.describe(), "test_guard_value": f"{test.guard_value:.6f}"}


@step("6b set the operating point on validation")
def set_operating_point(spec: OneModelSpec, dataset: DatasetRef, split: SplitRef, selected: StageResult,
                        tracking: TrackingRef, contract: Contract) -> StageResult:
    """Per-class contracts: the threshold on p(class) chosen on validation probabilities of the
    selected model (see tasks.decisions.operating_point.choose_threshold), written into a new checkpoint that
    the test evaluation, registration and serving answer with. Aggregate contracts keep argmax."""
    if spec.metric.class_name is None:
        return selected
    import numpy as np

    from tasks.decisions.operating_point import choose_threshold, lower_bound
    from tasks.models.checkpoints import legacy_config, restore_selected, save_selected_answering_at
    from tasks.models.classifier import apply_operating_point, class_indices, predict_proba
    from tasks.models.devices import on_runtime_device
    from tasks.models.loader import Batches
    from tasks.registry.tracking import log_scores
    from tasks.training.metrics import classification_metrics

    classes, class_name = list(dataset.classes), spec.metric.class_name
    config = legacy_config(spec.model, classes)  # for a stage saved as a bare state dict
    classifier, _ = restore_selected(selected.checkpoint, selected.checkpoint_sha256, config)
    on_runtime_device(spec.runtime.device, classifier.backbone, classifier)
    val = dataset.train_val_examples(split)["val"]
    y_true = class_indices(val["label"], classes)
    probabilities = predict_proba(classifier, Batches(list(val["input"]), y_true, spec.train.batch_size,
                                                      classifier.backbone.preprocess))
    target = classes.index(class_name)
    test_to_val = split.sizes["test"] / max(split.sizes["val"], 1)  # sizes only: no test label is read
    point = choose_threshold(probabilities[:, target], y_true.numpy() == target, contract, test_to_val)
    if point is None:
        print(f"Operating point: no threshold on p({class_name}) keeps the guard "
              f"{contract.guard.describe() if contract.guard else ''} on validation; the model answers by argmax")
        return selected
    thresholded = selected.checkpoint.with_suffix(".operating-point.pt")
    path, path_sha256 = save_selected_answering_at(selected.checkpoint, selected.checkpoint_sha256, thresholded,
                                                   point, config)
    answers = apply_operating_point(probabilities, classes, point)
    scores = classification_metrics(y_true.numpy(), answers, classes)
    trials = int((y_true.numpy() == target).sum() if spec.metric.name == "recall" else (answers == target).sum())
    bound = float(lower_bound(np.array(scores[spec.metric.key]), np.array(trials), test_to_val,
                              spec.metric.confidence)) if spec.metric.name != "f1" else None
    client = tracking.client
    log_scores(client, tracking.run_id, {"operating_threshold": point.threshold})
    log_scores(client, tracking.run_id, scores, prefix="val_at_threshold_")
    if bound is not None:
        log_scores(client, tracking.run_id, {"val_at_threshold_lower_bound": bound, "val_at_threshold_trials": trials})
    client.set_tag(tracking.run_id, "operating_point", point.describe())
    guarded = f", {contract.guard.key} {scores[contract.guard.key]:.4f}" if contract.guard else ""
    bounded = f" (lower bound {bound:.4f} at confidence {spec.metric.confidence:g})" if bound is not None else ""
    print(f"Operating point: {point.describe()} (validation {spec.metric.key} {scores[spec.metric.key]:.4f}"
          f"{bounded}{guarded}; argmax gave {selected.val_value:.4f})")
    return replace(selected, checkpoint=path, checkpoint_sha256=path_sha256, operating_point=point.as_dict())


@step("7a evaluate once on the test set")
def evaluate_once_on_test(spec: OneModelSpec, dataset: DatasetRef, split: SplitRef, selected: StageResult,
                          tracking: TrackingRef, contract: Contract) -> TestResult:
    """The only reader of the test ids. Records the evaluation, and the ids it read, in the ledger."""
    from tasks.data.split import quarantined_test_ids
    from tasks.data.table import read_examples
    from tasks.decisions.gate import fresh_part_metric
    from tasks.models.checkpoints import legacy_config, restore_selected
    from tasks.models.classifier import apply_operating_point, class_indices, predict_proba
    from tasks.models.devices import on_runtime_device
    from tasks.models.loader import Batches
    from tasks.registry.champion import score_champion
    from tasks.registry.ledger import exposure_of, record_test_evaluation
    from tasks.registry.tracking import log_figure, log_scores
    from tasks.reports.plots import confusion_matrix_figure
    from tasks.training.metrics import classification_metrics, contract_value

    classes = list(dataset.classes)
    guard = contract.guard
    classifier, checkpoint = restore_selected(selected.checkpoint, selected.checkpoint_sha256,
                                              legacy_config(spec.model, classes))
    on_runtime_device(spec.runtime.device, classifier.backbone, classifier)
    test_ids = quarantined_test_ids(split.manifest_path, reader=f"evaluate_once_on_test run {tracking.run_id}")
    table = read_examples(dataset.table_path).loc[test_ids]
    y_true = class_indices(table["label"], classes)
    probabilities = predict_proba(classifier, Batches(list(table["input"]), y_true, spec.train.batch_size,
                                                      classifier.backbone.preprocess))
    # The operating point stored in the checkpoint, chosen on validation: never tuned on these labels.
    y_pred = apply_operating_point(probabilities, classes, checkpoint.operating_point)
    scores = classification_metrics(y_true.numpy(), y_pred, classes)
    value = contract_value(scores, spec.metric)
    client = tracking.client
    log_scores(client, tracking.run_id, scores, prefix="test_")
    log_figure(client, tracking.run_id, confusion_matrix_figure(
        y_true.numpy(), y_pred, classes, f"test confusion matrix ({selected.name})"), "plots/test_confusion_matrix.png")
    prior_uses, prior_evaluations = record_test_evaluation(
        client, spec.workdir, spec.registry.model_name, split.history, test_ids,
        {"test_fingerprint": split.test_fingerprint, "data_fingerprint": dataset.fingerprint,
         "source_run_id": tracking.run_id, "checkpoint_sha256": selected.checkpoint_sha256}, spec.metric.key, value,
        repeats_runs=resumed_runs())
    exposure = exposure_of(prior_uses, prior_evaluations)
    fresh_value = fresh_part_metric(y_true.numpy(), y_pred, [prior_uses[i] for i in test_ids], classes,
                                    spec.metric, spec.gate.min_fresh_test)
    if fresh_value is not None:
        log_scores(client, tracking.run_id, {spec.metric.key: fresh_value}, prefix="test_fresh_")
    champion = score_champion(client, spec.registry.model_name, spec.registry.alias, test_ids, list(table["input"]),
                              y_true.numpy(), y_pred, classes, spec.metric, spec.train.batch_size,
                              spec.gate.min_fresh_test, guard)
    guarded = f" ({guard.key} {scores[guard.key]:.4f}, guard {guard.floor:.4f})" if guard else ""
    print(f"Test {spec.metric.key}: {value:.4f}{guarded} on {len(test_ids)} examples; {exposure.describe()}; "
          f"{champion.describe(value, spec.gate.max_regression)}")
    return TestResult(scores, value, len(test_ids), exposure, fresh_value, champion, guard, checkpoint.operating_point)


@step("7b gate and register")
def gate_and_register(spec: OneModelSpec, dataset: DatasetRef, split: SplitRef, selected: StageResult,
                      test: TestResult, tracking: TrackingRef, classic: ClassicCheck | None = None) -> GateOutcome:
    from tasks.decisions.gate import decide
    from tasks.models.checkpoints import legacy_config, read_checkpoint
    from tasks.registry.evidence import log_evidence, version_tags
    from tasks.registry.lineage import MANIFEST_TAG, SPLIT_FOLDER, SPLIT_HISTORY_TAG, WARM_START_TAG, warm_start_version
    from tasks.registry.serving import log_and_register

    decision = decide(test.value, spec.metric, test.exposure, test.fresh_value, spec.gate.min_fresh_test,
                      test.champion, spec.gate.max_regression, test.guard, test.guard_value, classic)
    client = tracking.client
    champion_evidence = champion_tags(test.champion)
    evidence = {
        "metric": spec.metric.key, "test_metric": f"{test.value:.6f}", "target": f"{spec.metric.target:g}",
        "data_fingerprint": dataset.fingerprint, "test_fingerprint": split.test_fingerprint,
        "split_manifest_sha256": split.manifest_sha256, "decision": decision.verdict,
        "decision_reason": decision.reason, "test_examples_fresh": str(test.exposure.fresh),
        "test_examples_seen_before": str(test.exposure.seen_before),
        "test_max_prior_uses": str(test.exposure.max_prior_uses),
        **({"test_fresh_metric": f"{test.fresh_value:.6f}"} if test.fresh_value is not None else {}),
        **champion_evidence, **guard_tags(test),
        "selected_stage": selected.name, "started_from": selected.started_from,
        WARM_START_TAG: warm_start_version(selected.started_from) or "none", SPLIT_HISTORY_TAG: split.history,
        MANIFEST_TAG: f"{SPLIT_FOLDER}/{split.manifest_path.name}",
        "checkpoint_sha256": selected.checkpoint_sha256,
        "run_id": tracking.run_id, **{f"n_{name}": str(size) for name, size in split.sizes.items()},
        **({"classic_anchor": classic.anchor, "classic_val_metric": f"{classic.anchor_value:.6f}",
            "beats_classic": str(classic.beaten).lower()} if classic else {}),
    }
    log_evidence(client, tracking.run_id, evidence)  # all of it; the version shows a handful
    checkpoint = read_checkpoint(selected.checkpoint, legacy_config(spec.model, list(dataset.classes)))
    registration = log_and_register(client, tracking.run_id, checkpoint, spec.train.batch_size,
                                    spec.registry.model_name, spec.registry.alias,
                                    version_tags(evidence, spec.metric.describe(), spec.model.describe()),
                                    promote=False, model_description=model_description(spec))
    print(f"Gate {decision.verdict.upper()}: {decision.reason}; registered version {registration.version} "
          "(the alias moves, if promoted, once its card and drift reference are stored)")
    return GateOutcome(decision, registration, selected.name)


def model_description(spec: OneModelSpec) -> str:
    """The registered model's page: what the model is for and the contract every version is held to."""
    return (f"{spec.task}\n\nContract: {spec.metric.describe()} on an untouched test split; a version holds the "
            f"alias `{spec.registry.alias}` only if it meets it and does not fall behind the version before "
            f"(gate.max_regression {spec.gate.max_regression:g}). Each version's description is its model card; "
            "the `evidence.json` of the run that registered it holds the whole evidence.")


def run_summary(outcome: GateOutcome, alias: str, verdict: str | None = None) -> str:
    """The parent run's description, three lines: what was decided, the test metric against the
    target, the selected stage. `verdict` overrides the gate's (`incomplete`: the release stopped)."""
    decision, registration = outcome.decision, outcome.registration
    what = verdict or decision.verdict
    where = {"promoted": f"version {registration.version} of `{registration.model_name}` holds `{alias}`",
             "rejected": f"version {registration.version} registered, `{alias}` unchanged"}.get(
        what, f"the release stopped before `{alias}` moved; version {registration.version} was removed")
    return (f"**Decision: {what}**: {where}.\n\n"
            f"Test {decision.metric} {decision.test_value:.4f} vs target {decision.target:g} "
            f"({'met' if decision.test_value >= decision.target else 'missed'}).\n\n"
            f"Selected stage: {outcome.selected_stage or '?'} (chosen on validation).")


@contextmanager
def all_or_nothing(spec: OneModelSpec, outcome: GateOutcome, tracking: TrackingRef) -> Iterator[None]:
    """Around everything between registering a version and moving the alias (7c-7e): if any of it
    fails, the new version is removed (a half-released model never stays in the registry), the
    alias stays where it was, and the parent run is tagged `decision: incomplete` with the reason."""
    from tasks.core.errors import ReleaseError
    from tasks.registry.tracking import describe_run

    try:
        yield
    except BaseException as error:
        registration, client = outcome.registration, tracking.client
        client.delete_model_version(registration.model_name, registration.version)
        reason = f"{type(error).__name__}: {error}".strip()
        for key, value in {"decision": "incomplete", "decision_reason": reason,
                           "gate_verdict": outcome.decision.verdict}.items():
            client.set_tag(tracking.run_id, key, value)
        describe_run(client, tracking.run_id, run_summary(outcome, spec.registry.alias, "incomplete"))
        tag_flow_run("decision:incomplete")
        if not isinstance(error, Exception):
            raise
        raise ReleaseError(
            f"the release of '{registration.model_name}' stopped before the alias moved ({reason}): version "
            f"{registration.version} was removed, alias '{spec.registry.alias}' is unchanged, and MLflow run "
            f"{tracking.run_id} is tagged decision: incomplete. Fix: the cause above, then run again.") from error


@step("7e move the alias")
def move_alias(spec: OneModelSpec, outcome: GateOutcome, tracking: TrackingRef) -> GateOutcome:
    """The last act of a release, inside the promotion lock: with the version's card and drift
    reference stored, the run's decision is tagged and then, if the gate passed, the alias moves.
    Nothing follows the move inside `all_or_nothing`, so a failure there can never remove a
    version that already holds the alias."""
    from tasks.registry.tracking import describe_run

    decision, registration, client = outcome.decision, outcome.registration, tracking.client
    for key, value in {"decision": decision.verdict, **champion_tags(decision.champion)}.items():
        client.set_tag(tracking.run_id, key, value)
    describe_run(client, tracking.run_id, run_summary(outcome, spec.registry.alias))
    if decision.passed:
        client.set_registered_model_alias(registration.model_name, spec.registry.alias, registration.version)
    return outcome


@step("7f announce the decision")
def announce_decision(spec: OneModelSpec, outcome: GateOutcome, tracking: TrackingRef) -> GateOutcome:
    """What the registry now says, for people and automations: the Prefect artifacts (the gate
    decision, the version history), the flow run's tag and the `transferflow.model.*` event."""
    decision, registration, client = outcome.decision, outcome.registration, tracking.client
    alias_note = (f"alias `{spec.registry.alias}` now points at version {registration.version}" if decision.passed
                  else f"alias `{spec.registry.alias}` unchanged")
    publish_markdown(artifact_key(spec.registry.model_name, "gate-decision"),
                     f"# Gate: {decision.verdict.upper()}\n\n{decision.reason}\n\n"
                     f"Registered `{registration.model_name}` version {registration.version}; {alias_note}.",
                     "Test metric vs target, and what happened in the registry")
    publish_markdown(artifact_key(spec.registry.model_name, "versions"),
                     version_history(client, spec.registry.model_name, spec.registry.alias),
                     f"Every registered version of {spec.registry.model_name} and what the gate decided")
    tag_flow_run(f"decision:{decision.verdict}")
    emit_gate_event(spec.registry.model_name, decision, registration)
    print(f"Gate {decision.verdict.upper()}: {alias_note}")
    return outcome
