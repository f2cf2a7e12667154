"""The registered pyfunc answers image bytes (an audio model: sound-file bytes) and never opens a
path; registration goes through an explicit client, leaves the flow's run open, and is
all-or-nothing; a version holds one self-describing checkpoint, and versions registered by older
code still load and answer. Real MLflow, SQLite store."""

import base64
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException

from tasks.config.families import model_spec
from tasks.registry.champion import registered_artifacts, registered_checkpoint, restore_registered
from tasks.registry.serving import decode_file, download_model_files, run_model_id
from tests.registered_models import (
    SMALL_IMAGE_MODEL,
    open_store,
    png_base64,
    register,
    register_legacy,
    save_checkpoint,
)
from tests.sounds import chirp, pcm16, tone, write

CLASSES = ["ants", "bees"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("checkpoint"), SMALL_IMAGE_MODEL, len(CLASSES))


@pytest.fixture(scope="module")
def registered(tmp_path_factory, checkpoint):
    store = open_store(tmp_path_factory.mktemp("store"))
    return store, register(store, checkpoint, SMALL_IMAGE_MODEL, CLASSES, "insects")


@pytest.fixture(scope="module")
def users_store(registered):
    """The store a user names with MLFLOW_TRACKING_URI for `mlflow models serve -m models:/...`."""
    store, _ = registered
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("MLFLOW_TRACKING_URI", store.uri)
        environment.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield


@pytest.fixture(scope="module")
def champion(users_store):
    return mlflow.pyfunc.load_model("models:/insects@champion")


@pytest.fixture
def image_on_disk(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(base64.b64decode(png_base64()))
    return path


def test_image_bytes_are_answered_with_a_label_and_probabilities(champion):
    predictions = champion.predict(pd.DataFrame({"input": [png_base64(), png_base64((10, 10, 240))]}))
    assert set(predictions["label"]) <= set(CLASSES)
    assert (predictions[["p_ants", "p_bees"]].sum(axis=1) - 1).abs().max() < 1e-5
    assert (predictions["probability"] == predictions[["p_ants", "p_bees"]].max(axis=1)).all()


@pytest.mark.parametrize("sent", ["path", "base64 of the path", "/etc/passwd"])
def test_a_path_is_refused_and_never_opened(champion, image_on_disk, sent):
    value = {"path": str(image_on_disk), "/etc/passwd": "/etc/passwd",
             "base64 of the path": base64.b64encode(str(image_on_disk).encode()).decode()}[sent]
    with pytest.raises(MlflowException, match="send base64-encoded image bytes, not a path") as raised:
        champion.predict(pd.DataFrame({"input": [png_base64(), value]}))
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "input row 1" in raised.value.message


def test_decoded_image_is_read_in_memory():
    from PIL import Image

    with Image.open(decode_file(png_base64(), row=0)) as image:
        assert image.size == (40, 30)


@pytest.mark.parametrize("value", ["", "aGVsbG8=", None, b"\x89PNG\r\n"])
def test_decode_refuses_what_is_not_base64_of_an_image(value):
    with pytest.raises(MlflowException, match="input row 3: not base64-encoded image bytes"):
        decode_file(value, row=3)


# --- sound files -------------------------------------------------------------------------------

def sound_file(folder: Path, suffix: str) -> tuple[Path, np.ndarray]:
    """A 22.05 kHz tone as a sound file of `suffix`, with the 16-bit samples it holds."""
    samples = pcm16(tone(440, seconds=0.5, rate=22_050))
    return Path(write(folder / f"clip{suffix}", samples, rate=22_050)), samples


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_decoded_sound_bytes_are_read_in_memory_as_the_file_they_came_from(tmp_path, suffix):
    import soundfile

    path, samples = sound_file(tmp_path, suffix)
    data = decode_file(base64.b64encode(path.read_bytes()).decode("ascii"), row=0, modality="audio")
    assert data.getvalue() == path.read_bytes()
    decoded, rate = soundfile.read(data, dtype="int16")
    assert rate == 22_050
    if suffix in (".wav", ".flac"):  # lossless: the very samples
        np.testing.assert_array_equal(decoded, samples)


@pytest.mark.parametrize("value", ["", "aGVsbG8=", None, b"RIFF", png_base64(), "/etc/passwd",
                                   base64.b64encode(b"/srv/clips/clip.wav").decode()],
                         ids=["empty", "base64 of text", "None", "bytes", "an image", "a path", "base64 of a path"])
def test_decode_refuses_what_is_not_base64_of_a_sound_file_with_the_fix(value):
    with pytest.raises(MlflowException, match=r"input row 3: not base64-encoded sound file bytes\. "
                                              r"Fix: send base64-encoded sound file bytes, not a path\.") as raised:
        decode_file(value, row=3, modality="audio")
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.fixture(scope="module")
def served_audio_model(tmp_path_factory):
    """A spectrogram model saved as the registry serves it (not registered: no store needed)."""
    from tasks.models.backbones import load_backbone
    from tasks.models.checkpoints import Checkpoint
    from tasks.models.classifier import Classifier, new_head
    from tasks.registry.serving import save_pyfunc

    folder = tmp_path_factory.mktemp("audio-model")
    spec = model_spec({"family": "spectrogram", "name": "mobilenet_v2", "max_seconds": 0.5, "n_mels": 32})
    backbone = load_backbone(spec)
    classifier = Classifier(backbone, new_head(backbone.dim, 2, seed=0))
    checkpoint = Checkpoint(model=spec, classes=["no", "yes"], weights=classifier.state_dict(), stage="test")
    return classifier, mlflow.pyfunc.load_model(str(save_pyfunc(folder / "served", checkpoint, batch_size=2)))


def test_a_served_audio_model_answers_sound_bytes_as_its_classifier_does(served_audio_model, tmp_path):
    classifier, served = served_audio_model
    assert served.metadata.metadata["input_modality"] == "audio"
    paths = [sound_file(tmp_path, ".wav")[0], Path(write(tmp_path / "sweep.flac", chirp(300, 3000)))]
    answer = served.predict(pd.DataFrame({"input": [base64.b64encode(p.read_bytes()).decode() for p in paths]}))
    with torch.no_grad():
        expected = torch.softmax(classifier(classifier.backbone.preprocess([str(p) for p in paths])), dim=1).numpy()
    np.testing.assert_allclose(answer[["p_no", "p_yes"]].to_numpy(), expected, atol=1e-5)


def test_a_served_audio_model_refuses_a_path(served_audio_model, tmp_path):
    _, served = served_audio_model
    path, _ = sound_file(tmp_path, ".wav")
    good = base64.b64encode(path.read_bytes()).decode()
    for sent in (str(path), base64.b64encode(str(path).encode()).decode()):
        with pytest.raises(MlflowException, match="input row 1: not base64-encoded sound file bytes"):
            served.predict(pd.DataFrame({"input": [good, sent]}))


def test_registration_leaves_the_flow_run_open(registered):
    store, _ = registered
    assert store.client.get_run(store.run_id).info.status == "RUNNING"


def test_version_has_its_tags_alias_and_says_what_to_send(registered):
    store, registration = registered
    version = store.client.get_model_version_by_alias("insects", "champion")
    assert str(version.version) == registration.version and version.run_id == store.run_id
    assert version.tags == {"test_metric": "0.91"}  # exactly the tags it was given
    assert "base64-encoded" in version.description
    assert store.client.get_registered_model("insects").description == "Tell ants from bees."


def test_the_version_is_registered_from_the_runs_logged_model_and_linked_to_it(registered):
    """MLflow 3's "Logged models": the run's model is one, READY, and the version comes from it.
    An open-source store keeps no `model_id` on a version (`ModelVersion.model_id` stays None), so
    the link is the version's source (the logged model's files) and the logged model's
    `mlflow.modelVersions` tag, which its page lists as the versions registered from it."""
    store, registration = registered
    client = store.client
    [output] = client.get_run(store.run_id).outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.status == LoggedModelStatus.READY and logged.source_run_id == store.run_id
    assert logged.name == "insects" and logged.tags["test_metric"] == "0.91"
    assert [m.model_id for m in client.search_logged_models([logged.experiment_id])] == [logged.model_id]
    version = client.get_model_version("insects", registration.version)
    assert version.source == logged.artifact_location == client.get_model_version_download_uri("insects",
                                                                                              version.version)
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "insects", "version": version.version}]
    assert run_model_id(client, store.run_id) == logged.model_id
    assert not client.list_artifacts(store.run_id, "model")  # stored once: in the logged model


def test_a_version_registered_by_number_loads_with_mlflow_pyfunc(registered, users_store):
    _, registration = registered
    model = mlflow.pyfunc.load_model(registration.model_uri)
    assert model.metadata.metadata["input_modality"] == "image"
    assert model.predict(pd.DataFrame({"input": [png_base64()]}))["label"].iloc[0] in CLASSES


def test_registering_into_an_existing_registered_model_adds_a_version(tmp_path, checkpoint):
    store = open_store(tmp_path)
    store.client.create_registered_model("insects")
    assert register(store, checkpoint, SMALL_IMAGE_MODEL, CLASSES, "insects").version == "1"


def test_a_model_name_the_registry_takes_but_a_logged_model_refuses_registers(tmp_path, checkpoint):
    """MLflow refuses a dot in a logged model's name, not in a registered model's."""
    store = open_store(tmp_path)
    assert register(store, checkpoint, SMALL_IMAGE_MODEL, CLASSES, "Spam_Filter.v1").version == "1"
    [output] = store.client.get_run(store.run_id).outputs.model_outputs
    assert store.client.get_logged_model(output.model_id).name == "Spam_Filter-v1"


def test_a_failed_alias_deletes_the_new_version(tmp_path, checkpoint):
    store = open_store(tmp_path)
    with pytest.raises(MlflowException, match="reserved"):
        register(store, checkpoint, SMALL_IMAGE_MODEL, CLASSES, "insects", alias="latest")
    assert store.client.search_model_versions("name='insects'") == []


@pytest.fixture(scope="module")
def legacy(tmp_path_factory, checkpoint):
    """A version as transferflow registered it before checkpoints described themselves."""
    store = open_store(tmp_path_factory.mktemp("legacy"))
    return store, register_legacy(store, checkpoint, SMALL_IMAGE_MODEL, CLASSES, "old-insects")


def test_a_new_version_holds_one_self_describing_checkpoint_and_its_batch_size(registered, tmp_path):
    from mlflow.models import Model

    store, _ = registered
    artifacts = download_model_files(store.client, store.run_id, "artifacts", str(tmp_path))
    assert [p.name for p in artifacts.iterdir()] == ["checkpoint.pt"]
    stored = torch.load(artifacts / "checkpoint.pt", weights_only=True)
    assert stored["classes"] == CLASSES and stored["model"] == SMALL_IMAGE_MODEL.model_dump(mode="json")
    assert stored["optimizer"] is None and stored["rng"] is None  # no training state in a served model
    mlmodel = download_model_files(store.client, store.run_id, "MLmodel", str(tmp_path))
    assert Model.load(mlmodel).flavors["python_function"]["config"] == {"batch_size": 4}


def test_a_version_registered_by_older_code_still_loads_and_answers_the_same(legacy, champion):
    store, registration = legacy
    old = mlflow.pyfunc.load_model(store.client.get_model_version_download_uri("old-insects", registration.version))
    sent = pd.DataFrame({"input": [png_base64(), png_base64((10, 10, 240))]})
    pd.testing.assert_frame_equal(old.predict(sent), champion.predict(sent))  # same weights, new format


@pytest.mark.parametrize("which", ["legacy", "registered"])
def test_a_versions_checkpoint_and_artifacts_read_alike_for_old_and_new_versions(which, request, checkpoint):
    store, _ = request.getfixturevalue(which)
    weights = torch.load(checkpoint, weights_only=True)
    read = registered_checkpoint(store.client, store.run_id)
    assert (read.model, read.classes, read.operating_point) == (SMALL_IMAGE_MODEL, CLASSES, None)
    assert all(torch.equal(read.weights[k], v) for k, v in weights.items())
    with registered_artifacts(store.client, store.run_id) as (config, state_file):
        assert model_spec(config["model"]) == SMALL_IMAGE_MODEL and config["classes"] == CLASSES
        state = torch.load(state_file, weights_only=True)  # the bare state dict the warm start reads
        assert state.keys() == weights.keys() and all(torch.equal(state[k], v) for k, v in weights.items())
    classifier, restored = restore_registered(store.client, store.run_id)
    assert restored.classes == CLASSES and torch.equal(classifier.head.weight, weights["head.weight"])
