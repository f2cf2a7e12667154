"""What a registered version learned from: its own training and validation ids (the split manifest
its run logged) and those of every version it was warm-started from.

A champion trained under another split history (a reset, or a history that began in another
workdir) may have trained on examples that are in this run's test split. Scoring it there, or
starting from its weights, would compare a model with the answers it learned: these are the ids
to leave out, or to refuse on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tasks.registry.evidence import version_evidence
from tasks.registry.tracking import read_json_artifact

SPLIT_FOLDER = "split"  # where a flow run logs the split manifest it trained and tested on
WARM_START_TAG = "warm_started_from"    # the version whose backbone a version started from, or "none"
SPLIT_HISTORY_TAG = "split_history"     # the id of the split history a version was trained under
MANIFEST_TAG = "split_manifest"         # the run's artifact holding its train / validation / test ids


@dataclass(frozen=True)
class LearnedFrom:
    ids: frozenset[str]          # training and validation ids of the version and its lineage
    versions: tuple[str, ...]    # the version, then the one it was warm-started from, and so on
    unreadable: str = ""         # why part of it could not be read ("" when all of it was)

    def describe(self) -> str:
        chain = " <- ".join(f"v{v}" for v in self.versions)
        return f"{chain}: {len(self.ids)} training/validation example(s)"


def warm_start_version(started_from: str) -> str | None:
    """The champion version a run's `started_from` ("champion v3") names, or None (pretrained)."""
    found = re.fullmatch(r"champion v(\d+)", started_from.strip())
    return found.group(1) if found else None


def learned_from(client: MlflowClient, model_name: str, version: ModelVersion) -> LearnedFrom:
    """Walk the warm-start lineage from `version`, collecting each version's train and validation ids."""
    ids: set[str] = set()
    versions: list[str] = []
    current: ModelVersion | None = version
    while current is not None and str(current.version) not in versions:
        versions.append(str(current.version))
        own = train_val_ids_of_run(client, str(current.run_id))
        if own is None:
            return LearnedFrom(frozenset(ids), tuple(versions),
                               f"version {current.version}'s run {current.run_id} has no readable split manifest")
        ids |= own
        tags = version_evidence(client, current)
        parent = tags.get(WARM_START_TAG) or warm_start_version(tags.get("started_from", "")) or "none"
        current = None if parent == "none" else _version(client, model_name, parent)
        if parent != "none" and current is None:
            return LearnedFrom(frozenset(ids), tuple(versions),
                               f"version {versions[-1]} was warm-started from version {parent}, which cannot be read")
    return LearnedFrom(frozenset(ids), tuple(versions))


def train_val_ids_of_run(client: MlflowClient, run_id: str) -> set[str] | None:
    """The training and validation ids of the split manifest a flow run logged, or None."""
    try:
        files = [file for file in client.list_artifacts(run_id, SPLIT_FOLDER) if not file.is_dir]
    except (MlflowException, OSError):
        return None
    ids: set[str] = set()
    for file in files:
        manifest = read_json_artifact(client, run_id, file.path)
        splits = manifest.get("splits") if isinstance(manifest, dict) else None
        if not isinstance(splits, dict):
            return None
        ids |= {str(i) for name in ("train", "val") for i in splits.get(name, [])}
    return ids if files else None


def _version(client: MlflowClient, model_name: str, version: str) -> ModelVersion | None:
    try:
        return client.get_model_version(model_name, version)
    except MlflowException:
        return None
