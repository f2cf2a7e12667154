"""The whole flow on spoken words: real Prefect, MLflow (SQLite), GX and espeak-ng.

Four words spoken by espeak-ng in many voices over noise (tasks/data/spoken_words.py), with planted
bad inputs: a silent clip, a 50 ms clip, a text file named .wav, and one clip copied as FLAC under
another name. A run with a modest target that the baseline meets (promoted), a run with an
unreachable one that fine-tunes a stage on light-augmented clips (rejected), a tournament between
an image model on spectrograms and an audio encoder (a tiny random wav2vec2: no audio encoder's
weights ship in a wheel) under another model name, then a drift check of the champion on a batch
of pure tones. Claims are checked against an independent
recomputation from the raw files and the registry.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score

from flows.drift import drift_check
from flows.transfer_learning import transfer_learning
from tests.conftest import write_config
from tests.integration.evidence import (
    image_payload,
    manifest_splits,
    predict_registered,
    sound_labels,
    stage_decisions,
    version_file,
)
from tests.sounds import tone, write

pytestmark = pytest.mark.integration

WORDS = ("yes", "no", "stop", "go")
MODEL = "spoken-words-test"
CONFIG = """
task: Recognize which of four command words is spoken in a one-second clip.
metric: {{name: accuracy, target: {target}}}
data: {{kind: audio_folder, path: {data}}}
model: {{family: spectrogram, name: mobilenet_v2, max_seconds: 1.0, n_mels: 32, image_size: 64}}
train: {{batch_size: 16}}
finetune: {{max_stages: 1, epochs_per_stage: 1, augment: light}}
gate: {{min_fresh_test: 3}}
drift: {{permutations: 199}}
registry: {{model_name: {model}}}
workdir: {workdir}
"""


TOURNAMENT = """
task: Recognize which of four command words is spoken in a one-second clip.
metric: {{name: accuracy, target: 0.4}}
data: {{kind: audio_folder, path: {data}}}
model:
  candidates:
    - {{family: spectrogram, name: mobilenet_v2, max_seconds: 1.0, n_mels: 32, image_size: 64}}
    - {{family: hf_audio, name: "{encoder}", weights: none, max_seconds: 1.0}}
train: {{batch_size: 16}}
finetune: {{max_stages: 0}}
registry: {{model_name: spoken-words-tournament}}
workdir: {workdir}
"""


def planted_clips(data: Path) -> dict[str, Path]:
    """Bad inputs the odd-input check must quarantine, and a copy the near-copy keys must join."""
    planted = {
        "silent": Path(write(data / "yes" / "silent.wav", np.zeros(16_000, dtype=np.float32))),
        "short": Path(write(data / "no" / "short.wav", tone(300, seconds=0.05))),
        "not audio": data / "stop" / "notes.wav",
        "copy": data / "go" / "go-copy.flac",
    }
    planted["not audio"].write_text("these are notes, not a sound\n")
    samples, rate = soundfile.read(data / "go" / "go-000.wav", dtype="int16")
    soundfile.write(planted["copy"], samples, rate, subtype="PCM_16")
    return planted


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    from tasks.data.spoken_words import write_spoken_words

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: `make audio-tools` installs it (the audio tests speak their words with it)")
    folder = tmp_path_factory.mktemp("audio-flow")
    data = folder / "data"
    write_spoken_words(data, clips_per_word=20, words=WORDS)
    planted = planted_clips(data)
    for name in ("pass", "finetune"):
        (folder / name).mkdir()
    configs = {name: write_config(folder / name, CONFIG.format(data=data, workdir=folder / "work", model=MODEL,
                                                               target=target))
               for name, target in (("pass", 0.4), ("finetune", 0.999))}
    summaries = {name: transfer_learning(str(config)) for name, config in configs.items()}
    client = MlflowClient(f"sqlite:///{folder / 'work' / 'mlflow.db'}")
    return summaries["pass"], client, data, planted, configs["pass"], folder, summaries["finetune"]


@pytest.fixture(scope="module")
def tournament(audio_run):
    from tasks.config.families import example_model

    _, client, data, _, _, folder, _ = audio_run
    encoder = example_model("hf_audio", folder / "models")
    (folder / "tournament").mkdir()
    config = write_config(folder / "tournament", TOURNAMENT.format(data=data, workdir=folder / "work",
                                                                   encoder=encoder.name))
    return transfer_learning(str(config)), client


def id_of(path: Path) -> str:
    return next(i for i, (file, _) in sound_labels(path.parents[1]).items() if file == path)


def test_odd_clips_are_quarantined_with_their_reasons_and_never_split(audio_run):
    summary, _, data, planted, *_ = audio_run
    odd = "\n".join(summary.prepared.dataset.odd_inputs)
    assert len(summary.prepared.dataset.odd_inputs) == 3, odd
    for name, reason in [("silent", "digital silence"), ("short", "too short: 50 ms"),
                         ("not audio", "undecodable audio")]:
        line = next(line for line in summary.prepared.dataset.odd_inputs if planted[name].name in line)
        assert reason in line, line
    splits = manifest_splits(summary.split.manifest_path)
    split_ids = {i for ids in splits.values() for i in ids}
    spoken = {i for i, (path, _) in sound_labels(data).items() if path.stem[-3:].isdigit()}
    assert split_ids == spoken | {id_of(planted["copy"])}  # every spoken clip and the copy, no odd one


def test_a_copy_in_another_container_shares_its_originals_split(audio_run):
    summary, _, data, planted, *_ = audio_run
    splits = manifest_splits(summary.split.manifest_path)
    where = {i: name for name, ids in splits.items() for i in ids}
    assert where[id_of(data / "go" / "go-000.wav")] == where[id_of(planted["copy"])]


def test_the_registered_model_reproduces_its_test_metric_from_sound_bytes(audio_run):
    """The test clips' raw bytes (base64) through the registered pyfunc; accuracy recomputed with
    sklearn against the folder names equals the version's evidence tag."""
    summary, client, data, *_ = audio_run
    version = client.get_model_version(MODEL, summary.outcome.registration.version)
    test_ids = manifest_splits(summary.split.manifest_path)["test"]
    truth = sound_labels(data)
    files = [truth[i] for i in test_ids]
    predicted = predict_registered(client, MODEL, version.version, [image_payload(path) for path, _ in files])
    assert float(version.tags["test_metric"]) == pytest.approx(
        accuracy_score([word for _, word in files], predicted["label"]), abs=1e-6)
    assert summary.outcome.decision.passed
    requirements = version_file(client, MODEL, version.version, "requirements.txt",
                                str(data.parent / "requirements")).read_text()
    assert "soundfile==" in requirements and "soxr==" in requirements


def test_the_front_end_is_stored_with_the_model(audio_run):
    """Serving computes the same features: the registered checkpoint holds the spectrogram settings."""
    import torch

    summary, client, data, *_ = audio_run
    version = client.get_model_version(MODEL, summary.outcome.registration.version)
    stored = version_file(client, MODEL, version.version, "artifacts/checkpoint.pt", str(data.parent / "artifacts"))
    model = torch.load(stored, map_location="cpu", weights_only=True)["model"]
    assert (model["family"], model["n_mels"], model["image_size"], model["max_seconds"]) == (
        "spectrogram", 32, 64, 1.0)


def test_a_batch_of_tones_drifts_and_its_sound_statistics_explain_it(audio_run):
    _, _, _, _, config, folder, _ = audio_run
    tones = folder / "tones"
    for index in range(30):
        write(tones / f"tone-{index}.wav", tone(200 + 40 * index, seconds=2.0, rate=22_050, amplitude=0.05),
              rate=22_050)
    report = drift_check(str(config), str(tones))
    assert report.drift and report.p_value == pytest.approx(1 / 200), report.summary()
    statistics = report.as_json()["statistics"]
    assert statistics["duration_s"]["incoming_mean"] == pytest.approx(2.0)
    assert statistics["sample_rate"]["incoming_mean"] == pytest.approx(22_050)
    rms_dbfs = 20 * np.log10(0.05 / np.sqrt(2))  # a sine's RMS is its amplitude / sqrt(2)
    assert statistics["rms_dbfs"]["incoming_mean"] == pytest.approx(rms_dbfs, abs=0.05)
    assert statistics["duration_s"]["reference_mean"] == pytest.approx(1.0)  # every spoken clip lasts 1 s


def test_a_stage_fine_tunes_on_augmented_clips_and_logs_its_decision(audio_run):
    """The unreachable target sends the run past its baseline: one stage trains the last layer group
    on shifted, masked clips (no frozen-prefix cache: the inputs change every epoch)."""
    import torch

    *_, finetuned = audio_run
    names = [stage.name for stage in finetuned.stages]
    assert names[:2] == ["baseline", "finetune-1"], names
    decisions = stage_decisions(finetuned.decisions)
    assert [d["stage"] for d in decisions][:1] == ["finetune-1"] and decisions[0]["reason"]
    stage = finetuned.stages[1]
    stored = torch.load(stage.checkpoint, map_location="cpu", weights_only=True)
    assert stored["unfrozen_groups"] == 1 and stored["model"]["family"] == "spectrogram"
    assert "augment light" in stage.notes and "frozen prefix cached" not in stage.notes, stage.notes
    assert not finetuned.outcome.decision.passed


def test_a_tournament_ranks_a_spectrogram_model_and_an_audio_encoder_on_validation(tournament):
    """Both kinds of audio candidate are embedded and probed; the table's best on validation is the
    chosen base model, and the registered version is built on it."""
    import mlflow

    summary, client = tournament
    parent = client.get_run(summary.run_id)
    rows = {row["model"]: row for row in json.loads(mlflow.artifacts.load_text(
        f"{parent.info.artifact_uri}/tournament/candidates.json"))}
    assert {model.split(":")[0] for model in rows} == {"spectrogram", "hf_audio", "mfcc"}  # the classic one joins
    assert all(0.0 <= row["val_value"] <= 1.0 and row["throughput"] > 0 for row in rows.values())
    best = max(rows.values(), key=lambda r: (r["val_value"], r["throughput"]))
    assert best["status"] == "chosen" and parent.data.tags["base_model"] == best["model"]
    assert f"{summary.spec.model.family}:{summary.spec.model.name}" == best["model"]
    assert summary.stages[0].val_value == pytest.approx(best["val_value"])
