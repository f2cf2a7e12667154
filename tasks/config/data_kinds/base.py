"""What a config may say about its data, per kind, and the registry the schema is built from.

Each kind is one options class (this module's `DataKindOptions` subclassed in `tasks/config/data_kinds/`)
registered with `@data_kind`: its fields are the config's fields, its class variables say what the
data holds and whether `path` is a folder or a file. Nothing here imports pandas or torch, so
`transferflow validate` and the CLI start fast; the kind's reader (`tasks/data/readers/<kind>.py`,
found by the kind's name) loads the examples and judges each input.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.plugins import Registry


class CsvColumns(NamedTuple):
    text: str = "text"
    label: str = "label"


class CrossCheckOptions(BaseModel):
    """A second person's labels for a sample of the data, and the agreement it must reach."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: Path | None = Field(None, description="A UTF-8 CSV of the second labels: a `label` column and one key "
                                                  "column, `path` (relative to the data folder, for kinds of files), "
                                                  "`text` (for kinds of texts) or `id` (the example id). Relative to "
                                                  "the config's folder. Without it, the second labels `transferflow "
                                                  "label pull` brought back from the cross-check queue (the labels "
                                                  "store).")
    min_kappa: float = Field(0.8, ge=-1.0, le=1.0, description="The lowest Cohen's kappa between the data's labels "
                                                              "and the second labels, on the examples both labelled, "
                                                              "that data.cross_check_policy accepts.")


class DataKindOptions(BaseModel):
    """The fields every kind shares: where the data is and what the label-quality check demands."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: str
    path: Path = Field(description="Where the data is: a folder or a file, as the kind reads it.")
    classes: list[str] | None = Field(
        None, description="The declared label set; a label outside it fails the quality check."
    )
    select_classes: list[str] | None = Field(
        None, description="Keep only these labels (a slice of a larger dataset)."
    )
    duplicates: Literal["drop", "fail"] = Field(
        "drop",
        description="Exact duplicates with one label: drop them before splitting (reported), or fail.",
    )
    conflicting_labels: Literal["fail", "drop"] = Field(
        "fail", description="The same example (same file bytes or text) under two labels: stop the run, or drop "
                            "every copy of it before the split (listed in the report).")
    odd_inputs: Literal["fail", "drop"] = Field(
        "drop", description="Inputs no model should learn from (zero-byte, unsupported or undecodable files, tiny or "
                            "constant images, one image under many names, empty texts): quarantine them with their "
                            "reason in the report (drop), or stop the run (fail).")
    label_issues: Literal["report", "drop", "fail"] = Field(
        "report", description="Examples whose label the data disputes (cleanlab on out-of-fold probe "
                              "probabilities, train and validation only): list them, drop them from train and "
                              "validation (at most max_drop_fraction, most doubtful first), or stop the run.")
    leakage: Literal["drop", "report", "fail"] = Field(
        "drop", description="Near-copies across train / validation / test that the group keys missed (cosine "
                            "similarity of the base model's embeddings above a threshold calibrated on train): "
                            "drop the less held-out copy of each pair (the test split never changes), list them, "
                            "or stop the run.")
    leakage_similarity: float | None = Field(
        None, gt=0.0, lt=1.0, description="The cosine similarity at or above which a cross-split pair is a near-copy. "
                                          "Unset: calibrated on train (1 - 0.25 x the median nearest-neighbour "
                                          "distance, at least 0.90); the report shows the calibrated value beside "
                                          "a set one. Lower it to catch looser copies (short truncations).")
    exact_search_max: int = Field(
        200_000, ge=10, description="Above this many examples, the leakage check and the outlier ranking search "
                                      "neighbours with a faiss IVF index instead of exactly (quadratic: ~40-80 min at "
                                      "1M on 2 cores), its recall checked against exact search and reported.")
    max_drop_fraction: float = Field(0.05, gt=0.0, le=0.5, description="label_issues: drop removes at most this "
                                                                         "share of train + validation.")
    min_examples_per_class: int = Field(10, ge=1, description="Fewer examples in a class fails the check.")
    max_imbalance_ratio: float = Field(
        10.0, gt=1.0, description="Largest/smallest class above this is reported as a warning."
    )
    guideline: Path | None = Field(
        None, description="The labelling guideline (markdown: what counts as each class, its edge cases, what does "
                          "not count), relative to the config's folder. Read at step 1: its sha256 is logged with "
                          "the run and named on the model card, which says when it differs from the champion's.")
    cross_check: CrossCheckOptions | None = Field(
        None, description="A sample labelled twice: step 2 measures the agreement (Cohen's kappa, per-class "
                          "agreement, the annotators' confusion matrix) on the examples both labelled.")
    cross_check_policy: Literal["fail", "report"] = Field(
        "fail", description="A kappa below cross_check.min_kappa: stop the run before training, naming the two "
                            "classes the labellers confuse most (fail), or warn (report).")
    cross_check_disagreements: Literal["drop", "keep_first"] = Field(
        "drop", description="Examples the two labellers label differently: hold them out of the data until the "
                            "labels agree (drop: a label two people dispute is no label to learn or to score on), "
                            "or keep the data's own label (keep_first). Listed in quality/disagreements.csv either "
                            "way.")

    labels_store: Path | None = Field(
        None, description="The folder of reviewed labels (`transferflow label pull`): append-only records, one file "
                          "per pull, applied when the data loads (corrections by example id, new examples added). "
                          "Unset: `<data.path>.labels/` beside a data folder, `<csv folder>/<csv stem>.labels/` "
                          "beside a CSV; never inside the data, whose files may be read-only. Relative to the "
                          "config's folder.")

    MODALITY: ClassVar[str]          # "image" | "text" | "audio": what the data holds, so what a model must read
    PATH_IS_FOLDER: ClassVar[bool]   # `path` names a folder (else a file): checked when the config loads
    PATH_SHAPE: ClassVar[str]        # what `path` must be, in words, for that check's message
    READABLE: ClassVar[str]          # the quality check's name for "every input can be read"
    PICTURED: ClassVar[bool] = False  # reports can show its inputs as thumbnails (label suspects, leakage)

    def problem_before_loading(self) -> str | None:
        """What a quick look (no data read) finds wrong with the data for this config, or None: checked
        when the config loads, so `run` fails in seconds rather than after the flow has started."""
        return None

    @property
    def written_on_first_run(self) -> bool:
        """True when `path` is written by the first run (packaged demo data), so it need not exist yet."""
        return False

    @property
    def labels_folder(self) -> Path:
        """Where the labels store is: `labels_store`, or beside the data (never inside it)."""
        if self.labels_store is not None:
            return self.labels_store
        if self.PATH_IS_FOLDER:
            return self.path.with_name(f"{self.path.name}.labels")
        return self.path.with_name(f"{self.path.stem}.labels")

    @property
    def csv_columns(self) -> CsvColumns:
        """The text and label columns of a CSV of this data's texts: where `transferflow drift` reads an
        incoming batch and writes a drifted one for labeling. Kinds that read no CSV keep the defaults."""
        return CsvColumns()


DATA_KINDS: Registry[type[DataKindOptions]] = Registry("data kind")
data_kind = DATA_KINDS.by_literal("kind")  # @data_kind registers an options class under its `kind`


class ClassFolderOptions(DataKindOptions):
    """Kinds whose `path` is a folder of class folders, one file per example, its label the name of
    the folder it lies in: root/<label>/* or root/<train|val|test>/<label>/* (given splits)."""

    layout: Literal["auto", "flat", "split"] = Field(
        "auto",
        description="flat: root/<label>/*; split: root/<train|val|test>/<label>/* (the root holds split folders "
                    "only); auto: split if every folder in the root is a split name, flat if none is (set it when "
                    "a class is called train, val, valid, validation or test).",
    )

    PATH_IS_FOLDER = True
    PATH_SHAPE = "a folder root/<label>/* or root/<train|val|test>/<label>/*"
    EXTENSIONS: ClassVar[tuple[str, ...]]  # the files that are examples; others are quarantined as unsupported
    NOUN: ClassVar[str]                    # what the files are, in messages ("images", "sound files")


class CsvFileOptions(DataKindOptions):
    """Kinds whose `path` is a UTF-8 CSV file with a header row, one row per example: an input column
    (the field `INPUT_FIELD` names it) and a label column; given splits from `split_column` or from
    held-out files beside it. One place for what `csv_text` and `csv_audio` share, so both read
    their files, columns and given splits alike."""

    label_column: str = "label"
    split_column: str | None = Field(None, description="A column with given splits (train / val / test).")
    val_path: Path | None = Field(None, description="A CSV file of given validation examples (same columns), e.g. "
                                                    "a dataset's shipped dev set.")
    test_path: Path | None = Field(None, description="A CSV file of given test examples (same columns), e.g. "
                                                     "banking77's test.csv; examples also in `path` stay only here.")

    PATH_IS_FOLDER = False
    PATH_SHAPE = "a CSV file"
    INPUT_FIELD: ClassVar[str]  # the field that names the input column ("text_column", "path_column")

    @property
    def input_column(self) -> str:
        """The column each example's input is in, as this config names it."""
        return str(getattr(self, self.INPUT_FIELD))

    def files(self) -> list[tuple[Path, str | None]]:
        """Each CSV file with the split all its rows belong to (None: the main file)."""
        given = [(path, split) for path, split in ((self.val_path, "val"), (self.test_path, "test")) if path]
        return [(self.path, None), *given]

    def missing_columns(self, path: Path, columns: list[str], given: str | None) -> str | None:
        """The problem when a file lacks a column this config names, in the loader's words, or None."""
        split_column = self.split_column if given is None else None
        missing = [c for c in (self.input_column, self.label_column, split_column) if c and c not in columns]
        if not missing:
            return None
        field_names = {self.input_column: self.INPUT_FIELD, self.label_column: "label_column"}
        fields = ", ".join(f"data.{field_names.get(c, 'split_column')}='{c}'" for c in missing)
        return (f"{path}: column(s) {missing} not found ({fields}). Columns in the file: {columns}. "
                "Fix: set the field to one of them.")

    def problem_before_loading(self) -> str | None:
        """A named column absent from a file's header row: found in a moment, where reading the data
        would come only after the flow has started."""
        for path, given in self.files():
            try:
                with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
                    header = next(csv.reader(handle), None)
            except (OSError, csv.Error):
                continue  # the loader says what is wrong with the file itself
            if header and (problem := self.missing_columns(path, header, given)):
                return problem
        return None
