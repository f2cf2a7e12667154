"""The small reference types the steps hand each other: plain values (paths, hashes, ids, small
dataclasses), so Prefect caching and retries stay sound. Heavy objects stay inside a step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.audit.cross_check import CrossCheck
from tasks.config.spec import Spec
from tasks.data.split import SplitRef
from tasks.decisions.anchor import ClassicAnchor
from tasks.decisions.gate import ChampionComparison, Exposure, GateDecision
from tasks.models.classifier import OperatingPoint
from tasks.registry.serving import Registration
from tasks.reports.data_report import Section
from tasks.training.fit import EpochRecord, FitResult
from tasks.training.metrics import Contract, Guard

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from tasks.config.families import FamilyOptions
    from tasks.decisions.tournament import Tournament


@dataclass(frozen=True)
class TrackingRef:
    """The flow run's MLflow parent run, and the store it lives in; steps that also serve
    `validate` accept None (no tracking)."""

    run_id: str
    experiment_id: str
    store: str  # the tracking URI: the workdir's SQLite file or MLFLOW_TRACKING_URI's server

    @property
    def client(self) -> MlflowClient:
        """The run's one client (one per store and process: a task on another worker opens its own)."""
        from tasks.registry.tracking import client_of

        return client_of(self.store)


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
    # The second labels of `data.cross_check` against the data's (its disagreements held out of the
    # table under `data.cross_check_disagreements: drop`); None without a cross-check.
    cross_check: CrossCheck | None = None
    # What the labels store (`label pull`) changed: labels corrected, examples added.
    labels_corrected: int = 0
    labels_added: int = 0

    def train_val_examples(self, split: SplitRef) -> dict[str, pd.DataFrame]:
        """{"train": ..., "val": ...}: the examples (indexed by id, with input, label and source) the
        split assigns to training and validation. The test examples are never here: only
        `tasks.data.split.quarantined_test_ids` reads them, for the one evaluation."""
        from tasks.data.split import train_val_ids
        from tasks.data.table import read_examples

        table = read_examples(self.table_path)
        train_ids, val_ids = train_val_ids(split.manifest_path)
        return {"train": table.loc[train_ids], "val": table.loc[val_ids]}


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
    contract: Contract  # the declared metric and its guard, computed once from the training split
    tournament: Tournament | None = None
    report: ReportRef | None = None
    anchor: ClassicAnchor | None = None  # step 5's classic anchor, once scored (training runs only)

    def ranking(self, spec: Spec) -> list[FamilyOptions]:
        """The base models to try, best first: the tournament's eligible ones, or the one model."""
        return self.tournament.ranking if self.tournament else spec.candidates[:1]


@dataclass(frozen=True)
class UnchangedData:
    """A scheduled or drift-triggered run found the champion's own training data: it trains nothing."""

    run_id: str
    champion_version: str
    reason: str


@dataclass(frozen=True)
class StageResult:
    name: str
    run_id: str
    val_value: float
    val_scores: dict[str, float]
    checkpoint: Path
    checkpoint_sha256: str
    history: list[EpochRecord]
    notes: str
    keep: bool
    meets_target: bool  # target reached and guard kept, on validation
    started_from: str = "pretrained"  # the backbone weights training began with
    best_epoch: int = 1
    stopped_early: bool = False
    unfrozen_groups: int = 0
    operating_point: dict[str, Any] | None = None  # {"class", "threshold"} for per-class contracts

    def as_fit(self) -> FitResult:
        return FitResult(self.history, self.best_epoch, self.val_value, self.stopped_early)


@dataclass(frozen=True)
class TestResult:
    scores: dict[str, float]
    value: float
    n_examples: int
    exposure: Exposure
    fresh_value: float | None  # the metric on the fresh examples alone, when there are enough
    champion: ChampionComparison  # the current champion on the same test examples
    guard: Guard | None = None  # the contract's guard (recall/precision contracts)
    operating_point: OperatingPoint | None = None  # the stored threshold the answers were taken at

    @property
    def guard_value(self) -> float | None:
        return self.scores[self.guard.key] if self.guard else None


@dataclass(frozen=True)
class GateOutcome:
    decision: GateDecision
    registration: Registration
    selected_stage: str = ""  # the stage the registered model comes from
