"""Synthetic sound files for unit tests, made on the machine (nothing downloaded): tones, chirps,
noise bursts and silence, written with soundfile at any rate, channel count and format
(`pcm16`: exact 16-bit samples, the same numbers in every lossless container)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SOUND_FORMATS = ".wav, .flac, .ogg, .mp3"  # as the sound kinds' messages list them


def tone(hz: float, seconds: float = 0.5, rate: int = 16_000, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def chirp(start_hz: float, end_hz: float, seconds: float = 0.5, rate: int = 16_000) -> np.ndarray:
    """A linear sweep from start_hz to end_hz."""
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * (start_hz * t + (end_hz - start_hz) * t ** 2 / (2 * seconds))
    return (0.5 * np.sin(phase)).astype(np.float32)


def noise_burst(seconds: float = 0.5, rate: int = 16_000, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(round(seconds * rate))).clip(-1, 1).astype(
        np.float32)


def write(path: Path, samples: np.ndarray, rate: int = 16_000, subtype: str | None = None) -> str:
    """`samples` ([n] mono or [n, channels]) to `path`; the format follows the suffix."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype=subtype)
    return str(path)


def silence(seconds: float = 0.5, rate: int = 16_000) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def pcm16(samples: np.ndarray) -> np.ndarray:
    """`samples` in [-1, 1] as 16-bit integers on the decoder's scale (int / 32768 decodes back),
    clipped at full scale: written as int16, wav and flac hold exactly these numbers."""
    return np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768), -32768, 32767).astype(np.int16)


def clip(seed: int, seconds: float = 0.4) -> np.ndarray:
    """A distinct, well-behaved clip per seed: a tone over a little noise."""
    return (tone(200 + 37 * seed, seconds, amplitude=0.4) + noise_burst(seconds, seed=seed, amplitude=0.05)).clip(
        -1, 1).astype(np.float32)
