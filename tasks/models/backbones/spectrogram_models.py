"""`family: spectrogram`: a torchvision or timm image model reading log-mel spectrograms.

The image model is loaded by its own family's adapter (its weights, layer groups, pooling and
frozen-prefix cut are that family's); this adapter replaces only the preprocessing: sound file ->
mono samples at the model's rate -> the middle `max_seconds` -> log-mel -> a 3-channel image with
the image model's normalization. The front end's settings are part of `preprocessing_id`, hence of
the embedding cache key, and travel with the registered model in its spec.

The mel filterbank is written here (HTK mel scale, triangular filters on the FFT bins) rather than
taken from torchaudio, whose releases trail the pinned torch, or librosa, which would bring numba
and llvmlite for one matrix; `tests/unit/models/test_spectrogram.py` checks it against tones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.config.families import FamilyOptions
from tasks.models.backbones.base import Backbone, ImageBackbone, adapter, adapter_for, load_backbone
from tasks.models.backbones.weights import WeightsSource

TOP_DB = 80.0  # decibels below the clip's peak that the spectrogram keeps


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters equally spaced on the HTK mel scale, 0 Hz to Nyquist."""
    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def hz(mels: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)

    edges = hz(np.linspace(0.0, mel(np.array(sample_rate / 2.0)), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32))


@dataclass(frozen=True)
class LogMel:
    """Mono samples at `sample_rate` -> a normalized [3, n_mels, frames] log-mel image. A plain
    frozen dataclass, so DataLoader worker processes can receive it."""

    sample_rate: int
    seconds: float
    n_mels: int
    hop: int                      # samples between frames
    window: int                   # samples per Hann window
    mean: tuple[float, ...]       # the image model's normalization, per channel
    std: tuple[float, ...]
    image_size: int | None = None  # resized to image_size x image_size; None keeps n_mels x frames

    @property
    def length(self) -> int:
        return round(self.seconds * self.sample_rate)

    @property
    def n_fft(self) -> int:
        return 1 << math.ceil(math.log2(self.window))

    @functools.cached_property
    def filters(self) -> torch.Tensor:
        return mel_filterbank(self.sample_rate, self.n_fft, self.n_mels)

    def scaled(self, samples: np.ndarray) -> torch.Tensor:
        """[n_mels, frames] in 0-1: decibels within TOP_DB of the clip's peak."""
        spectrum = torch.stft(torch.from_numpy(samples), self.n_fft, self.hop, self.window,
                              torch.hann_window(self.window), center=True, return_complex=True)
        power = self.filters @ spectrum.abs().square()
        decibels = 10.0 * torch.log10(power.clamp_min(1e-10))
        floor = decibels.max() - TOP_DB
        return (decibels.clamp_min(floor) - floor) / TOP_DB

    def image(self, scaled: torch.Tensor) -> torch.Tensor:
        if self.image_size is not None:
            scaled = nn.functional.interpolate(scaled[None, None], size=(self.image_size, self.image_size),
                                               mode="bilinear", align_corners=False)[0, 0]
        channels = [(scaled - mean) / std for mean, std in zip(self.mean, self.std, strict=True)]
        return torch.stack(channels)


def decode_clips(inputs: list[Any], front_end: LogMel, augment: str = "none") -> torch.Tensor:
    """Sound file paths or file-like objects -> a batch of log-mel images [n, 3, n_mels, frames].
    `augment` light: a random time shift (up to 10% of the clip, wrapping) and SpecAugment's masks
    (one band of up to n_mels/8 mels, one span of up to 10% of the frames); standard adds noise at
    20-40 dB SNR. Draws from torch's global RNG, so a seeded stage is reproducible."""
    from tasks.core.audio import decode, fixed_length
    from tasks.models.backbones.waveform import shifted_and_noisy

    images = []
    for source in inputs:
        samples = fixed_length(decode(source, front_end.sample_rate), front_end.length)
        if augment != "none":
            samples = shifted_and_noisy(samples, noisy=augment == "standard")
        scaled = front_end.scaled(samples)
        if augment != "none":
            scaled = _masked(scaled)
        images.append(front_end.image(scaled))
    return torch.stack(images)


def _masked(scaled: torch.Tensor) -> torch.Tensor:
    masked = scaled.clone()
    mels, frames = masked.shape
    for axis, size, limit in ((0, mels, max(1, mels // 8)), (1, frames, max(1, frames // 10))):
        width = int(torch.randint(0, limit + 1, ()).item())
        start = int(torch.randint(0, max(1, size - width + 1), ()).item())
        if axis == 0:
            masked[start:start + width] = 0.0
        else:
            masked[:, start:start + width] = 0.0
    return masked


@adapter("spectrogram")
class SpectrogramBackbone(Backbone):
    """The image model of `spec.image_options()`, fed log-mel images of the clips."""

    def __init__(self, spec: FamilyOptions) -> None:
        # Not Backbone.__init__: the image model's own adapter loads (and copies) the pretrained module.
        from tasks.config.families.spectrogram import SpectrogramOptions

        assert isinstance(spec, SpectrogramOptions)
        self.spec = spec
        image = load_backbone(spec.image_options())
        assert isinstance(image, ImageBackbone), f"{spec.image_family}:{spec.name} is not an image model"
        self.image = image
        self.module, self.weights, self.extras = image.module, image.weights, image.extras
        self.weights_sha256, self.started_from = image.weights_sha256, ""
        geometry = image.eval_geometry()
        self.front_end = LogMel(spec.sample_rate, spec.max_seconds, spec.n_mels,
                                hop=round(spec.sample_rate * spec.hop_ms / 1000),
                                window=round(spec.sample_rate * spec.window_ms / 1000),
                                mean=tuple(geometry.mean), std=tuple(geometry.std), image_size=spec.image_size)
        self.freeze()

    @classmethod
    def locate_weights(cls, spec: FamilyOptions) -> WeightsSource:
        from tasks.config.families.spectrogram import SpectrogramOptions

        assert isinstance(spec, SpectrogramOptions)
        image = spec.image_options()
        return adapter_for(image).locate_weights(image)

    @classmethod
    def build(cls, spec: FamilyOptions, weights: WeightsSource) -> tuple[nn.Module, dict[str, Any]]:
        raise NotImplementedError("the image model's own adapter builds it")

    @property
    def SPLITS_EXACTLY(self) -> bool:  # type: ignore[override]
        return self.image.SPLITS_EXACTLY

    @property
    def dim(self) -> int:
        return self.image.dim

    @property
    def preprocessing_id(self) -> str:
        front = self.front_end
        return (f"logmel;rate={front.sample_rate};seconds={front.seconds};mels={front.n_mels};hop={front.hop};"
                f"window={front.window};fft={front.n_fft};top_db={TOP_DB};size={front.image_size};mean={front.mean};"
                f"std={front.std}")

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        return decode_clips(inputs, self.front_end)

    def training_preprocess(self, level: str) -> Callable[[Any], Any]:
        if level not in ("none", "light", "standard"):
            raise ValueError(f"augmentation level '{level}': expected none, light or standard")
        return self.preprocess if level == "none" else functools.partial(decode_clips, front_end=self.front_end,
                                                                         augment=level)

    def is_random(self, level: str) -> bool:
        return level != "none"

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.image.embed(batch)

    def layer_groups(self) -> list[nn.Module]:
        return self.image.layer_groups()

    def split_at(self, n_trainable_groups: int) -> tuple[Callable[[Any], Any], Callable[[Any], torch.Tensor]]:
        return self.image.split_at(n_trainable_groups)
