"""Sound files as the models read them: decoded with libsndfile (soundfile), mixed down to mono and
resampled with soxr to the model's rate; and the per-clip facts the odd-input check, the near-copy
keys and the drift statistics use.

torchaudio is not used: its releases trail the pinned torch (2.11 against 2.14 here), and it is in
maintenance. soundfile's wheel bundles libsndfile (wav, flac, ogg/vorbis, mp3).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SECONDS = 0.1        # a shorter clip holds no word or event to learn from
SILENCE_RMS = 1e-4       # -80 dBFS: digital silence, not a quiet recording
CLIP_LEVEL = 0.999       # a sample at or above this magnitude is clipped (full scale is 1.0)
MAX_CLIPPED_SHARE = 0.01  # more clipped samples than this is heavy clipping


def decode(source: Any, sample_rate: int) -> np.ndarray:
    """A path or file-like object -> float32 mono samples at `sample_rate` (soxr, high quality)."""
    import soundfile
    import soxr

    samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != sample_rate and len(mono):
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def fixed_length(samples: np.ndarray, length: int) -> np.ndarray:
    """The middle `length` samples of a longer clip; a shorter one zero-padded at its end."""
    if len(samples) >= length:
        start = (len(samples) - length) // 2
        return samples[start:start + length]
    return np.pad(samples, (0, length - len(samples)))


@dataclass(frozen=True)
class ClipFacts:
    """What one clip is, as decoded at its own rate (before any resampling)."""

    seconds: float
    sample_rate: int
    channels: int
    rms: float
    clipped_share: float


def clip_facts(source: Any) -> ClipFacts:
    """Duration, rate, channels, loudness (RMS over all channels) and the share of clipped samples."""
    import soundfile

    samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    magnitude = np.abs(samples)
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    clipped = float((magnitude >= CLIP_LEVEL).mean()) if samples.size else 0.0
    return ClipFacts(len(samples) / rate, int(rate), int(samples.shape[1]), rms, clipped)


def odd_clip_reason(source: Any) -> str | None:
    """Why a sound file is no fit example (unreadable, empty, too short, silent, heavily clipped), or None."""
    try:
        facts = clip_facts(source)
    except Exception as error:  # libsndfile's errors vary by format; any means undecodable
        return f"undecodable audio ({type(error).__name__}: {str(error)[:120]})"
    if facts.seconds == 0:
        return "zero-length audio (no samples)"
    if facts.seconds < MIN_SECONDS:
        shown = math.floor(round(facts.seconds * 1000, 6))  # floored: a clip just under the floor never reads as it
        return f"too short: {shown} ms (under {MIN_SECONDS * 1000:.0f} ms)"
    if facts.rms < SILENCE_RMS:
        return f"digital silence (RMS {facts.rms:.1e}, under {SILENCE_RMS:g})"
    if facts.clipped_share > MAX_CLIPPED_SHARE:
        return (f"heavily clipped: {facts.clipped_share:.1%} of samples at full scale "
                f"(over {MAX_CLIPPED_SHARE:.0%})")
    return None


def content_key(source: Any, sample_rate: int) -> str:
    """A hash of the decoded samples, mixed to mono, resampled to `sample_rate` and quantised to 16
    bits: the same sound in another lossless container (wav, flac) or sample format (16-bit, float)
    gets the same key, so its copies form one near-copy group. Chosen over an acoustic fingerprint
    (chromaprint: a C library and a binary to install) because the leakage check's embedding
    similarity already catches the looser copies, lossy re-encodings and resamplings included.
    The 16-bit grid is the decoder's own (a 16-bit sample s decodes to s / 32768): a 16-bit file
    keys as its very samples, and a float copy is rounded to the nearest of them."""
    quantised = np.clip(np.round(decode(source, sample_rate) * 32768.0), -32768, 32767).astype("<i2")
    return hashlib.sha256(quantised.tobytes()).hexdigest()
