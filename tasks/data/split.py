"""Split before any training: stratified, seeded train / validation / test, and sticky.

Every example ever assigned keeps its split for that registry model forever: the assignments live
in a history table (`<workdir>/splits/<model>/assignments.json`, written atomically under a lock),
and each run assigns only the examples it has not seen, stratified among themselves. So a model
retrained on grown data is never scored on examples it or its predecessor trained on. Each run's
manifest (ids per split for the data of this run, plus how many were kept and how many are new) is
the record the flow uses. Train and validation ids are read with `train_val_ids`; the test ids only
through `quarantined_test_ids`, which appends every read to an access log beside the manifest, so
"nothing looked at the test set before the final evaluation" is a fact one can check rather than
a promise.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.config.spec import SplitSpec
from tasks.core.atomic import exclusive_lock, write_text_atomic
from tasks.core.errors import DataError
from tasks.core.hashing import fingerprint, sha256_file, sha256_text
from tasks.data.split_history import FolderHistoryStore, HistoryStore

SPLITS = ("train", "val", "test")
SHOWN_EXAMPLES = 5
MAX_WRITE_ATTEMPTS = 20  # optimistic writes of the history that lost a race, then a clear error
# (frame, how many to carve, seed, the split carved) -> (rest, carved)
Carve = Callable[[pd.DataFrame, float, int, str], tuple[pd.DataFrame, pd.DataFrame]]

HELD_OUT_PRIORITY = {"test": 0, "val": 1, "train": 2, "": 3}  # the most held-out split first
TestReadPurpose = Literal["evaluation", "leakage check", "lineage check", "drift reference"]

@dataclass(frozen=True)
class SplitRef:
    """A written split manifest: plain values safe to pass between tasks (no test ids inside)."""

    manifest_path: Path
    manifest_sha256: str
    sizes: dict[str, int]
    test_fingerprint: str
    notes: tuple[str, ...]
    history: str  # the split history it belongs to: the test ledger counts exposure within it
    warnings: tuple[str, ...] = ()  # e.g. given splits that contradict recorded ones


def split_examples(table: pd.DataFrame, spec: SplitSpec, dataset_fingerprint: str, folder: Path,
                   modality: str | None = None, hash_cache: Path | None = None,
                   store: HistoryStore | None = None) -> SplitRef:
    """Split this data along the history in `folder` (one per registry model): recorded examples
    keep their split, new ones are assigned (stratified) and recorded, and the run's manifest is
    written once per history and data. With a `modality`, near-copies (`tasks.data.grouping`) form
    groups that are assigned as one: a group never straddles splits, and a new example joins the
    split of a recorded near-copy."""
    examples, notes = _distinct_examples(table)
    examples, group_notes = _grouped(examples, modality, hash_cache)
    notes += group_notes
    store = store or FolderHistoryStore(folder)
    for _ in range(MAX_WRITE_ATTEMPTS):
        history = store.read()
        recorded = history.splits
        new = examples[~examples["example_id"].isin(recorded.keys())]
        carve = _carve if not recorded else _carve_in_proportion  # the first run guarantees coverage
        attempt_notes = list(notes)  # what assigning said, for this attempt only
        assigned = (_assign_groups(new, examples, recorded, spec, attempt_notes, carve) if not new.empty
                    else {name: [] for name in SPLITS})
        assignment = {**recorded, **{i: name for name in SPLITS for i in assigned[name]}}
        splits = {name: sorted(i for i in examples["example_id"] if assignment[i] == name) for name in SPLITS}
        _check_every_class_in_every_split(splits, examples)
        if new.empty or store.write(history.next(assignment)):
            break
    else:
        raise DataError(f"{store.describe()}: other runs kept changing the split history of this model; "
                        f"{MAX_WRITE_ATTEMPTS} attempts to record the new examples lost the race. Fix: run again.")
    notes = attempt_notes
    path = folder / f"{history.id[:8]}-{dataset_fingerprint[:16]}.json"
    with exclusive_lock(folder / ".lock"):
        if not path.exists():  # one manifest per history and data: recorded splits never change
            notes += _history_notes(examples, recorded, assigned)
            manifest = _manifest(examples, splits, assigned, notes, spec, dataset_fingerprint, history.id)
            write_text_atomic(path, json.dumps(manifest, indent=1))
    manifest = json.loads(path.read_text())
    return SplitRef(
        manifest_path=path,
        manifest_sha256=sha256_file(path),
        sizes={name: len(manifest["splits"][name]) for name in SPLITS},
        test_fingerprint=manifest["test_fingerprint"],
        notes=tuple(manifest["notes"]),
        history=manifest["split_history"],
        warnings=_given_split_disagreements(examples, recorded, store.describe()),
    )


def without_examples(split: SplitRef, dropped: list[str], why: str, label_of: Mapping[str, str]) -> SplitRef:
    """The split without `dropped` training/validation ids, as its own manifest beside the
    original (which stays as written): each drop is listed in it under `dropped` (its ids and
    `why`; a second drop adds to the list). The test split never changes here, and a drop that
    would leave a class out of train or validation (`label_of`: id -> label) stops with the fix."""
    manifest = json.loads(split.manifest_path.read_text())
    gone = set(dropped)
    if gone & set(manifest["splits"]["test"]):
        raise ValueError("the test split is never changed by a data policy")
    kept = {name: [i for i in ids if i not in gone] for name, ids in manifest["splits"].items()}
    for name in ("train", "val"):
        missing = sorted({label_of[i] for i in manifest["splits"][name]} - {label_of[i] for i in kept[name]})
        if missing:
            raise DataError(f"dropping {len(gone)} example(s) ({why}) would leave split '{name}' with no example of "
                            f"class(es) {', '.join(map(repr, missing))}. Fix: add distinct examples of those classes, "
                            "or set that data policy to report.")
    manifest["splits"] = kept
    manifest["dropped"] = [*manifest.get("dropped", []), {"why": why, "ids": sorted(gone)}]
    manifest["notes"] = [*manifest["notes"], f"{len(gone)} example(s) dropped from train/validation: {why}"]
    digest = sha256_text(" ".join(sorted(gone)))[:12]
    path = split.manifest_path.with_name(f"{split.manifest_path.stem}.dropped-{digest}.json")
    write_text_atomic(path, json.dumps(manifest, indent=1))
    return SplitRef(path, sha256_file(path), {name: len(manifest["splits"][name]) for name in SPLITS},
                    split.test_fingerprint, tuple(manifest["notes"]), split.history, split.warnings)


def split_history_folder(workdir: Path, model_name: str) -> Path:
    """Where a model's run manifests (and, with the workdir's own store, its history) are kept."""
    return workdir / "splits" / model_name


def train_val_ids(manifest_path: Path) -> tuple[list[str], list[str]]:
    """The ids every training and model-selection step may use."""
    splits = json.loads(manifest_path.read_text())["splits"]
    return splits["train"], splits["val"]


def quarantined_test_ids(manifest_path: Path, reader: str, purpose: TestReadPurpose = "evaluation") -> list[str]:
    """The test ids. The final evaluation reads them (purpose "evaluation": the one read that
    scores a model), and before it the leakage check ("leakage check": the inputs only, to find
    near-copies across splits; never labels, never predictions) and the warm start ("lineage
    check": the ids only, to refuse a champion that trained on any of them); after it, the drift
    reference ("drift reference": inputs only, when validation is too small). Every call is logged (and synced
    to disk) before the ids are read, so a read that could not be logged fails instead."""
    with access_log_path(manifest_path).open("a") as log:
        log.write(json.dumps({
            "reader": reader,
            "purpose": purpose,
            "user": _current_user(),
            "at": datetime.now(UTC).isoformat(),
        }) + "\n")
        log.flush()
        os.fsync(log.fileno())
    return json.loads(manifest_path.read_text())["splits"]["test"]


def access_log_path(manifest_path: Path) -> Path:
    return manifest_path.with_suffix(".test-reads.jsonl")


def recorded_test_reads(manifest_path: Path, purpose: TestReadPurpose | None = None) -> list[dict[str, str]]:
    """Every recorded read of the test ids (who, when, what for), or those of one `purpose`."""
    log = access_log_path(manifest_path)
    reads = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [r for r in reads if purpose is None or r.get("purpose", "evaluation") == purpose]


def _current_user() -> str:
    """The reader's login name; a container's uid often has no passwd entry, where getuser raises."""
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _history_notes(examples: pd.DataFrame, recorded: dict[str, str], assigned: dict[str, list[str]]) -> list[str]:
    if not recorded:
        return []
    kept = int(examples["example_id"].isin(recorded.keys()).sum())
    new = ", ".join(f"{name} {len(assigned[name])}" for name in SPLITS)
    notes = [f"{kept} example(s) kept their recorded split; {sum(map(len, assigned.values()))} new "
             f"example(s) assigned, stratified among themselves ({new})"]
    gone = len(recorded.keys() - set(examples["example_id"]))
    return notes + ([f"{gone} recorded example(s) are no longer in the data"] if gone else [])


def _manifest(examples: pd.DataFrame, splits: dict[str, list[str]], assigned: dict[str, list[str]],
              notes: list[str], spec: SplitSpec, dataset_fingerprint: str, history_id: str) -> dict:
    labels = dict(zip(examples["example_id"], examples["label"], strict=True))
    test_ids = splits["test"]
    return {
        "split_history": history_id,
        "dataset_fingerprint": dataset_fingerprint,
        "seed": spec.seed,
        "validation_fraction": spec.validation_fraction,
        "test_fraction": spec.test_fraction,
        "test_fingerprint": fingerprint(test_ids, [labels[i] for i in test_ids]),
        "notes": notes,
        "new_in_this_manifest": {name: len(assigned[name]) for name in SPLITS},
        "splits": splits,
    }


def _assign(examples: pd.DataFrame, spec: SplitSpec, notes: list[str], carve: Carve,
            given_in_data: set[str]) -> dict[str, list[str]]:
    """Keep the given splits, carve only the splits the data does not give (stratified);
    unassigned rows are train. `given_in_data` is every given split of the whole data, so new
    examples follow the same rules as the first ones; `_allowed_splits` states them per example."""
    train = examples[examples["given_split"].isin(["train", ""])]
    val, test = (examples[examples["given_split"] == name] for name in ("val", "test"))
    pool = len(train)
    if not {"val", "test"} & given_in_data:
        rest, test = carve(train, pool * spec.test_fraction, spec.seed, "test")
        train, val = carve(rest, pool * spec.validation_fraction, spec.seed, "val")
    elif "val" not in given_in_data:
        train, val = carve(train, pool * spec.validation_fraction, spec.seed, "val")
        notes.append("validation carved from the given train split (stratified)")
    elif "test" not in given_in_data:
        # A given validation split is held-out data curated like a test set: split it in two.
        test_share = spec.test_fraction / (spec.validation_fraction + spec.test_fraction)
        val, test = carve(val, len(val) * test_share, spec.seed, "test")
        notes.append(f"test carved from the given validation split ({test_share:.0%}, stratified)")
    splits = {"train": train, "val": val, "test": test}
    return {name: sorted(splits[name]["example_id"]) for name in SPLITS}


def _grouped(examples: pd.DataFrame, modality: str | None,
             hash_cache: Path | None = None) -> tuple[pd.DataFrame, list[str]]:
    """A `group` column; a group whose members are given in several splits goes, whole, to the
    most held-out one (as an example given twice does)."""
    from tasks.data.grouping import NEAR_COPY_RULE, group_keys

    groups = group_keys(examples, modality, hash_cache) if modality else examples["example_id"]
    examples = examples.assign(group=groups.to_numpy())
    priority = examples["given_split"].map(HELD_OUT_PRIORITY)
    most_held_out = examples.assign(_p=priority).sort_values("_p", kind="stable").drop_duplicates("group")
    given = dict(zip(most_held_out["group"], most_held_out["given_split"], strict=True))
    moved = examples["given_split"] != examples["group"].map(given)
    notes = []
    if moved.any():
        notes.append(f"{int(moved.sum())} example(s) given in one split with a near-copy given in a more held-out "
                     "one moved there")
    grouped = int((examples.groupby("group")["example_id"].nunique() > 1).sum())
    if grouped:
        notes.append(f"{grouped} group(s) of near-copies ({NEAR_COPY_RULE.get(modality or '', 'same example')}) are "
                     "each kept in one split")
    return examples.assign(given_split=examples["group"].map(given)), notes


def _assign_groups(new: pd.DataFrame, examples: pd.DataFrame, recorded: dict[str, str], spec: SplitSpec,
                   notes: list[str], carve: Carve) -> dict[str, list[str]]:
    """New examples: those with a recorded near-copy join its split; the others are assigned a
    group at a time (one representative each, stratified by its label)."""
    recorded_rows = examples[examples["example_id"].isin(recorded.keys())]
    recorded_rows = recorded_rows.assign(_p=recorded_rows["example_id"].map(recorded).map(HELD_OUT_PRIORITY))
    group_split = dict(zip(*(recorded_rows.sort_values("_p", kind="stable").drop_duplicates("group")[column]
                             for column in ("group", "example_id")), strict=True))
    group_split = {group: recorded[example_id] for group, example_id in group_split.items()}
    joining = new[new["group"].isin(group_split.keys())]
    fresh = new[~new["group"].isin(group_split.keys())]
    assigned: dict[str, list[str]] = {name: [] for name in SPLITS}
    for example_id, group in zip(joining["example_id"], joining["group"], strict=True):
        assigned[group_split[group]].append(example_id)
    if len(joining):
        notes.append(f"{len(joining)} new example(s) joined the split of a recorded near-copy")
    if not fresh.empty:
        units = fresh.drop_duplicates("group").assign(example_id=lambda frame: frame["group"])
        by_group = _assign(units, spec, notes, carve, set(examples["given_split"]))
        split_of = {group: name for name in SPLITS for group in by_group[name]}
        for example_id, group in zip(fresh["example_id"], fresh["group"], strict=True):
            assigned[split_of[group]].append(example_id)
    return {name: sorted(ids) for name, ids in assigned.items()}


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
    priority = table["given_split"].map(HELD_OUT_PRIORITY)
    ordered = table.assign(_priority=priority).sort_values(["_priority", "example_id"], kind="stable")
    distinct = ordered.drop_duplicates("example_id").drop(columns="_priority")
    in_several = int(table.groupby("example_id")["given_split"].nunique().gt(1).sum())
    notes = [f"{in_several} example(s) given in two splits kept only in the held-out one"] if in_several else []
    return distinct, notes


def _carve(frame: pd.DataFrame, count: float, seed: int, _: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified split of `frame` into (rest, carved): `count` examples, at least one per class
    (the first assignment of a history, which must cover every class)."""
    size = max(round(count), frame["label"].nunique())
    try:
        return train_test_split(frame, test_size=size, random_state=seed, stratify=frame["label"])
    except ValueError as exc:
        raise DataError(f"cannot make a stratified split of {len(frame)} examples ({exc}). Fix: add examples "
                        "to the smallest classes or raise data.min_examples_per_class.") from None


def _carve_in_proportion(frame: pd.DataFrame, count: float, seed: int,
                         carved_split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """New examples joining a history: each class gives `count / len(frame)` of its examples, the
    fractional part drawn at random, so increments of any size (even one example) are stratified
    in expectation and no class is forced into a split. The draw is seeded by the split seed, the
    examples and the split carved: reproducible, yet not the same draw for every increment."""
    if frame.empty:
        return frame, frame
    examples_hash = int(sha256_text("\n".join(sorted(frame["example_id"])))[:15], 16)
    rng = np.random.default_rng([seed, examples_hash, SPLITS.index(carved_split)])
    share = count / len(frame)
    carved: list[str] = []
    for _, members in frame.groupby("label", sort=True):
        exact = len(members) * share
        take = int(exact) + int(rng.random() < exact - int(exact))
        carved += list(rng.choice(members["example_id"].to_numpy(), size=take, replace=False))
    chosen = frame["example_id"].isin(carved)
    return frame[~chosen], frame[chosen]


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


def _given_split_disagreements(examples: pd.DataFrame, recorded: dict[str, str], history: str) -> tuple[str, ...]:
    """Recorded examples whose given split now says otherwise (files moved between split folders,
    a changed data.split_column). The recorded split wins, so the test set never moves; this
    makes the disagreement visible instead of silent."""
    allowed = _allowed_splits(set(examples["given_split"]))
    given = examples[(examples["given_split"] != "") & examples["example_id"].isin(recorded.keys())]
    rows = zip(given["example_id"], given["given_split"], given["source"], strict=True)
    contradicted = [f"{source} (given {split}, recorded {recorded[example_id]})"
                    for example_id, split, source in rows if recorded[example_id] not in allowed[split]]
    if not contradicted:
        return ()
    more = f" (+{len(contradicted) - SHOWN_EXAMPLES} more)" if len(contradicted) > SHOWN_EXAMPLES else ""
    return (f"{len(contradicted)} example(s) have a given split that contradicts the split recorded for "
            f"them in {history}: {', '.join(contradicted[:SHOWN_EXAMPLES])}{more}. The recorded split wins, so "
            "a test example never moves into training. Fix: put the files back, or start a new split history "
            "with `transferflow split reset MODEL` (the test ledger's exposure counts then start again).",)
