"""Split before any training: stratified, seeded train / validation / test, written once.

The manifest (ids per split) is the only record of the split. Train and validation ids are read
with `train_val_ids`; the test ids only through `quarantined_test_ids`, which appends every read to
an access log beside the manifest, so "nothing looked at the test set before the final
evaluation" is a fact one can check rather than a promise.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.data import fingerprint, sha256_file
from tasks.errors import DataError
from tasks.spec import SplitSpec

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitRef:
    """A written split manifest: plain values safe to pass between tasks (no test ids inside)."""

    manifest_path: Path
    manifest_sha256: str
    sizes: dict[str, int]
    test_fingerprint: str
    notes: tuple[str, ...]


def split_examples(table: pd.DataFrame, spec: SplitSpec, dataset_fingerprint: str, workdir: Path) -> SplitRef:
    """Assign every distinct example to one split and write the manifest (once per data + settings)."""
    path = workdir / "splits" / (
        f"{dataset_fingerprint[:16]}-seed{spec.seed}-val{spec.validation_fraction:g}-test{spec.test_fraction:g}.json"
    )
    if not path.exists():
        assignment, notes = _assign(table, spec)
        labels = dict(zip(table["example_id"], table["label"]))
        test_ids = assignment["test"]
        manifest = {
            "dataset_fingerprint": dataset_fingerprint,
            "seed": spec.seed,
            "validation_fraction": spec.validation_fraction,
            "test_fraction": spec.test_fraction,
            "test_fingerprint": fingerprint(test_ids, [labels[i] for i in test_ids]),
            "notes": notes,
            "splits": assignment,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(manifest, indent=1))
        partial.rename(path)
    manifest = json.loads(path.read_text())
    return SplitRef(
        manifest_path=path,
        manifest_sha256=sha256_file(path),
        sizes={name: len(manifest["splits"][name]) for name in SPLITS},
        test_fingerprint=manifest["test_fingerprint"],
        notes=tuple(manifest["notes"]),
    )


def train_val_ids(manifest_path: Path) -> tuple[list[str], list[str]]:
    """The ids every training and model-selection step may use."""
    splits = json.loads(manifest_path.read_text())["splits"]
    return splits["train"], splits["val"]


def quarantined_test_ids(manifest_path: Path, reader: str) -> list[str]:
    """The test ids. Only the final evaluation calls this; every call is logged with its reader."""
    with access_log_path(manifest_path).open("a") as log:
        log.write(json.dumps({
            "reader": reader,
            "user": getpass.getuser(),
            "at": datetime.now(timezone.utc).isoformat(),
        }) + "\n")
    return json.loads(manifest_path.read_text())["splits"]["test"]


def access_log_path(manifest_path: Path) -> Path:
    return manifest_path.with_suffix(".test-reads.jsonl")


def recorded_test_reads(manifest_path: Path) -> list[dict[str, str]]:
    """Every recorded read of the test ids (who and when)."""
    log = access_log_path(manifest_path)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _assign(table: pd.DataFrame, spec: SplitSpec) -> tuple[dict[str, list[str]], list[str]]:
    """Keep the given splits, carve only the missing ones (stratified); unassigned rows are train."""
    examples, notes = _distinct_examples(table)
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
    return {name: sorted(splits[name]["example_id"]) for name in SPLITS}, notes


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
