"""Small real registered models for tests: a pretrained backbone with a seeded, untrained linear
head, registered through tasks.serving into a SQLite store in a test's workdir (where
`transferflow predict --workdir` looks for it)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow import MlflowClient

from tasks.backbones import load_backbone
from tasks.serving import Registration, log_and_register
from tasks.spec import ModelSpec
from tasks.train import Classifier, new_head

SMALL_IMAGE_MODEL = ModelSpec(family="torchvision", name="mobilenet_v2", image_size=32)
TEXT_MODEL = ModelSpec(family="hf_text", name="all-MiniLM-L6-v2", max_tokens=16)


@dataclass(frozen=True)
class Store:
    workdir: Path
    client: MlflowClient
    run_id: str

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow.db'}"


def open_store(workdir: Path) -> Store:
    """The workdir's default store with one running run, as a flow run has when it registers."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("tests", artifact_location=(workdir / "mlartifacts").as_uri())
    return Store(workdir, client, client.create_run(experiment).info.run_id)


def save_checkpoint(folder: Path, model: ModelSpec, n_classes: int) -> Path:
    backbone = load_backbone(model)
    checkpoint = folder / f"{model.name}.pt"
    torch.save(Classifier(backbone, new_head(backbone.dim, n_classes, seed=0)).state_dict(), checkpoint)
    return checkpoint


def register(store: Store, checkpoint: Path, model: ModelSpec, classes: list[str], model_name: str,
             alias: str = "champion") -> Registration:
    return log_and_register(store.client, store.run_id, checkpoint, model, classes, batch_size=4,
                            model_name=model_name, alias=alias, evidence={"test_metric": "0.91"}, promote=True)


def png_base64(colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    """A real PNG image's bytes, base64-encoded as a client sends them."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
