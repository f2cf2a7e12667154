"""`transferflow predict` reads the user's local files and sends the model what a served model
gets (image bytes, texts); looking a model up never creates a store. Real MLflow, SQLite store."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.core.errors import TransferflowError
from tasks.registry.predict import read_inputs
from tests.registered_models import SMALL_IMAGE_MODEL, TEXT_MODEL, open_store, png_base64, register, save_checkpoint

TRANSFERFLOW = Path(sys.executable).parent / "transferflow"


@pytest.fixture(autouse=True)
def default_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def text_workdir(tmp_path_factory):
    """A workdir whose default store holds `sms@champion`, a MiniLM text model."""
    workdir = tmp_path_factory.mktemp("home") / "workdir"
    workdir.mkdir()
    register(open_store(workdir), save_checkpoint(workdir, TEXT_MODEL, 2), TEXT_MODEL, ["ham", "spam"], "sms")
    return workdir


@pytest.fixture(scope="module")
def image_workdir(tmp_path_factory):
    """A workdir whose default store holds `insects@champion`, a small MobileNetV2 model."""
    workdir = tmp_path_factory.mktemp("image") / "workdir"
    workdir.mkdir()
    checkpoint = save_checkpoint(workdir, SMALL_IMAGE_MODEL, 2)
    register(open_store(workdir), checkpoint, SMALL_IMAGE_MODEL, ["ants", "bees"], "insects")
    return workdir


@pytest.fixture
def messages(tmp_path):
    path = tmp_path / "messages.csv"
    path.write_text("id,message\n1,Free entry: win a prize now\n2,See you at lunch tomorrow\n")
    return path


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(base64.b64decode(png_base64()))
    return path


def predict(*args: str):
    return CliRunner().invoke(app, ["predict", *args])


def test_csv_texts_are_read_from_the_column_named_by_column(text_workdir, messages):
    result = predict("models:/sms@champion", str(messages), "--column", "message", "--workdir", str(text_workdir))
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "Free entry" in line or "See you" in line]
    assert len(rows) == 2
    assert all(any(f" {label} " in row for label in ("ham", "spam")) for row in rows)


def test_a_missing_column_names_the_columns_and_the_fix(text_workdir, messages):
    result = predict("models:/sms@champion", str(messages), "--workdir", str(text_workdir))
    assert result.exit_code == 2
    assert "no column 'text'" in result.output and "['id', 'message']" in result.output
    assert "--column" in result.output and "Traceback" not in result.output


def test_home_is_expanded_in_inputs_and_workdir(text_workdir, messages, monkeypatch):
    monkeypatch.setenv("HOME", str(messages.parent))
    result = predict("models:/sms@champion", "~/messages.csv", "--column", "message",
                     "--workdir", str(Path("~") / os.path.relpath(text_workdir, messages.parent)))
    assert result.exit_code == 0, result.output


def test_image_files_are_answered_by_an_image_model(image_workdir, photo):
    result = predict("models:/insects@champion", str(photo), "--workdir", str(image_workdir))
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if "photo.png" in line]
    assert " ants " in row or " bees " in row


def test_an_image_model_refuses_csv_files(image_workdir, messages):
    result = predict("models:/insects@champion", str(messages), "--column", "message", "--workdir", str(image_workdir))
    assert result.exit_code == 2
    assert f"{messages}: 'models:/insects@champion' reads images, not texts. Fix: pass image files" in result.output


def test_a_text_model_refuses_image_files(text_workdir, photo):
    result = predict("models:/sms@champion", str(photo), "--workdir", str(text_workdir))
    assert result.exit_code == 2
    assert f"{photo}: 'models:/sms@champion' reads texts, not images" in result.output


def test_an_unknown_model_is_a_clear_error(text_workdir, messages):
    result = predict("models:/nope@champion", str(messages), "--column", "message", "--workdir", str(text_workdir))
    assert result.exit_code == 2
    assert "cannot load model 'models:/nope@champion'" in result.output and "Traceback" not in result.output


def test_no_inputs_is_a_clear_error():
    result = predict("models:/sms@champion")
    assert result.exit_code == 2
    assert "no inputs given" in result.output


def test_predict_in_a_folder_without_a_store_leaves_it_empty(tmp_path, photo):
    """The real console script, as a user runs it: no store is created by looking a model up,
    and no Prefect home, since predict runs no flow."""
    folder = tmp_path / "empty"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "MLFLOW_TRACKING_URI")}
    result = subprocess.run([str(TRANSFERFLOW), "predict", "models:/digits@champion", str(photo)], cwd=folder,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no MLflow store there" in result.stderr and "--workdir" in result.stderr
    assert list(folder.iterdir()) == []


def test_image_files_are_sent_as_their_base64_bytes(photo):
    [read] = read_inputs([photo], "text")
    assert base64.b64decode(read.value) == photo.read_bytes()
    assert read.shown == "photo.png" and read.modality == "image"


def test_a_file_that_is_not_an_image_is_refused(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(TransferflowError, match=r"notes\.txt: not an image or sound file"):
        read_inputs([notes], "text")


def test_a_missing_input_is_named(tmp_path):
    with pytest.raises(TransferflowError, match=r"missing\.png: input file not found"):
        read_inputs([tmp_path / "missing.png"], "text")


def test_a_folder_of_images_in_batches_to_a_csv(image_workdir, tmp_path):
    """Batch mode: every image in the folder (recursively, other files ignored), in batches, one
    CSV row each, answered exactly as the served model answers those bytes."""
    import mlflow
    import pandas as pd

    from tasks.registry.predict import predict_in_batches

    folder = tmp_path / "incoming"
    colours = [(i * 37 % 256, i * 91 % 256, i * 53 % 256) for i in range(70)]
    for i, colour in enumerate(colours):
        target = folder / ("a" if i % 2 else "b") / f"{i:02d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(png_base64(colour)))
    (folder / "a" / "notes.txt").write_text("not an image")
    out = tmp_path / "predictions.csv"
    result = predict("models:/insects@champion", str(folder), "--out", str(out), "--workdir", str(image_workdir))
    assert result.exit_code == 0, result.output
    assert f"Wrote 70 prediction(s) to {out}" in result.output
    written = pd.read_csv(out)
    assert list(written.columns) == ["input", "label", "probability", "p_ants", "p_bees"]
    files = sorted(p for p in folder.rglob("*.png"))
    assert written["input"].tolist() == [str(p.relative_to(folder)) for p in files]
    from tasks.registry.predict import registered_model

    with registered_model("models:/insects@champion", image_workdir) as model:
        served = model.predict(pd.DataFrame({"input": [base64.b64encode(p.read_bytes()).decode() for p in files]}))
        small = predict_in_batches(model, read_inputs([folder], "text"), batch_size=7)  # 10 batches, same answers
    assert written["label"].tolist() == served["label"].tolist()
    assert written["p_bees"].to_numpy() == pytest.approx(served["p_bees"].to_numpy(), abs=1e-6)
    assert mlflow.get_tracking_uri() != f"sqlite:///{image_workdir / 'mlflow.db'}"
    assert small["label"].tolist() == served["label"].tolist()


def test_a_folder_without_images_is_a_clear_error(image_workdir, tmp_path):
    (tmp_path / "empty").mkdir()
    result = predict("models:/insects@champion", str(tmp_path / "empty"), "--workdir", str(image_workdir))
    assert result.exit_code == 2 and "no image files in this folder" in result.output


def test_an_existing_out_file_is_kept_unless_force_is_given(image_workdir, photo, tmp_path):
    import pandas as pd

    out = tmp_path / "predictions.csv"
    out.write_text("mine,not yours\n")
    refused = predict("models:/insects@champion", str(photo), "--out", str(out), "--workdir", str(image_workdir))
    assert refused.exit_code == 2 and "the file exists. Fix: pass --force" in refused.output
    assert out.read_text() == "mine,not yours\n"
    replaced = predict("models:/insects@champion", str(photo), "--out", str(out), "--force",
                       "--workdir", str(image_workdir))
    assert replaced.exit_code == 0, replaced.output
    assert list(pd.read_csv(out)["input"]) == [photo.name]
