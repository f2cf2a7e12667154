"""The recipe as a Prefect flow: each step is one task from `tasks/`; this file only orders them.

Runs on the local ephemeral engine when PREFECT_API_URL is unset, against a real Prefect server
(and its UI) when it is set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from prefect import flow

from flows.prepare import prepare, run_tournament
from tasks.config.alternatives import offline_alternatives
from tasks.config.families import FamilyOptions
from tasks.config.spec import OneModelSpec, Spec
from tasks.data.split import SplitRef
from tasks.decisions.anchor import ClassicAnchor, ClassicCheck, check_against_anchor
from tasks.decisions.log import Decisions
from tasks.decisions.tournament import CandidateResult
from tasks.steps.anchor import ANCHOR_STAGE, classic_anchor
from tasks.steps.base_model import load_base_model
from tasks.steps.card import write_model_card
from tasks.steps.data import load_data
from tasks.steps.learn import gradual_unfreezing, starting_point, train_baseline
from tasks.steps.limits import retrain_limit
from tasks.steps.monitor import store_drift_reference, unchanged_since_champion
from tasks.steps.refs import GateOutcome, Prepared, QualitySummary, StageResult, TestResult, TrackingRef, UnchangedData
from tasks.steps.release import (
    all_or_nothing,
    announce_decision,
    evaluate_once_on_test,
    gate_and_register,
    move_alias,
    promotion_lock,
    set_operating_point,
)
from tasks.steps.resume import cached, fill_resumed_run, resuming, start_chain
from tasks.steps.select import select_on_validation, write_decision_log
from tasks.steps.step import flow_run_name, label_flow_run
from tasks.steps.validate import tracked_flow_run, validate_config
from tasks.training.metrics import Contract

UNFIT = ("stop_no_gain", "no_layer_groups")  # a candidate's last action that sends a tournament to the next one
Trigger = Literal["manual", "schedule", "drift", "labels"]  # what started a run: its name and tags say so


@dataclass(frozen=True)
class RunSummary:
    spec: Spec
    run_id: str
    prepared: Prepared
    stages: list[StageResult]
    decisions: list[dict[str, Any]]
    selected: StageResult
    test: TestResult
    outcome: GateOutcome

    @property
    def quality(self) -> QualitySummary:
        return self.prepared.quality

    @property
    def split(self) -> SplitRef:
        return self.prepared.split


@flow(name="transfer-learning", flow_run_name=flow_run_name(), log_prints=True)  # <model>-<trigger>-<UTC stamp>
def transfer_learning(config_path: str, data_path: str | None = None, trigger: Trigger = "manual",
                      resume: bool = False) -> RunSummary | UnchangedData:
    """`resume`: continue the last killed run of this model (`tasks.steps.resume`): a new flow run
    and MLflow run, the finished steps taken from the chain's persisted results."""
    spec = validate_config(config_path, data_path)                            # 1. the contract
    label_flow_run(spec.registry.model_name, trigger)
    with retrain_limit(spec.registry.model_name):
        chain = start_chain(spec, config_path, resume)                        # fresh, or the killed run's
        with tracked_flow_run(spec, config_path, chain) as tracking, resuming(chain):
            summary = run_recipe(spec, tracking, trigger)
            if chain.earlier_runs:
                fill_resumed_run(chain, tracking)                             # what cached steps had logged
    return summary


def run_recipe(spec: Spec, tracking: TrackingRef, trigger: Trigger) -> RunSummary | UnchangedData:
    """Steps 2-7 inside the run's MLflow parent run and resume chain."""
    dataset = load_data(spec)                                                 # 2a. the data and its fingerprint
    unchanged = unchanged_since_champion(spec, dataset, tracking, trigger)
    if unchanged:                                              # a retrain with nothing new: no audit, no split
        return unchanged
    prepared = prepare(spec, tracking, dataset)                               # 2-4. audit, split, model
    split = prepared.split
    contract = prepared.contract                                              # the metric and its guard
    anchor = cached(classic_anchor)(spec, dataset, split, tracking, contract)  # 5. the classic score to beat
    prepared = replace(prepared, anchor=anchor)
    stages, decisions, trained = train_candidates(spec, prepared, tracking, contract)  # 5-6.
    selected = cached(select_on_validation)(spec, stages, decisions, tracking, contract, list(dataset.classes))
    chosen, prepared = trained[selected.name]                                 # the selected stage's base model
    classic = against_anchor(chosen, selected, anchor, contract, decisions)   # one plain line when not beaten
    write_decision_log(chosen, decisions.entries, selected.name, tracking)
    selected = set_operating_point(chosen, dataset, split, selected, tracking, contract)  # per-class
    with promotion_lock(chosen):                                              # 7. test once, gate
        test = evaluate_once_on_test(chosen, dataset, split, selected, tracking, contract)
        outcome = gate_and_register(chosen, dataset, split, selected, test, tracking, classic)  # a version, no alias
        with all_or_nothing(chosen, outcome, tracking):                       # else the version is removed
            write_model_card(chosen, prepared, stages, selected, test, outcome, tracking, decisions.entries)
            store_drift_reference(chosen, dataset, split, selected, outcome, tracking)  # 7d. drift reference
            move_alias(chosen, outcome, tracking)                             # 7e. the last act
        announce_decision(chosen, outcome, tracking)                          # 7f. artifacts, event
    return RunSummary(chosen, tracking.run_id, prepared, stages, decisions.entries, selected, test, outcome)


def against_anchor(chosen: OneModelSpec, selected: StageResult, anchor: ClassicAnchor, contract: Contract,
                   decisions: Decisions) -> ClassicCheck | None:
    """The selected model against the classic anchor on validation (None under gate.beat_classic:
    off), said in one plain line and kept in the decision log."""
    if chosen.gate.beat_classic == "off":
        return None
    check = check_against_anchor(selected.name, selected.val_scores, chosen.model.CLASSIC, anchor, contract,
                                 chosen.gate.beat_classic)
    decisions.add(selected.name, "beats_classic" if check.beaten else "below_classic", check.line(chosen.metric.key),
                  {"best_val_metric": check.chosen_value})
    return check


def train_candidates(spec: Spec, prepared: Prepared, tracking: TrackingRef, contract: Contract
                     ) -> tuple[list[StageResult], Decisions, dict[str, tuple[OneModelSpec, Prepared]]]:
    """Steps 5-6 for the chosen base model; when it proves unfit (fine-tuning gains nothing over its
    baseline, `stop_no_gain`, or a classic one is below the target) the next candidate gets its own
    baseline and stages (`next_candidate`): a tournament's next-ranked one, or for a model configured
    alone under `model.on_unfit: try_candidates`, the offline alternatives ranked like a tournament's.
    Returns every stage, the decision log, and each stage's one-model config and preparation."""
    dataset, split = prepared.dataset, prepared.split
    ranking = prepared.ranking(spec)
    stages: list[StageResult] = []
    decisions, trained = Decisions(), dict[str, tuple[OneModelSpec, Prepared]]()
    if prepared.anchor:
        decisions.add(ANCHOR_STAGE, "classic_anchor", prepared.anchor.describe(spec.metric.key) + ": the chosen "
                      "model is compared with it on validation", {"best_val_metric": prepared.anchor.val_value})
    rank = 0
    while True:
        model = ranking[rank]
        one = spec.with_model(model)
        here = prepared if rank == 0 else replace(prepared, base_model=cached(load_base_model)(one))
        prefix = "" if rank == 0 else f"{model.name.rsplit('/', 1)[-1]}-"
        start = starting_point(one, split, tracking, tournament=rank > 0 or spec.tournament is not None)
        baseline = cached(train_baseline)(one, dataset, split, tracking, start, contract,  # 5. frozen, cached
                                  class_weights=one.finetune.class_weights == "on", prefix=prefix)
        found, log = gradual_unfreezing(one, dataset, split, baseline, tracking, start, contract, prefix)  # 6.
        stages += found
        decisions.entries += log.entries
        trained |= {stage.name: (one, here) for stage in found}
        verdict = log.entries[-1]["action"]
        if verdict not in UNFIT:
            break
        if rank == 0 and spec.tournament is None and model.on_unfit == "try_candidates":
            ranking = [model, *try_alternatives(one, prepared, tracking, contract, decisions, found[-1].name)]
        if rank + 1 == len(ranking):
            break
        following = ranking[rank + 1]
        why = ("gains nothing over its frozen baseline" if verdict == "stop_no_gain" else
               "is below the target with no layer groups to fine-tune")
        decisions.add(found[-1].name, "next_candidate",
                      f"{model.describe()} {why}; the next candidate ({rank + 2} of {len(ranking)}) is "
                      f"{following.describe()}: its baseline and stages run next", {"candidate_rank": rank + 2})
        rank += 1
    return stages, decisions, trained


def try_alternatives(spec: OneModelSpec, prepared: Prepared, tracking: TrackingRef, contract: Contract,
                     decisions: Decisions, stage: str) -> list[FamilyOptions]:
    """`model.on_unfit: try_candidates`: the configured model and its modality's offline
    alternatives (`tasks.config.alternatives`) probed on validation like a tournament's candidates;
    the alternatives best first. The decision log names each, why it is tried, and its probe score."""
    alternatives = offline_alternatives(spec.model)
    tournament = run_tournament(spec.with_candidates([spec.model, *(a.model for a in alternatives)]),
                                prepared.dataset, prepared.split, tracking, contract)
    ranked = [model for model in tournament.ranking if model != spec.model]
    probed = tournament.results[1:]  # in the candidates' order, after the configured model's
    tried = "; ".join(f"{a.model.describe()} ({a.why}): {_probe_line(result, spec.metric.key)}"
                      for a, result in zip(alternatives, probed, strict=True))
    decisions.add(stage, "try_candidates",
                  f"{spec.model.describe()} was the only model configured and proved unfit; model.on_unfit: "
                  f"try_candidates probed the offline alternatives on validation ({tried}); "
                  + (f"the best, {ranked[0].describe()}, is trained next, the others in turn while each proves "
                     "unfit" if ranked else "none is eligible, so the run goes on with the configured model's stages"),
                  {"candidates": len(ranked)})
    return ranked


def _probe_line(result: CandidateResult, metric_key: str) -> str:
    if result.val_value is None:
        return result.status
    return f"probe {metric_key} {result.val_value:.4f}"


@flow(name="validate-config-and-data", flow_run_name=flow_run_name("validate"), log_prints=True)
def validate_only(config_path: str, data_path: str | None = None) -> tuple[Spec, Prepared]:
    """Steps 1-4 without training or tracking: is this config and this data ready to run?"""
    spec = validate_config(config_path, data_path)
    return spec, prepare(spec, None)
