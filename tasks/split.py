"""Split before any training: stratified, seeded train / validation / test, written once.

The manifest (ids per split) is the only record of the split. Train and validation ids are read
with `train_val_ids`; the test ids only through `quarantined_test_ids`, which appends every read to
an access log beside the manifest, so "nothing looked at the test set before the final
evaluation" is a fact one can check rather than a promise.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.atomic import write_text_atomic
from tasks.data import fingerprint, sha256_file
from tasks.errors import DataError
from tasks.spec import SplitSpec

SPLITS = ("train", "val", "test")
SHOWN_EXAMPLES = 5


@dataclass(frozen=True)
class SplitRef:
    """A written split manifest: plain values safe to pass between tasks (no test ids inside)."""

    manifest_path: Path
    manifest_sha256: str
    sizes: dict[str, int]
    test_fingerprint: str
    notes: tuple[str, ...]
    warnings: tuple[str, ...] = ()  # e.g. given splits that a reused manifest contradicts


def split_examples(table: pd.DataFrame, spec: SplitSpec, dataset_fingerprint: str, workdir: Path) -> SplitRef:
    """Assign every distinct example to one split and write the manifest (once per data + settings)."""
    path = workdir / "splits" / (
        f"{dataset_fingerprint[:16]}-seed{spec.seed}-val{spec.validation_fraction:g}-test{spec.test_fraction:g}.json"
    )
    examples, notes = _distinct_examples(table)
    reused = path.exists()
    manifest = (json.loads(path.read_text()) if reused
                else _new_manifest(examples, notes, spec, dataset_fingerprint))
    _check_every_class_in_every_split(manifest["splits"], examples)
    if not reused:
        write_text_atomic(path, json.dumps(manifest, indent=1))
    return SplitRef(
        manifest_path=path,
        manifest_sha256=sha256_file(path),
        sizes={name: len(manifest["splits"][name]) for name in SPLITS},
        test_fingerprint=manifest["test_fingerprint"],
        notes=tuple(manifest["notes"]),
        warnings=_given_split_disagreements(examples, manifest["splits"], path) if reused else (),
    )


def train_val_ids(manifest_path: Path) -> tuple[list[str], list[str]]:
    """The ids every training and model-selection step may use."""
    splits = json.loads(manifest_path.read_text())["splits"]
    return splits["train"], splits["val"]


def quarantined_test_ids(manifest_path: Path, reader: str) -> list[str]:
    """The test ids. Only the final evaluation calls this; every call is logged (and synced to
    disk) before the ids are read, so a read that could not be logged fails instead."""
    with access_log_path(manifest_path).open("a") as log:
        log.write(json.dumps({
            "reader": reader,
            "user": _current_user(),
            "at": datetime.now(UTC).isoformat(),
        }) + "\n")
        log.flush()
        os.fsync(log.fileno())
    return json.loads(manifest_path.read_text())["splits"]["test"]


def access_log_path(manifest_path: Path) -> Path:
    return manifest_path.with_suffix(".test-reads.jsonl")


def recorded_test_reads(manifest_path: Path) -> list[dict[str, str]]:
    """Every recorded read of the test ids (who and when)."""
    log = access_log_path(manifest_path)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _current_user() -> str:
    """The reader's login name; a container's uid often has no passwd entry, where getuser raises."""
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _new_manifest(examples: pd.DataFrame, notes: list[str], spec: SplitSpec, dataset_fingerprint: str) -> dict:
    assignment = _assign(examples, spec, notes)
    labels = dict(zip(examples["example_id"], examples["label"], strict=True))
    test_ids = assignment["test"]
    return {
        "dataset_fingerprint": dataset_fingerprint,
        "seed": spec.seed,
        "validation_fraction": spec.validation_fraction,
        "test_fraction": spec.test_fraction,
        "test_fingerprint": fingerprint(test_ids, [labels[i] for i in test_ids]),
        "notes": notes,
        "splits": assignment,
    }


def _assign(examples: pd.DataFrame, spec: SplitSpec, notes: list[str]) -> dict[str, list[str]]:
    """Keep the given splits, carve only the missing ones (stratified); unassigned rows are train.
    `_allowed_splits` states the same rules per example."""
    train = examples[examples["given_split"].isin(["train", ""])]
    val, test = (examples[examples["given_split"] == name] for name in ("val", "test"))
    pool = len(train)
    if val.empty and test.empty:
        rest, test = _carve(train, round(pool * spec.test_fraction), spec.seed)
        train, val = _carve(rest, round(pool * spec.validation_fraction), spec.seed)
    elif val.empty:
        train, val = _carve(train, round(pool * spec.validation_fraction), spec.seed)
        notes.append("validation carved from the given train split (stratified)")
    elif test.empty:
        # A given validation split is held-out data curated like a test set: split it in two.
        test_share = spec.test_fraction / (spec.validation_fraction + spec.test_fraction)
        val, test = _carve(val, round(len(val) * test_share), spec.seed)
        notes.append(f"test carved from the given validation split ({test_share:.0%}, stratified)")
    splits = {"train": train, "val": val, "test": test}
    return {name: sorted(splits[name]["example_id"]) for name in SPLITS}


def _allowed_splits(given_splits: set[str]) -> dict[str, set[str]]:
    """Where `_assign` puts an example given in each split: there, or in a split carved from it."""
    allowed = {name: {name} for name in SPLITS}
    if "val" not in given_splits:
        allowed["train"] |= {"val"} if "test" in given_splits else {"val", "test"}
    elif "test" not in given_splits:
        allowed["val"].add("test")
    return allowed


def _distinct_examples(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per example id; an id given in several splits stays in the most held-out one."""
    priority = table["given_split"].map({"test": 0, "val": 1, "train": 2, "": 3})
    ordered = table.assign(_priority=priority).sort_values(["_priority", "example_id"], kind="stable")
    distinct = ordered.drop_duplicates("example_id").drop(columns="_priority")
    in_several = int(table.groupby("example_id")["given_split"].nunique().gt(1).sum())
    notes = [f"{in_several} example(s) given in two splits kept only in the held-out one"] if in_several else []
    return distinct, notes


def _carve(frame: pd.DataFrame, count: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified split of `frame` into (rest, carved): `count` examples, at least one per class."""
    count = max(count, frame["label"].nunique())
    try:
        return train_test_split(frame, test_size=count, random_state=seed, stratify=frame["label"])
    except ValueError as exc:
        raise DataError(f"cannot make a stratified split of {len(frame)} examples ({exc}). Fix: add examples "
                        "to the smallest classes or raise data.min_examples_per_class.") from None


def _check_every_class_in_every_split(splits: dict[str, list[str]], examples: pd.DataFrame) -> None:
    """A class missing from train cannot be learned, from validation cannot be selected on, and
    from test cannot be scored (its recall would read as 0 and decide the gate)."""
    label_of = dict(zip(examples["example_id"], examples["label"], strict=True))
    classes = set(label_of.values())
    gaps = {name: sorted(classes - {label_of[i] for i in splits[name]}) for name in SPLITS}
    problems = [f"split '{name}' is empty" if not splits[name] else
                f"split '{name}' has no example of class(es) {', '.join(map(repr, missing))}"
                for name, missing in gaps.items() if missing]
    if problems:
        raise DataError(
            f"every class must be in every split: {'; '.join(problems)}. Fix: add examples of those "
            "classes (to that split's folder or data.split_column rows if the split is given), or give "
            "no such split so it is carved from the others (stratified)."
        )


def _given_split_disagreements(examples: pd.DataFrame, splits: dict[str, list[str]],
                               path: Path) -> tuple[str, ...]:
    """Examples whose given split the reused manifest contradicts. The manifest is keyed by ids,
    labels and split settings, so moving files between split folders or changing
    data.split_column reuses it; this makes the mismatch visible instead of silent."""
    recorded = {example_id: name for name in SPLITS for example_id in splits[name]}
    allowed = _allowed_splits(set(examples["given_split"]))
    given = examples[examples["given_split"] != ""]
    rows = zip(given["example_id"], given["given_split"], given["source"], strict=True)
    contradicted = [f"{source} (given {split}, recorded {recorded[example_id]})"
                    for example_id, split, source in rows if recorded[example_id] not in allowed[split]]
    if not contradicted:
        return ()
    more = f" (+{len(contradicted) - SHOWN_EXAMPLES} more)" if len(contradicted) > SHOWN_EXAMPLES else ""
    return (f"the reused split manifest {path.name} contradicts the given split of {len(contradicted)} "
            f"example(s): {', '.join(contradicted[:SHOWN_EXAMPLES])}{more}. It is keyed by the examples, "
            "their labels and the split settings, not by given splits. Fix: put the files back, or delete "
            f"{path} to split again (this changes the test set).",)
