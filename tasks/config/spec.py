"""The config schema: one YAML document validated into frozen pydantic models.

The defaults written here are the documentation of the recipe: `transferflow schema` prints them.
Reading a YAML file into a Spec, with errors that name the file, the field and the fix, is
tasks/config/loading.py.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from tasks.config.block import ConfigBlock
from tasks.config.data_kinds import DATA_KINDS, DataSpec
from tasks.config.data_kinds import data_spec as data_spec  # re-exported: `tasks.spec` is where configs are built
from tasks.config.families import FAMILIES, FamilyOptions, ModelSpec, classic_model, families_of
from tasks.config.release_spec import DriftSpec, GateSpec, RegistrySpec, RetrainSpec
from tasks.core.errors import DataError

DEFAULT_WORKDIR = ".transferflow"
PER_CLASS_METRICS = ("precision", "recall", "f1")
AGGREGATE_METRICS = ("accuracy", "macro_f1", "balanced_accuracy")

# The tagged unions of a config: the field that picks the member, and the registry of members.
UNION_TAGS: dict[str, tuple[str, Mapping[str, type[BaseModel]]]] = {
    "model": ("family", FAMILIES), "data": ("kind", DATA_KINDS)}


# One label -> metric-key mapping, used for logging, the contract and the diagnosis alike. It
# lives with the metric's declaration because `MetricSpec.key` is built from it.
def safe_name(text: str) -> str:
    """MLflow metric names allow letters, digits, `_-./ `: anything else becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def class_metric_key(name: str, label: str) -> str:
    """The key of a per-class score, e.g. `recall_spam`; `check_class_keys` keeps it one-to-one."""
    return f"{name}_{safe_name(label)}"


def check_class_keys(classes: Iterable[str], source: Path | str) -> None:
    """Fail when two labels would share one metric key: their scores would overwrite each other."""
    labels_of: dict[str, list[str]] = defaultdict(list)
    for label in dict.fromkeys(classes):
        labels_of[safe_name(label)].append(label)
    clashes = [labels for labels in labels_of.values() if len(labels) > 1]
    if clashes:
        shown = "; ".join(" and ".join(repr(label) for label in labels) + f" -> '{safe_name(labels[0])}'"
                          for labels in clashes)
        raise DataError(
            f"{source}: labels that become the same metric name: {shown} (metric names keep letters, "
            "digits and `_-./ `; other characters become `_`). Fix: rename one label of each pair, "
            "or keep one of them with data.select_classes."
        )


class MetricSpec(ConfigBlock):
    """The one success metric: every decision (best epoch, early stop, gate) uses it."""

    name: Literal["accuracy", "macro_f1", "balanced_accuracy", "precision", "recall", "f1"]
    class_name: str | None = Field(
        None, alias="class", description="The class a precision/recall/f1 metric is about."
    )
    target: float = Field(ge=0.0, le=1.0, description="The test metric must reach this to promote.")
    guard: dict[Literal["precision", "recall"], float] | None = Field(
        None,
        description="recall/precision contracts only: a floor on the complementary score (precision for a "
                    "recall contract, recall for a precision contract), e.g. {precision: 0.5}. A result below it "
                    "fails like a missed target (best epoch, selection, gate). Default: halfway between the "
                    "trivial model that meets the contract and 1: precision (prevalence + 1) / 2 for a recall "
                    "contract, so calling everything the class never passes; recall 0.5 for a precision "
                    "contract, so answering the class once never passes.")
    confidence: float = Field(
        0.8, ge=0.5, lt=1.0,
        description="recall/precision contracts only: how sure the operating point chosen on validation should "
                    "make us that the test split meets the target. The threshold must keep the score's lower "
                    "confidence bound (Wilson, widened for the validation and the test sample) at or above the "
                    "target; 0.5 takes the validation score itself, which a test split misses about half the time.")

    @model_validator(mode="after")
    def _class_matches_metric(self) -> MetricSpec:
        if self.name in PER_CLASS_METRICS and not self.class_name:
            raise ValueError(f"metric '{self.name}' is per class: add `class: <label>`")
        if self.name in AGGREGATE_METRICS and self.class_name:
            raise ValueError(f"metric '{self.name}' covers all classes: remove `class`")
        if self.guard is not None:
            complement = self.guard_name if self.name in ("recall", "precision") else None
            if complement is None:
                raise ValueError(f"metric '{self.name}' needs no guard (only recall and precision contracts can be "
                                 "met by a trivial predictor): remove `guard`")
            if set(self.guard) != {complement} or not all(0.0 <= v <= 1.0 for v in self.guard.values()):
                raise ValueError(f"a {self.name} contract is guarded by {complement}: write "
                                 f"`guard: {{{complement}: <floor in [0, 1]>}}`")
        if "confidence" in self.model_fields_set and not (self.class_name and self.name in ("recall", "precision")):
            raise ValueError(f"metric '{self.name}' has no operating point with a confidence bound (only recall "
                             "and precision contracts of one class do): remove `confidence`")
        return self

    @property
    def guard_name(self) -> str | None:
        """The complementary score a per-class recall/precision contract is guarded by."""
        return {"recall": "precision", "precision": "recall"}.get(self.name) if self.class_name else None

    @property
    def greater_is_better(self) -> bool:
        """Every supported metric is a score in [0, 1] where higher is better."""
        return True

    @property
    def key(self) -> str:
        """The name this metric is logged under, e.g. `recall_spam` or `macro_f1`."""
        return class_metric_key(self.name, self.class_name) if self.class_name else self.name

    def describe(self) -> str:
        what = f"{self.name} of class '{self.class_name}'" if self.class_name else self.name
        return f"{what} >= {self.target:g}"


class CandidatesSpec(ConfigBlock):
    """Several base models: step 4 embeds train and validation once per candidate, fits the same
    probe head on each and keeps the best on validation that the constraints allow (the tournament)."""

    candidates: list[ModelSpec] = Field(min_length=2, description="Family blocks, as `model:` takes one.")
    max_params: int | None = Field(None, ge=1, description="Drop candidates whose encoder has more parameters.")
    min_throughput: float | None = Field(None, gt=0.0, description="Drop candidates that embed fewer inputs per "
                                                                  "second on this machine (measured).")
    classic: bool = Field(True, description="Add the modality's classic family (tfidf, pixels, mfcc: "
                                            "tasks/config/families/classic.py) as the last candidate, unless one "
                                            "is listed: a transferred model must beat it to be chosen.")

    @model_validator(mode="after")
    def _distinct(self) -> CandidatesSpec:
        seen = [(c.family, c.name, c.weights) for c in self.candidates]
        repeated = sorted({f"{f}:{n}" for f, n, w in seen if seen.count((f, n, w)) > 1})
        if repeated:
            raise ValueError(f"candidates repeat {', '.join(repeated)}: remove the copies")
        set_on = [index for index, c in enumerate(self.candidates) if "on_unfit" in c.model_fields_set]
        if set_on:
            raise ValueError(f"candidates[{set_on[0]}].on_unfit: a tournament moves on to its next candidate by "
                             "itself; on_unfit is for a single `model:`. Fix: remove it")
        return self


def _model_kind(value: Any) -> str:
    """`model:` is one family block, or {candidates: [...]} for a tournament."""
    if isinstance(value, dict):
        return "candidates" if "candidates" in value else "one"
    return "candidates" if isinstance(value, CandidatesSpec) else "one"


OneOrCandidates = Annotated[Union[Annotated[ModelSpec, Tag("one")],  # noqa: UP007
                                  Annotated[CandidatesSpec, Tag("candidates")]], Discriminator(_model_kind)]


class SplitSpec(ConfigBlock):
    """Stratified, seeded train / validation / test split made before any training."""

    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    seed: int = 42


class TrainSpec(ConfigBlock):
    """The head: a linear layer trained on cached embeddings (the baseline, and every stage's head)."""

    batch_size: int = Field(32, ge=1)
    head_epochs: int = Field(60, ge=1, description="Cheap: the head trains on cached embeddings.")
    head_learning_rate: float = Field(3e-3, gt=0.0)
    head_patience: int = Field(10, ge=1, description="Head epochs without validation gain before stopping.")
    weight_decay: float = Field(1e-4, ge=0.0)
    seed: int = 0
    head: Literal["linear", "mlp", "auto"] = Field(
        "linear", description="The head on the embeddings: linear; mlp, one hidden layer of mlp_hidden ReLU units "
                              "with dropout mlp_dropout; auto fits both on the cached embeddings and keeps the better "
                              "on validation (a tie keeps linear). The fine-tuning stages keep the chosen head. "
                              "Classic and hybrid families always get a logistic regression.")
    mlp_hidden: int = Field(256, ge=1, description="Hidden units of the mlp head.")
    mlp_dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout before the mlp head's output layer.")

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, raw: Any) -> Any:
        """Fields that moved to the `finetune:` block fail with their new place, not 'unknown field'."""
        if isinstance(raw, dict):
            moved = [f"`train.{old}` is now {new}" for old, new in MOVED_TRAIN_FIELDS.items() if old in raw]
            if moved:
                raise ValueError("; ".join(moved) + ". Fix: move them under `finetune:`")
        return raw


MOVED_TRAIN_FIELDS = {
    "finetune_epochs": "`finetune.epochs_per_stage` (0 there becomes `finetune.max_stages: 0`)",
    "finetune_lr_divisor": "`finetune.lr_ratio` (its inverse: 10 becomes 0.1)",
    "patience": "`finetune.early_stopping.patience`",
}


class EarlyStoppingSpec(ConfigBlock):
    """When a fine-tuning stage stops: `patience` epochs without a validation gain of `min_delta`."""

    patience: int = Field(2, ge=1, description="Epochs without validation gain before the stage stops; also "
                                               "how long a stall must last to be called overfitting.")
    min_delta: float = Field(0.0, ge=0.0, description="A smaller gain in the declared metric is no gain.")


class FinetuneSpec(ConfigBlock):
    """Gradual unfreezing: stages unfreeze layer groups from the output end, each decided by the
    previous stage's validation curves (see `transferflow schema` and the decision table in docs/training.md)."""

    max_stages: int = Field(3, ge=0, description="Fine-tuning stages at most (a regularized retry is not "
                                                 "counted); 0 disables fine-tuning.")
    epochs_per_stage: int = Field(3, ge=1)
    groups_per_stage: int = Field(1, ge=1, description="Layer groups unfrozen by each stage: stage k trains the "
                                                       "last k x this many groups.")
    lr_ratio: float = Field(0.1, gt=0.0, le=1.0, description="Head lr in fine-tuning = train.head_learning_rate x "
                                                              "this (~10x lower: adapt, don't forget).")
    group_lr_decay: float = Field(0.5, gt=0.0, le=1.0, description="Each layer group deeper than the last gets "
                                                                    "the lr of the group above it x this.")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW decay (none on biases and normalization "
                                                           "layers); x10 in a regularized retry.")
    warmup: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of a stage's steps with a linear lr "
                                                           "warm-up (then cosine decay).")
    augment: Literal["none", "light", "standard"] = Field(
        "none", description="Random augmentation of the inputs (images and sound; texts have none). none keeps the "
                            "frozen-prefix cache on; a regularized retry goes one level up. Images: light, small "
                            "crops and shifts; standard, also flips and colour jitter (do not use for data where a "
                            "flip changes the label). Sound: light, a time shift and SpecAugment time and frequency "
                            "masks; standard, also noise at 20-40 dB SNR (gain is not varied: the log-mel front end "
                            "is gain invariant).")
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="0.1 is used in a regularized retry when 0.")
    class_weights: Literal["auto", "on", "off"] = Field(
        "auto", description="A class-weighted loss (inverse class frequency, clipped at 10x). auto: switched on "
                            "when a class lags on validation after a stage (decision class_weights_on); on: from "
                            "the frozen baseline onward (a rare class the contract is about); off: never, a "
                            "lagging class is only reported.")

    @field_validator("class_weights", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        """YAML reads a bare `on` / `off` as true / false: take them as meant."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class DaskSpec(ConfigBlock):
    """The Dask cluster of `runtime.task_runner: dask`."""

    address: str | None = Field(None, description="A running Dask scheduler (tcp://HOST:8786); unset: a "
                                                   "LocalCluster of worker processes on loopback for this run.")
    workers: int = Field(2, ge=1, description="Worker processes of the LocalCluster (ignored with an address).")
    threads_per_worker: int = Field(1, ge=1, description="Threads of each LocalCluster worker, and torch's thread "
                                                         "count in it.")


class RuntimeSpec(ConfigBlock):
    """Where training and inference run."""

    task_runner: Literal["local", "dask"] = Field(
        "local", description="Where the embedding shards run: local (one after another in the flow's process) or "
                             "dask (in parallel on a Dask cluster; needs a Prefect server, which `transferflow run` "
                             "starts on loopback when PREFECT_API_URL is unset). TRANSFERFLOW_TASK_RUNNER or "
                             "`--task-runner` override it.")
    dask: DaskSpec = Field(default_factory=DaskSpec)
    shard_size: int = Field(
        4096, ge=16, description="Examples per embedding task: fixed shards of the sorted example ids, each "
                                 "written to the cache as it finishes, so a crash keeps every finished shard. "
                                 "4096 keeps a task's fixed cost near 1% of its compute in process (2% on Dask) "
                                 "for the fastest model here (benchmarks/sharded_extraction.py).")

    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto: CUDA when present, else Apple MPS when present, else CPU.")
    num_workers: int | Literal["auto"] = Field(
        "auto", description="DataLoader processes decoding inputs; auto: 0 on machines with 2 cores or fewer "
                            "(measured fastest there), more on bigger ones.")

    @model_validator(mode="after")
    def _workers_not_negative(self) -> RuntimeSpec:
        if isinstance(self.num_workers, int) and self.num_workers < 0:
            raise ValueError("num_workers: write auto or a number >= 0")
        return self


class Spec(ConfigBlock):
    """A whole transfer-learning job."""

    task: str = Field(min_length=3, description="The task in one sentence.")
    metric: MetricSpec
    data: DataSpec
    if TYPE_CHECKING:  # steps 1-4 read `candidates`; steps 5-7 get a OneModelSpec (`with_model`)
        model: FamilyOptions | CandidatesSpec
    else:
        model: OneOrCandidates
    split: SplitSpec = SplitSpec()
    train: TrainSpec = TrainSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    gate: GateSpec = GateSpec()
    drift: DriftSpec = DriftSpec()
    retrain: RetrainSpec = RetrainSpec()
    registry: RegistrySpec
    workdir: Path = Field(Path(DEFAULT_WORKDIR), description="Caches, splits, reports and the default MLflow store; "
                                                          "relative to the config's folder.")

    @property
    def modality(self) -> str:
        """What the data holds, and so what every model of this config reads."""
        return self.data.MODALITY

    @property
    def candidates(self) -> list[FamilyOptions]:
        """The base models this config names: one, or a tournament's candidates in config order."""
        model: Any = self.model
        return list(model.candidates) if isinstance(model, CandidatesSpec) else [model]

    @property
    def tournament(self) -> CandidatesSpec | None:
        model: Any = self.model
        return model if isinstance(model, CandidatesSpec) else None

    def with_model(self, model: FamilyOptions) -> OneModelSpec:
        """This config with one base model (a tournament's choice): what steps 5-7 run with. The
        config was validated whole already, so the copy is built without validating again."""
        fields = {name: getattr(self, name) for name in type(self).model_fields} | {"model": model}
        return OneModelSpec.model_construct(_fields_set=self.model_fields_set, **fields)

    def with_candidates(self, models: list[FamilyOptions]) -> Spec:
        """This config as a tournament of `models` (`model.on_unfit: try_candidates`), as they are:
        no classic candidate is added, and the config is not validated again."""
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return Spec.model_construct(_fields_set=self.model_fields_set,
                                    **fields | {"model": CandidatesSpec(candidates=models, classic=False)})

    @model_validator(mode="before")
    @classmethod
    def _classic_candidate(cls, raw: Any) -> Any:
        """A tournament includes its modality's classic family (`model.classic`, default true)."""
        if not isinstance(raw, dict):
            return raw
        model, data = raw.get("model"), raw.get("data")
        if not (isinstance(model, dict) and isinstance(model.get("candidates"), list) and model.get("classic", True)
                and isinstance(data, dict) and data.get("kind") in DATA_KINDS):
            return raw
        listed = [str(c.get("family")) for c in model["candidates"] if isinstance(c, dict)]
        if any(family in FAMILIES and FAMILIES[family].CLASSIC for family in listed):
            return raw
        classic = classic_model(DATA_KINDS[data["kind"]].MODALITY)
        return {**raw, "model": {**model, "candidates": [*model["candidates"], {"family": classic.family}]}}

    @model_validator(mode="after")
    def _modality_matches(self) -> Spec:
        data_modality = self.data.MODALITY
        for model in self.candidates:
            self._check_modality(model, data_modality)
        first = self.candidates[0]
        if first.FITS_ON_TRAIN:
            where = "model.candidates[0]" if self.tournament else "model"
            pretrained = ", ".join(f for f in families_of(data_modality) if not FAMILIES[f].FITS_ON_TRAIN)
            raise ValueError(
                f"{where}: the family '{first.family}' fits its features on the training split, so it cannot come "
                "first: the first model's embeddings "
                "run the label audit and the leakage check, and every run scores the classic anchor anyway. Fix: "
                f"name a pretrained model ({pretrained}) "
                f"first, and list {first.family} after it in model.candidates")
        return self

    def _check_modality(self, model: FamilyOptions, data_modality: str) -> None:
        model_modality = model.MODALITY
        if data_modality != model_modality:
            families = [f for f in families_of(data_modality) if not FAMILIES[f].FITS_ON_TRAIN]  # never first
            raise ValueError(
                f"model.family '{model.family}' reads {model_modality}s but data.kind "
                f"'{self.data.kind}' holds {data_modality}s. Fix: use a family that reads {data_modality}s: "
                f"{', '.join(families)}"
            )


class OneModelSpec(Spec):
    """A config with exactly one base model: the type steps 4-7 take, so a tournament's candidate
    list can never reach training, selection, the test read or the registry."""

    if TYPE_CHECKING:
        model: FamilyOptions
    else:
        model: ModelSpec

def json_schema() -> dict[str, Any]:
    """The JSON schema of a config, defaults included."""
    return Spec.model_json_schema(by_alias=True)
