"""`transferflow predict` reads the user's local files and sends the model what a served model
gets (image or sound bytes, texts); a CSV is read as the registered model reads it (texts, or
sound-file paths relative to the CSV's folder); looking a model up never creates a store. Real
MLflow, SQLite store."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.config.families import model_spec
from tasks.core.errors import TransferflowError
from tasks.registry.predict import modality_of, read_inputs
from tests.registered_models import SMALL_IMAGE_MODEL, TEXT_MODEL, open_store, png_base64, register, save_checkpoint
from tests.sounds import chirp, tone, write

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


# --- sound files -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, modality", [("clip.wav", "audio"), ("CLIP.FLAC", "audio"), ("clip.ogg", "audio"),
                                            ("clip.mp3", "audio"), ("texts.csv", "text"), ("photo.png", "image"),
                                            ("photo.JPG", "image")])
def test_a_files_modality_follows_its_extension_in_any_case(name, modality):
    assert modality_of(Path(name)) == modality


def test_sound_files_are_sent_as_their_base64_bytes(tmp_path):
    clip = Path(write(tmp_path / "yes.flac", tone(440)))
    [read] = read_inputs([clip], "text")
    assert base64.b64decode(read.value) == clip.read_bytes()
    assert read.shown == "yes.flac" and read.modality == "audio"


def test_a_folder_of_sound_files_gives_its_sound_files_only(tmp_path):
    folder = tmp_path / "incoming"
    write(folder / "b" / "2.flac", tone(300))
    write(folder / "a" / "1.wav", tone(500))
    write(folder / "a" / ".3.wav", tone(700))  # hidden: never an input
    (folder / "notes.txt").write_text("recorded on Tuesday")
    (folder / "cover.png").write_bytes(base64.b64decode(png_base64()))
    read = read_inputs([folder], "text")
    assert [item.shown for item in read] == ["a/1.wav", "b/2.flac"]
    assert {item.modality for item in read} == {"audio"}


def test_a_file_named_like_a_sound_that_does_not_decode_is_named_before_anything_is_sent(tmp_path):
    from tasks.core.errors import DataError

    write(tmp_path / "incoming" / "fine.wav", tone(440))
    fake = tmp_path / "incoming" / "fake.wav"
    fake.write_text("a shopping list, not a sound\n" * 20)
    for inputs in ([fake], [tmp_path / "incoming"]):
        with pytest.raises(DataError, match=r"fake\.wav: not a sound file libsndfile can read"):
            read_inputs(inputs, "text")


@pytest.mark.parametrize("model_reads, sent, wanted", [
    ("image", "clip.wav", "images, not sound files. Fix: pass image"),
    ("audio", "photo.png", "sound files, not images. Fix: pass sound")])
def test_a_model_refuses_files_of_another_modality_naming_the_first(tmp_path, model_reads, sent, wanted):
    from types import SimpleNamespace

    from tasks.registry.predict import ModelInput, check_modality

    model = SimpleNamespace(metadata=SimpleNamespace(metadata={"input_modality": model_reads}))
    right = "photo.png" if sent == "clip.wav" else "clip.wav"
    check_modality([ModelInput(tmp_path / right, right)], model, "models:/m@champion")  # its own modality passes
    with pytest.raises(TransferflowError, match=rf"{sent}: 'models:/m@champion' reads {wanted}"):
        check_modality([ModelInput(tmp_path / right, right), ModelInput(tmp_path / sent, sent)], model,
                       "models:/m@champion")


# --- CSV files of sound-file paths -------------------------------------------------------------

WORDS_MODEL = model_spec(dict(family="spectrogram", name="mobilenet_v2", max_seconds=0.5, n_mels=32))


@pytest.fixture(scope="module")
def audio_workdir(tmp_path_factory):
    """A workdir whose default store holds `words@champion`, a small spectrogram (audio) model."""
    workdir = tmp_path_factory.mktemp("audio") / "workdir"
    workdir.mkdir()
    register(open_store(workdir), save_checkpoint(workdir, WORDS_MODEL, 2), WORDS_MODEL, ["chirp", "tone"], "words")
    return workdir


@pytest.fixture
def sound_list(tmp_path):
    """batch/list.csv naming two sound files relative to its own folder, and a decoy of the same
    name in another folder, the working folder of the tests that use it."""
    folder = tmp_path / "batch"
    write(folder / "clips" / "a.wav", tone(440))
    write(folder / "clips" / "b.flac", chirp(300, 3000))
    write(tmp_path / "elsewhere" / "clips" / "a.wav", tone(880, 0.3))
    (folder / "list.csv").write_text("id,file\n1,clips/a.wav\n2,clips/b.flac\n")
    return folder / "list.csv"


def test_a_csv_of_sound_files_is_read_against_its_own_folder_and_sent_as_their_bytes(sound_list, monkeypatch):
    monkeypatch.chdir(sound_list.parent.parent / "elsewhere")
    read = read_inputs([sound_list], "file")  # the model's modality unknown: every value names a sound file
    folder = sound_list.parent
    assert [(item.shown, item.source, item.modality) for item in read] == [
        ("clips/a.wav", folder / "clips" / "a.wav", "audio"), ("clips/b.flac", folder / "clips" / "b.flac", "audio")]
    assert base64.b64decode(read[0].value) == (folder / "clips" / "a.wav").read_bytes()


def test_for_an_audio_model_a_csv_row_naming_no_sound_file_inside_its_folder_is_named(tmp_path):
    folder = tmp_path / "batch"
    write(folder / "clips" / "a.wav", tone(440))
    (folder / "clips" / "b").write_bytes((folder / "clips" / "a.wav").read_bytes())
    write(tmp_path / "outside.wav", tone(440))
    unnamed = folder / "unnamed.csv"
    unnamed.write_text("file\nclips/a.wav\nclips/b\n")
    assert {item.modality for item in read_inputs([unnamed], "file")} == {"text"}  # not every value a sound file
    with pytest.raises(TransferflowError, match=r"unnamed\.csv: 1 row\(s\) of column 'file' \(--column\) name no "
                                                r"sound file "
                                                r".*row 3: 'clips/b'"):
        read_inputs([unnamed], "file", "audio")  # the model reads sound: the list is read as one
    escaping = folder / "escaping.csv"
    escaping.write_text("file\nclips/a.wav\n../outside.wav\n")
    with pytest.raises(TransferflowError, match=r"escaping\.csv: 1 row\(s\) of column 'file' \(--column\) name no "
                                                r"file inside the CSV's folder .*row 3: '\.\./outside\.wav' is "
                                                r"outside"):
        read_inputs([escaping], "file", "audio")


def test_an_audio_model_answers_a_csv_of_sound_files_as_it_answers_their_bytes(audio_workdir, sound_list, tmp_path,
                                                                               monkeypatch):
    import pandas as pd

    from tasks.registry.predict import registered_model

    monkeypatch.chdir(tmp_path / "elsewhere")
    out = tmp_path / "predictions.csv"
    result = predict("models:/words@champion", str(sound_list), "--column", "file", "--out", str(out),
                     "--workdir", str(audio_workdir))
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    assert written["input"].tolist() == ["clips/a.wav", "clips/b.flac"]
    files = [sound_list.parent / "clips" / "a.wav", sound_list.parent / "clips" / "b.flac"]
    with registered_model("models:/words@champion", audio_workdir) as model:
        served = model.predict(pd.DataFrame({"input": [base64.b64encode(p.read_bytes()).decode() for p in files]}))
    assert written["label"].tolist() == served["label"].tolist()
    assert written["p_tone"].to_numpy() == pytest.approx(served["p_tone"].to_numpy(), abs=1e-6)


def test_a_csv_is_read_as_the_registered_model_reads_it(audio_workdir, text_workdir, sound_list, messages):
    """An audio model reads a CSV as a list of sound files, so a CSV of texts is named row by row
    (not refused as texts); a text model refuses a list of sound files (not reading file names as texts)."""
    as_paths = predict("models:/words@champion", str(messages), "--column", "message", "--workdir", str(audio_workdir))
    assert as_paths.exit_code == 2
    assert "row 2: 'Free entry: win a prize now' not found" in as_paths.output and "Traceback" not in as_paths.output
    as_texts = predict("models:/sms@champion", str(sound_list), "--column", "file", "--workdir", str(text_workdir))
    assert as_texts.exit_code == 2
    clip = sound_list.parent / "clips" / "a.wav"
    assert f"{clip}: 'models:/sms@champion' reads texts, not sound files" in as_texts.output
