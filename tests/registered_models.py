"""Small real registered models for tests: a pretrained backbone with a seeded, untrained linear
head, registered through tasks.registry.serving into a SQLite store in a test's workdir (where
`transferflow predict --workdir` looks for it). `register_legacy` registers a version in the artifact
layout transferflow used before checkpoints described themselves (with today's code inside), to
prove today's readers still read that layout."""

from __future__ import annotations

import base64
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow import MlflowClient

from tasks.config.families import model_spec
from tasks.config.spec import ModelSpec
from tasks.models.backbones import load_backbone
from tasks.models.checkpoints import legacy_config, read_checkpoint
from tasks.models.classifier import Classifier, new_head
from tasks.registry.serving import (
    INPUT_DESCRIPTION,
    PYFUNC_ENTRY,
    TASKS_PACKAGE,
    Registration,
    log_and_register,
    pip_requirements,
)

SMALL_IMAGE_MODEL = model_spec(dict(family="torchvision", name="mobilenet_v2", image_size=32))
TEXT_MODEL = model_spec(dict(family="hf_text", name="all-MiniLM-L6-v2", max_tokens=16))
AUDIO_MODEL = model_spec(dict(family="spectrogram", name="mobilenet_v2", max_seconds=0.5, n_mels=32, image_size=32))


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
    """A bare state dict (as stages were saved before checkpoints described themselves)."""
    backbone = load_backbone(model)
    checkpoint = folder / f"{model.name}.pt"
    torch.save(Classifier(backbone, new_head(backbone.dim, n_classes, seed=0)).state_dict(), checkpoint)
    return checkpoint


def log_split_manifest(store: Store, trained_on: list[str]) -> None:
    """The split manifest a flow run logs (`split/`): the ids the registered version trained on."""
    manifest = {"splits": {"train": trained_on, "val": [], "test": []}}
    store.client.log_text(store.run_id, json.dumps(manifest), "split/manifest.json")


def register(store: Store, checkpoint: Path, model: ModelSpec, classes: list[str], model_name: str,
             alias: str = "champion", trained_on: list[str] | None = None) -> Registration:
    """Register a checkpoint file (self-describing, or a bare state dict of `model` and `classes`),
    its run's split manifest saying it trained on `trained_on` (ids)."""
    log_split_manifest(store, trained_on or [])
    return log_and_register(store.client, store.run_id, read_checkpoint(checkpoint, legacy_config(model, classes)),
                            batch_size=4, model_name=model_name, alias=alias, tags={"test_metric": "0.91"},
                            promote=True, model_description=f"Tell {' from '.join(classes)}.")


def register_legacy(store: Store, weights_path: Path, model: ModelSpec, classes: list[str], model_name: str,
                    alias: str = "champion", batch_size: int = 4) -> Registration:
    """A version laid out as `log_and_register` made it before checkpoints described themselves
    (that function's body, copied; the code logged inside is today's): artifacts `weights` (a bare
    state dict) and `config` (model_config.json with the model spec, the classes and the batch size)."""
    from mlflow.models import ModelSignature
    from mlflow.pyfunc import save_model
    from mlflow.types import ColSpec, Schema

    client, run_id = store.client, store.run_id
    log_split_manifest(store, [])
    modality = model.MODALITY
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        outputs = [ColSpec("string", "label"), ColSpec("double", "probability"),
                   *(ColSpec("double", f"p_{c}") for c in classes)]
        signature = ModelSignature(inputs=Schema([ColSpec("string", "input")]), outputs=Schema(outputs))
        config_path = folder / "model_config.json"
        # Before model families had their own options, every saved model spec carried both input sizes.
        saved_model = {"image_size": 224, "max_tokens": 128, **model.model_dump(mode="json", exclude={"weights"})}
        config_path.write_text(json.dumps({"model": saved_model, "classes": classes, "batch_size": batch_size}))
        model_dir = folder / "model"
        save_model(
            path=str(model_dir), python_model=str(PYFUNC_ENTRY),
            artifacts={"weights": str(weights_path), "config": str(config_path)},
            code_paths=[str(TASKS_PACKAGE)], pip_requirements=pip_requirements(model), signature=signature,
            metadata={"input_modality": modality, "input": INPUT_DESCRIPTION[modality]},
        )
        client.log_artifacts(run_id, str(model_dir), "model")
    if not client.search_registered_models(f"name = '{model_name}'"):
        client.create_registered_model(model_name)
    version = client.create_model_version(
        model_name, f"{client.get_run(run_id).info.artifact_uri}/model", run_id=run_id,
        tags={"test_metric": "0.91"}, description=f"Send {INPUT_DESCRIPTION[modality]}.").version
    client.set_registered_model_alias(model_name, alias, version)
    return Registration(model_name, str(version), f"models:/{model_name}/{version}")


def png_base64(colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    """A real PNG image's bytes, base64-encoded as a client sends them."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
