"""The registered model behind a real `mlflow models serve` on loopback: raw inputs over HTTP
(image and sound bytes as base64, texts), labels and probabilities back, and a path refused.

Each server binds 127.0.0.1 on a free port, reads its own temporary store, and is stopped by
its process group id when the test ends, passed or failed."""

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest

from tests.registered_models import (
    AUDIO_MODEL,
    SMALL_IMAGE_MODEL,
    TEXT_MODEL,
    open_store,
    png_base64,
    register,
    save_checkpoint,
)

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(store_uri: str, model_uri: str, folder: Path):
    """Start the server and yield its base URL; stop its whole process group afterwards."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "PATH": f"{BIN}:{os.environ['PATH']}"}
    log = (folder / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=folder, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (folder / "server.log").read_text()
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not answer /ping in 180 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def invoke(url: str, values: list[str]) -> httpx.Response:
    return httpx.post(f"{url}/invocations", timeout=60,
                      json={"dataframe_split": {"columns": ["input"], "data": [[v] for v in values]}})


def served_model(tmp_path_factory, spec, classes: list[str], model_name: str):
    """A small registered model in its own store, served; yields (URL, store)."""
    folder = tmp_path_factory.mktemp(f"served-{model_name}")
    store = open_store(folder)
    register(store, save_checkpoint(folder, spec, len(classes)), spec, classes, model_name)
    for url in serve(store.uri, f"models:/{model_name}@champion", folder):
        yield url, store


@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    yield from served_model(tmp_path_factory, SMALL_IMAGE_MODEL, ["ants", "bees"], "insects")


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    yield from served_model(tmp_path_factory, TEXT_MODEL, ["ham", "spam"], "sms")


@pytest.fixture(scope="module")
def audio_server(tmp_path_factory):
    yield from served_model(tmp_path_factory, AUDIO_MODEL, ["chirp", "tone"], "sounds")


def local_predictions(store, model_name: str, values: list[str]) -> pd.DataFrame:
    model = mlflow.pyfunc.load_model(store.client.get_model_version_download_uri(model_name, "1"))
    return model.predict(pd.DataFrame({"input": values}))


def test_the_served_image_model_answers_base64_bytes(image_server):
    url, store = image_server
    images = [png_base64((200, 30, 30)), png_base64((20, 20, 220))]
    response = invoke(url, images)
    assert response.status_code == 200, response.text
    served = pd.DataFrame(response.json()["predictions"])
    expected = local_predictions(store, "insects", images)
    assert served["label"].tolist() == expected["label"].tolist()
    assert served["p_bees"].to_numpy() == pytest.approx(expected["p_bees"].to_numpy(), abs=1e-6)
    assert (served[["p_ants", "p_bees"]].sum(axis=1) - 1).abs().max() < 1e-5


def test_the_served_image_model_refuses_a_path_on_its_disk(image_server, tmp_path):
    url, _ = image_server
    image = tmp_path / "on-the-server.png"
    image.write_bytes(base64.b64decode(png_base64()))
    for path in (str(image), "/etc/passwd"):
        response = invoke(url, [path])
        assert 400 <= response.status_code < 500
        assert "send base64-encoded image bytes, not a path" in response.text


def test_the_served_text_model_answers_raw_texts(text_server):
    url, store = text_server
    texts = ["WINNER!! Claim your free prize now", "See you at lunch tomorrow"]
    response = invoke(url, texts)
    assert response.status_code == 200, response.text
    served = pd.DataFrame(response.json()["predictions"])
    expected = local_predictions(store, "sms", texts)
    assert served["label"].tolist() == expected["label"].tolist()
    assert served["p_spam"].to_numpy() == pytest.approx(expected["p_spam"].to_numpy(), abs=1e-6)


def wav_base64(samples, rate: int, folder: Path, name: str) -> str:
    from tests.sounds import write

    return base64.b64encode(Path(write(folder / name, samples, rate)).read_bytes()).decode()


def test_the_served_audio_model_answers_base64_sound_bytes_and_refuses_a_path(audio_server, tmp_path):
    """A mono 16 kHz tone and a stereo 44.1 kHz chirp as wav bytes: the server decodes, mixes down
    and resamples them as the registered model does in process; a path on its disk is refused."""
    import numpy as np

    from tests.sounds import chirp, tone

    url, store = audio_server
    stereo = np.stack([chirp(300, 4000, rate=44_100), chirp(4000, 300, rate=44_100)], axis=1)
    sounds = [wav_base64(tone(440), 16_000, tmp_path, "tone.wav"),
              wav_base64(stereo, 44_100, tmp_path, "chirp.wav")]
    response = invoke(url, sounds)
    assert response.status_code == 200, response.text
    served = pd.DataFrame(response.json()["predictions"])
    expected = local_predictions(store, "sounds", sounds)
    assert served["label"].tolist() == expected["label"].tolist()
    assert served["p_tone"].to_numpy() == pytest.approx(expected["p_tone"].to_numpy(), abs=1e-6)
    assert (served[["p_chirp", "p_tone"]].sum(axis=1) - 1).abs().max() < 1e-5
    response = invoke(url, [str(tmp_path / "tone.wav")])
    assert 400 <= response.status_code < 500 and "not a path" in response.text
