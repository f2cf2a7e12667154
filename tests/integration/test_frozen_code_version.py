"""A registered version runs on the code it was registered with, whatever this transferflow has
moved since.

`frozen/tasks-9ad68e3.tar.gz` is the `tasks` package exactly as it was at commit 9ad68e3, the last
commit before tasks/ was regrouped into layered packages (its own code, not today's relabelled).
A separate Python process imports that copy, registers a small image model with it into a real
SQLite MLflow store and records the answers the version gives there. Today's code must then load
that version and give the same answers, both through `transferflow predict` as a user runs it and
in-process, where the version's own modules must be the ones answering.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import small_image
from tests.integration.conftest import run_transferflow

FROZEN = Path(__file__).parent / "frozen" / "tasks-9ad68e3.tar.gz"

# Runs with the frozen copy first on sys.path: every `tasks` import below is the old layout's.
REGISTER_WITH_FROZEN_CODE = """
import sys
from pathlib import Path

import tasks
frozen, workdir, images = (Path(arg) for arg in sys.argv[1:4])
assert Path(tasks.__file__).resolve().parent == (frozen / "tasks").resolve(), tasks.__file__

import base64

import mlflow
import pandas as pd
import torch
from mlflow import MlflowClient

from tasks.backbones import load_backbone
from tasks.checkpoints import legacy_config, read_checkpoint
from tasks.families import model_spec
from tasks.serving import log_and_register
from tasks.train import Classifier, new_head

model = model_spec(dict(family="torchvision", name="mobilenet_v2", image_size=32))
backbone = load_backbone(model)
weights = workdir / "bare_state_dict.pt"
torch.save(Classifier(backbone, new_head(backbone.dim, 2, seed=0)).state_dict(), weights)
uri = f"sqlite:///{workdir / 'mlflow.db'}"
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
experiment = client.create_experiment("frozen", artifact_location=(workdir / "mlartifacts").as_uri())
run_id = client.create_run(experiment).info.run_id
registration = log_and_register(client, run_id, read_checkpoint(weights, legacy_config(model, ["ants", "bees"])),
                                batch_size=4, model_name="frozen", alias="champion",
                                evidence={"test_metric": "0.91"}, promote=True)
client.set_terminated(run_id)
version = mlflow.pyfunc.load_model(client.get_model_version_download_uri("frozen", registration.version))
files = sorted(images.glob("*.png"))
answers = version.predict(pd.DataFrame({"input": [base64.b64encode(f.read_bytes()).decode() for f in files]}))
answers.insert(0, "input", [f.name for f in files])
answers.to_csv(workdir / "answers_at_registration.csv", index=False)
"""


@pytest.fixture(scope="module")
def frozen_version(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(workdir with the store, the images, the frozen code folder) after the frozen code registered."""
    root = tmp_path_factory.mktemp("frozen")
    frozen, workdir, images = root / "code", root / "workdir", root / "images"
    for folder in (frozen, workdir, images):
        folder.mkdir()
    with tarfile.open(FROZEN) as archive:
        archive.extractall(frozen, filter="data")
    for index in range(6):
        small_image((40, 30), (40 * index, 200 - 30 * index, 90)).save(images / f"{index}.png")
    env = {**os.environ, "PYTHONPATH": str(frozen)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-c", REGISTER_WITH_FROZEN_CODE, str(frozen), str(workdir), str(images)],
                            cwd=frozen, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, images, frozen


def test_transferflow_predict_answers_with_a_version_registered_by_the_frozen_code(frozen_version, tmp_path):
    import pandas as pd

    workdir, images, _ = frozen_version
    out = tmp_path / "predictions.csv"
    code, output = run_transferflow(["predict", "models:/frozen@champion", str(images), "--out", str(out),
                                     "--workdir", str(workdir)], cwd=tmp_path)
    assert code == 0, output
    expected = pd.read_csv(workdir / "answers_at_registration.csv")
    answered = pd.read_csv(out)
    assert answered["input"].tolist() == expected["input"].tolist()
    assert answered["label"].tolist() == expected["label"].tolist()
    for column in ("probability", "p_ants", "p_bees"):
        assert answered[column].to_numpy() == pytest.approx(expected[column].to_numpy(), abs=1e-6)


def test_the_version_answers_with_its_own_modules_and_ours_come_back(frozen_version):
    import pandas as pd

    import tasks
    from tasks.registry.predict import registered_model

    workdir, images, _ = frozen_version
    ours = sys.modules["tasks"]
    files = sorted(images.glob("*.png"))
    with registered_model("models:/frozen@champion", workdir) as model:
        model_class = type(model.unwrap_python_model())
        answers = model.predict(pd.DataFrame({"input": [base64.b64encode(f.read_bytes()).decode() for f in files]}))
    # The class that answered was defined in the version's logged copy (its artifact folder's
    # code/tasks/serving.py), not in this checkout's tasks package.
    answering_file = Path(model_class.predict.__code__.co_filename).resolve()
    assert answering_file.parts[-3:] == ("code", "tasks", "serving.py")
    assert not answering_file.is_relative_to(Path(tasks.__file__).resolve().parent)
    assert sys.modules["tasks"] is ours
    expected = pd.read_csv(workdir / "answers_at_registration.csv")
    assert answers["p_bees"].to_numpy() == pytest.approx(expected["p_bees"].to_numpy(), abs=1e-6)
