"""Drift machinery: the incoming batch, what the champion sees in it, and the stored reference.

The reference is a sample of examples the champion never trained on (validation, then test inputs)
embedded by its own backbone (as fine-tuned) at promotion, stored as artifacts of the version's run
under `drift_reference/`: `embeddings.npz` (compressed: a tf-idf or hybrid champion's rows are
20,000 wide and mostly zeros) and `reference.json` (class mix the champion predicts on them, input
statistics). Versions promoted before it hold `embeddings.npy`, still read.
A drift check embeds the incoming inputs with the same backbone, so both samples are what the
model sees, and compares them with the MMD permutation test (tasks/monitoring/mmd.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.config.data_kinds import reads_files
from tasks.core.errors import DataError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from tasks.models.backbones import Backbone
    from tasks.models.classifier import Classifier, OperatingPoint

REFERENCE_DIR = "drift_reference"
REFERENCE_ROWS = "embeddings.npz"  # in REFERENCE_DIR; versions promoted before it hold embeddings.npy
MIN_INCOMING = 10       # below this a two-sample test has almost no power: refuse rather than reassure
MAX_TESTED = 2000       # incoming inputs beyond this are subsampled (seeded) for the kernel matrix's sake


@dataclass(frozen=True)
class IncomingBatch:
    """New unlabeled inputs: image paths or texts, and where they came from."""

    source: Path
    modality: str                    # "image", "text" or "audio"
    inputs: tuple[str, ...]          # image file paths, or the texts
    relative: tuple[str, ...] = ()   # images: path inside the folder (kept when the batch is stored)
    text_column: str = "text"
    skipped: tuple[str, ...] = ()    # images: files in the folder that are not images (reported, not read)


@dataclass(frozen=True)
class ChampionRef:
    model_name: str
    version: str
    run_id: str  # the flow's parent run: the registered model and its drift reference live there


def locate_champion(workdir: Path, model_name: str, alias: str) -> ChampionRef:
    """The version holding the alias, read without creating an MLflow store where none exists."""
    import os

    from tasks.core.errors import TransferflowError
    from tasks.registry.champion import current_champion
    from tasks.registry.tracking import client_for

    store = os.environ.get("MLFLOW_TRACKING_URI") or str(workdir / "mlflow.db")
    missing = TransferflowError(f"model '{model_name}' has no version with alias '{alias}' yet (store: {store}). "
                                "Fix: run `transferflow run CONFIG` until a version passes the gate.")
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (workdir / "mlflow.db").is_file():
        raise missing
    version = current_champion(client_for(workdir), model_name, alias)
    if version is None:
        raise missing
    return ChampionRef(model_name, str(version.version), str(version.run_id))


@dataclass(frozen=True)
class Seen:
    """What the champion sees in a sample: embeddings, predicted class mix, input statistics."""

    embeddings: np.ndarray
    class_mix: dict[str, float]
    statistics: dict[str, list[float]]


def read_incoming(path: Path, modality: str, text_column: str) -> IncomingBatch:
    """A folder of images or sound files (recursive) or a CSV of texts, checked whole: an unreadable
    file, an empty folder or a missing column is an error naming it, never a silently smaller batch."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise DataError(f"{path}: incoming batch not found. Fix: pass --incoming "
                        f"{f'a folder of {modality} files' if reads_files(modality) else 'a CSV file of texts'}.")
    batch = _read_files(path, modality) if reads_files(modality) else _read_texts(path, text_column)
    if len(batch.inputs) < MIN_INCOMING:
        raise DataError(f"{path}: {len(batch.inputs)} input(s); the drift test needs at least {MIN_INCOMING}. "
                        "Fix: pass a larger batch.")
    return batch


def _read_files(folder: Path, modality: str = "image") -> IncomingBatch:
    from tasks.data.unlabeled import file_kind, read_input_folder

    noun = file_kind(modality)[1]
    if not folder.is_dir():
        raise DataError(f"{folder}: the model reads {noun}s. Fix: pass a folder of {noun}s as --incoming.")
    found = read_input_folder(folder, modality, f"pass a folder of {noun}s as --incoming.")
    return IncomingBatch(folder, modality, tuple(map(str, found.files)), found.relative(),
                         skipped=tuple(str(p.relative_to(folder)) for p in found.skipped))


def _read_texts(path: Path, text_column: str) -> IncomingBatch:
    from tasks.data.unlabeled import read_text_column

    if not path.is_file() or path.suffix.lower() != ".csv":
        raise DataError(f"{path}: the model reads texts. Fix: pass a CSV file with a '{text_column}' column "
                        "as --incoming.")
    texts = read_text_column(path, text_column, "pass --column NAME, or set data.text_column in the config.")
    return IncomingBatch(path, "text", tuple(texts), text_column=text_column)


def input_statistics(backbone: Backbone, modality: str, inputs: list[str]) -> dict[str, list[float]]:
    """Per input, what a person checks first: image size and brightness; text length and the
    share of its tokens the tokenizer does not know; a clip's duration, loudness, sample rate and
    share of silence (`INPUT_STATISTICS`, one entry per modality)."""
    return INPUT_STATISTICS[modality](backbone, inputs)


def _audio_statistics(paths: list[str]) -> dict[str, list[float]]:
    """Duration (s), RMS loudness (dBFS), the file's sample rate (Hz), and the share of 20 ms frames
    quieter than -60 dBFS."""
    import soundfile

    stats: dict[str, list[float]] = {"duration_s": [], "rms_dbfs": [], "sample_rate": [], "silent_share": []}
    for path in paths:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
        mono = samples.mean(axis=1)
        stats["duration_s"].append(len(mono) / rate)
        stats["rms_dbfs"].append(float(20 * np.log10(max(float(np.sqrt(np.mean(np.square(mono)))), 1e-10))))
        stats["sample_rate"].append(float(rate))
        frame = max(1, rate // 50)
        frames = mono[: len(mono) // frame * frame].reshape(-1, frame)
        quiet = np.sqrt(np.mean(np.square(frames), axis=1)) < 1e-3 if len(frames) else np.array([1.0])
        stats["silent_share"].append(float(np.mean(quiet)))
    return stats


def _image_statistics(paths: list[str]) -> dict[str, list[float]]:
    from PIL import Image, ImageOps

    stats: dict[str, list[float]] = {"width": [], "height": [], "brightness": []}
    for path in paths:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            stats["width"].append(float(upright.width))
            stats["height"].append(float(upright.height))
            grey = upright.convert("L")
            grey.thumbnail((64, 64))  # the mean brightness barely moves; the cost drops a lot
            stats["brightness"].append(float(np.asarray(grey, dtype=np.float32).mean() / 255.0))
    return stats


def _text_statistics(backbone: Backbone, texts: list[str]) -> dict[str, list[float]]:
    stats: dict[str, list[float]] = {"length_chars": [float(len(t)) for t in texts]}
    tokenizer = getattr(backbone, "tokenizer", None)
    if tokenizer is not None and tokenizer.unk_token_id is not None:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        stats["unknown_token_share"] = [sum(i == tokenizer.unk_token_id for i in row) / len(row) if row else 0.0
                                        for row in ids]
    return stats


# One entry per modality: what input_statistics reports for it (images and sounds by file, texts
# with the model's tokenizer).
INPUT_STATISTICS: dict[str, Callable[[Backbone, list[str]], dict[str, list[float]]]] = {
    "image": lambda _, paths: _image_statistics(paths),
    "audio": lambda _, paths: _audio_statistics(paths),
    "text": _text_statistics,
}


def what_the_model_sees(classifier: Classifier, classes: list[str], modality: str, inputs: list[str],
                        batch_size: int, embeddings: np.ndarray | None = None,
                        operating_point: OperatingPoint | None = None) -> Seen:
    """Embeddings (computed here unless given), the class mix the model answers (at its operating
    point, as its pyfunc does) and input statistics."""
    import torch

    from tasks.models.classifier import apply_operating_point
    from tasks.models.features import embed_inputs

    if embeddings is None:
        embeddings = embed_inputs(classifier.backbone, inputs, batch_size)
    with torch.inference_mode():
        probabilities = torch.softmax(classifier.head(torch.from_numpy(embeddings)), dim=1).numpy()
    predicted = apply_operating_point(probabilities, classes, operating_point)
    counts = np.bincount(predicted, minlength=len(classes))
    mix = {label: float(c) / max(1, len(predicted)) for label, c in zip(classes, counts, strict=True)}
    return Seen(embeddings, mix, input_statistics(classifier.backbone, modality, inputs))


def class_mix_shift(reference: dict[str, float], incoming: dict[str, float]) -> float:
    """Total variation distance between two class mixes: the share of predictions that would have
    to change class for the mixes to match (0 = same mix, 1 = disjoint)."""
    labels = set(reference) | set(incoming)
    return 0.5 * sum(abs(reference.get(k, 0.0) - incoming.get(k, 0.0)) for k in labels)


def log_reference(client: MlflowClient, run_id: str, seen: Seen, facts: dict[str, Any]) -> None:
    """The reference as artifacts of the version's run: embeddings.npz + reference.json."""
    with tempfile.TemporaryDirectory() as folder:
        np.savez_compressed(Path(folder) / REFERENCE_ROWS, embeddings=seen.embeddings.astype(np.float32))
        (Path(folder) / "reference.json").write_text(json.dumps(
            {**facts, "n": len(seen.embeddings), "class_mix": seen.class_mix, "statistics": seen.statistics}))
        client.log_artifacts(run_id, folder, REFERENCE_DIR)


def load_reference(client: MlflowClient, run_id: str, what: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The stored reference of a version's run; a clear error for versions registered without one."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(client.download_artifacts(run_id, REFERENCE_DIR, folder))
            embeddings = read_reference_rows(local)
            facts = json.loads((local / "reference.json").read_text())
        except (MlflowException, OSError):
            raise DataError(f"{what} has no drift reference (it was promoted before drift references were "
                            "stored). Fix: run `transferflow run CONFIG` so a newly promoted version stores "
                            "one.") from None
    return embeddings, facts


def read_reference_rows(folder: Path) -> np.ndarray:
    """The reference's rows from a downloaded `drift_reference/`, compressed or (older) plain."""
    if (folder / REFERENCE_ROWS).exists():
        with np.load(folder / REFERENCE_ROWS, allow_pickle=False) as saved:
            return saved["embeddings"]
    return np.load(folder / "embeddings.npy", allow_pickle=False)
