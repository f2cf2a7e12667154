"""`transferflow predict`: the user's local files in, a registered model's answers out.

The model gets what a served model gets over HTTP: each image file's bytes base64-encoded, a
CSV's texts as texts, never a path. Looking a model up never creates an MLflow store.
"""

from __future__ import annotations

import base64
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import TransferflowError

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))")


@dataclass(frozen=True)
class ModelInput:
    source: Path  # the local file it was read from
    shown: str    # what the result table shows
    value: str    # what the model reads: base64 image bytes or a text

    @property
    def modality(self) -> str:
        return modality_of(self.source)


def modality_of(path: Path) -> str:
    """A CSV holds texts; any other input file is an image."""
    return "text" if path.suffix.lower() == ".csv" else "image"


def read_inputs(paths: list[Path], text_column: str) -> list[ModelInput]:
    """Image files are read as base64 bytes and shown by name; a CSV gives the texts of its
    `text_column`. `~` is expanded, since a quoted path reaches us unexpanded."""
    if not paths:
        raise TransferflowError("no inputs given. Fix: name image files or CSV files of texts after the "
                                "model, e.g. `transferflow predict models:/digits@champion digit.png`.")
    inputs: list[ModelInput] = []
    for path in (p.expanduser() for p in paths):
        if not path.is_file():
            raise TransferflowError(f"{path}: input file not found.")
        inputs += _read_texts(path, text_column) if modality_of(path) == "text" else [_read_image(path)]
    return inputs


def _read_texts(path: Path, text_column: str) -> list[ModelInput]:
    from tasks.data import read_csv

    frame = read_csv(path)
    if text_column not in frame.columns:
        raise TransferflowError(f"{path}: no column '{text_column}' (columns: {list(frame.columns)}). "
                                "Fix: pass --column NAME.")
    return [ModelInput(path, text[:60], text) for text in frame[text_column].fillna("")]


def _read_image(path: Path) -> ModelInput:
    from PIL import Image

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)):
            pass
    except OSError:
        raise TransferflowError(f"{path}: not an image file PIL can read. "
                                "Fix: pass image files, or CSV files of texts (with --column).") from None
    return ModelInput(path, path.name, base64.b64encode(data).decode("ascii"))


def load_model(model_uri: str, workdir: Path) -> Any:
    """The registered pyfunc, found through an explicit client for the workdir's store (or
    MLFLOW_TRACKING_URI's, as set): MLflow's own `models:/` lookup uses the process-wide URI."""
    import mlflow
    from mlflow.exceptions import MlflowException

    match = MODEL_URI.fullmatch(model_uri)
    if not match:
        raise _cannot_load(model_uri, "not a registered model's URI")
    client = _existing_store_client(workdir, model_uri)
    try:
        version = (client.get_model_version_by_alias(match["name"], match["alias"]) if match["alias"]
                   else client.get_model_version(match["name"], match["version"]))
        return mlflow.pyfunc.load_model(client.get_model_version_download_uri(version.name, version.version))
    except (MlflowException, OSError) as exc:
        raise _cannot_load(model_uri, str(exc).splitlines()[0]) from None


def _existing_store_client(workdir: Path, model_uri: str) -> Any:
    """A client for a store that exists: opening a missing SQLite file would create one."""
    from tasks.tracking import client_for

    store = workdir / "mlflow.db"
    if not os.environ.get("MLFLOW_TRACKING_URI") and not store.is_file():
        raise TransferflowError(f"{store}: no MLflow store there, so no model '{model_uri}'. Fix: pass "
                                "--workdir <the workdir of the run that registered it>, or set MLFLOW_TRACKING_URI.")
    return client_for(workdir)


def _cannot_load(model_uri: str, reason: str) -> TransferflowError:
    return TransferflowError(
        f"cannot load model '{model_uri}' ({reason}). Fix: use models:/<name>@<alias> or "
        "models:/<name>/<version> of a registered model, with --workdir or MLFLOW_TRACKING_URI "
        "pointing at its store.")


def check_modality(inputs: list[ModelInput], model: Any, model_uri: str) -> None:
    """Images for an image model, texts for a text model: name the first file that does not fit."""
    expected = (model.metadata.metadata or {}).get("input_modality")
    if expected is None:
        raise TransferflowError(f"'{model_uri}' was registered by an older transferflow, whose models read "
                                "file paths. Fix: register a new version with `transferflow run`.")
    wrong = next((item for item in inputs if item.modality != expected), None)
    if wrong:
        wanted = "image files" if expected == "image" else "CSV files of texts (with --column)"
        raise TransferflowError(f"{wrong.source}: '{model_uri}' reads {expected}s, not {wrong.modality}s. "
                                f"Fix: pass {wanted}.")
