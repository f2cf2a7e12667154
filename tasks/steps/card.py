"""Recipe step 7c as a Prefect task: the model card, written from what the run decided and measured,
logged to the run and shown as the registered version's description."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.config.spec import OneModelSpec
from tasks.steps.refs import GateOutcome, Prepared, StageResult, TestResult, TrackingRef
from tasks.steps.step import step

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from tasks.reports.model_card import GuidelineFacts


@step("7c write model card")
def write_model_card(spec: OneModelSpec, prepared: Prepared, stages: list[StageResult], selected: StageResult,
                     test: TestResult, outcome: GateOutcome, tracking: TrackingRef,
                     decisions: list[dict[str, Any]] | None = None) -> str:
    from tasks.registry.serving import INPUT_DESCRIPTION
    from tasks.registry.tracking import log_text
    from tasks.reports.model_card import CardFacts, render_model_card

    modality = spec.model.MODALITY
    dataset, quality, split, base_model = prepared.dataset, prepared.quality, prepared.split, prepared.base_model
    input_size = spec.model.input_size
    card = render_model_card(CardFacts(
        task=spec.task, metric=spec.metric.describe(),
        base_model=(f"{spec.model.describe()}: features fitted on the training split, a logistic regression head; "
                    "no layer groups to fine-tune" if spec.model.FITS_ON_TRAIN else
                    f"{spec.model.family} {spec.model.name}: {base_model.dim}-d embeddings, "
                    f"{base_model.layer_groups} layer groups"),
        classic_anchor=_anchor_line(spec, prepared, outcome),
        base_model_source=base_model.source,
        base_model_provenance={"family": base_model.family, "name": base_model.name,
                               "weights": base_model.weights, "weights sha256": base_model.weights_sha256,
                               "parameters": f"{base_model.parameters:,}"},
        tournament=(prepared.tournament.markdown(spec.metric.key, test.guard.key if test.guard else None)
                    if prepared.tournament else None),
        settings={input_size[0]: input_size[1], **spec.train.model_dump(),
                  **{f"finetune.{k}": v for k, v in spec.finetune.model_dump().items()},
                  **{f"runtime.{k}": v for k, v in spec.runtime.model_dump().items()},
                  **{f"split.{k}": v for k, v in spec.split.model_dump().items()},
                  **{f"gate.{k}": v for k, v in spec.gate.model_dump().items()},
                  "retrain.start_from": spec.retrain.start_from, "started from": selected.started_from},
        data_path=str(spec.data.path), data_fingerprint=dataset.fingerprint, test_fingerprint=split.test_fingerprint,
        manifest_sha256=split.manifest_sha256, split_sizes=split.sizes, class_counts=quality.class_counts,
        quality_warnings=[*quality.warnings, *split.warnings],
        stages=[(s.name, s.val_value, _with_decision(s, decisions or [])) for s in stages],
        selected_stage=selected.name,
        guard=(f"{test.guard.describe()}; on test: {test.guard_value:.4f}" if test.guard else None),
        operating_point=(f"{test.operating_point.describe()} (chosen on validation"
                         f"{_confidence_note(spec)})" if test.operating_point
                         else "argmax (the likeliest class)"),
        test_value=test.value, target=spec.metric.target, decision=outcome.decision.verdict,
        decision_reason=outcome.decision.reason, registered_version=outcome.registration.version,
        mlflow_run_id=tracking.run_id,
        guideline=guideline_facts(spec, tracking.client, tracking.run_id, test.champion.version),
        contract_gap=contract_gap(spec, prepared, test, tracking)))
    client = tracking.client
    log_text(client, tracking.run_id, card, "model_card.md")
    # The registry page renders a version's description as markdown: the card is what a reviewer sees.
    client.update_model_version(outcome.registration.model_name, outcome.registration.version,
                                description=f"{card}\n## Calling it\n\nSend {INPUT_DESCRIPTION[modality]}.\n")
    return card


def contract_gap(spec: OneModelSpec, prepared: Prepared, test: TestResult, tracking: TrackingRef) -> str | None:
    """A per-class recall or precision contract missed on test: how far the operating point was
    from the target on validation, the guard score it kept, and what would most likely close the
    gap (`tasks.decisions.operating_point.closing_the_gap`). None otherwise."""
    from tasks.decisions.operating_point import closing_the_gap

    metric = spec.metric
    if metric.class_name is None or metric.name == "f1" or test.value >= metric.target:
        return None
    logged = tracking.client.get_run(tracking.run_id).data.metrics
    key = f"val_at_threshold_{metric.key}"
    if key not in logged or "val_at_threshold_trials" not in logged:  # argmax: no operating point was chosen
        return None
    sizes = prepared.split.sizes
    guard = (f", keeping {test.guard.key} {logged[f'val_at_threshold_{test.guard.key}']:.4f} there"
             if test.guard and f"val_at_threshold_{test.guard.key}" in logged else "")
    advice = closing_the_gap(logged[key], int(logged["val_at_threshold_trials"]), sizes["test"] / max(sizes["val"], 1),
                             metric.confidence, metric.target, metric.class_name, metric.name,
                             sizes["val"] / max(sum(sizes.values()), 1))
    missed = metric.target - test.value
    return (f"test {metric.key} {test.value:.4f} missed the target {metric.target:g} by {missed:.4f}. On validation"
            f" the operating point scored {logged[key]:.4f} (lower bound "
            f"{logged.get('val_at_threshold_lower_bound', float('nan')):.4f}){guard}. What would most likely close "
            f"the gap: {advice}.")


def _anchor_line(spec: OneModelSpec, prepared: Prepared, outcome: GateOutcome) -> str | None:
    """The anchor's score and how the chosen model compares (the one plain line), for the card."""
    anchor, check = prepared.anchor, outcome.decision.classic
    if anchor is None:
        return None
    line = anchor.describe(spec.metric.key) + " (trained on train, scored on validation, never on test)"
    return line + (f". {check.line(spec.metric.key)}" if check else ". gate.beat_classic: off (not compared)")


def guideline_facts(spec: OneModelSpec, client: MlflowClient, run_id: str,
                    champion_version: str | None) -> GuidelineFacts | None:
    """The guideline sha256 this run logged at step 1 beside the one the champion's run logged, so
    the card says when the rules the labels follow changed between the two versions."""
    from tasks.registry.tracking import GUIDELINE_PARAM, run_param
    from tasks.reports.model_card import GuidelineFacts

    sha256 = run_param(client, run_id, GUIDELINE_PARAM)
    champion_sha256 = None
    if champion_version is not None:
        champion_run = client.get_model_version(spec.registry.model_name, champion_version).run_id
        champion_sha256 = run_param(client, str(champion_run), GUIDELINE_PARAM) if champion_run else None
    if sha256 is None and champion_sha256 is None:
        return None
    name = spec.data.guideline.name if spec.data.guideline is not None and sha256 else None
    return GuidelineFacts(name, sha256, champion_version, champion_sha256)


def _confidence_note(spec: OneModelSpec) -> str:
    """How sure the threshold was made of the test split (recall/precision contracts bound their score)."""
    if spec.metric.name not in ("recall", "precision"):
        return ""
    return (f" so that the lower bound of {spec.metric.key} at confidence {spec.metric.confidence:g} for a test "
            "split of this size reaches the target, where a threshold allows it")


def _with_decision(stage: StageResult, decisions: list[dict[str, Any]]) -> str:
    """A stage's notes, then what was decided after it and why (the decision log, in the card)."""
    taken = [d for d in decisions if d["stage"] == stage.name]
    return stage.notes + "".join(f"; **{d['action']}**: {d['reason']}" for d in taken).replace("|", "\\|")
