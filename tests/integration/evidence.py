"""Independent recomputation of what a run claims: labels come from the raw data (folder names,
CSV cells), test ids from the manifest file itself, predictions from the registered model."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion


def file_labels(root: Path, suffixes: tuple[str, ...]) -> dict[str, tuple[Path, str]]:
    """Example id (sha256 of the bytes) -> (file, label from its folder name), for every file with one
    of these suffixes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in suffixes:
            found[hashlib.sha256(path.read_bytes()).hexdigest()] = (path, path.parent.name)
    return found


def image_labels(root: Path) -> dict[str, tuple[Path, str]]:
    return file_labels(root, (".jpg", ".jpeg", ".png"))


def sound_labels(root: Path) -> dict[str, tuple[Path, str]]:
    return file_labels(root, (".wav", ".flac", ".ogg", ".mp3"))


def text_labels(csv_path: Path) -> dict[str, tuple[str, str]]:
    """Example id (sha256 of the text) -> (text, label), for every row."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        return {hashlib.sha256(row["text"].encode()).hexdigest(): (row["text"], row["label"])
                for row in csv.DictReader(handle)}


def manifest_splits(manifest_path: Path) -> dict[str, list[str]]:
    """Read straight from the file: `quarantined_test_ids` would log a read of the test set."""
    return json.loads(manifest_path.read_text())["splits"]


def image_payload(path: Path) -> str:
    """What a client sends for an image: its bytes, base64-encoded."""
    return base64.b64encode(path.read_bytes()).decode("ascii")


def predict_registered(client: MlflowClient, model_name: str, version: str, inputs: list[str]) -> pd.DataFrame:
    """Predict through the registered pyfunc, loaded from the version's own artifacts."""
    import mlflow

    source = client.get_model_version_download_uri(model_name, version)
    return mlflow.pyfunc.load_model(source).predict(pd.DataFrame({"input": inputs}))


def version_evidence(client: MlflowClient, version: ModelVersion) -> dict[str, str]:
    """A version's whole evidence, read straight from its run's `evidence.json` (the version itself
    shows only a handful of tags), with the tags set on the version afterwards (`drift_reference`)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        logged = json.loads(Path(client.download_artifacts(version.run_id, "evidence.json", folder)).read_text())
    return {**version.tags, **logged}


def version_file(client: MlflowClient, model_name: str, version: str, path: str, folder: str) -> Path:
    """A file (or folder) of a version's model, e.g. `MLmodel`, downloaded from where the version says
    its model is (its run's logged model)."""
    from mlflow.artifacts import download_artifacts

    source = client.get_model_version_download_uri(model_name, version)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(download_artifacts(artifact_uri=f"{source}/{path}", dst_path=folder, tracking_uri=client.tracking_uri))


ANCHOR_ACTIONS = ("classic_anchor", "beats_classic", "below_classic")  # the decision log's first and last entries


def stage_decisions(entries: list[dict]) -> list[dict]:
    """The decisions after the stages, without the classic anchor's entry (first) and the chosen
    model's comparison with it (last), after checking that both are where they belong."""
    assert entries[0]["action"] == "classic_anchor" and entries[-1]["action"] in ("beats_classic", "below_classic")
    return [entry for entry in entries if entry["action"] not in ANCHOR_ACTIONS]
