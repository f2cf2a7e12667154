"""Waveform augmentation shared by the audio families (`spectrogram`, `hf_audio`): in the models
layer, since it draws from torch's RNG (tasks.core stays free of torch)."""

from __future__ import annotations

import numpy as np
import torch


def shifted_and_noisy(samples: np.ndarray, noisy: bool) -> np.ndarray:
    """Waveform augmentation shared by every audio family: a random time shift of up to 10% of the
    clip (wrapping), and with `noisy` white noise at 20-40 dB SNR. Draws from torch's global RNG, so
    a seeded stage is reproducible."""
    limit = max(1, len(samples) // 10)
    shifted = np.roll(samples, int(torch.randint(-limit, limit + 1, ()).item()))
    if not noisy:
        return shifted
    signal = float(np.sqrt(np.mean(np.square(shifted)))) or 1e-4
    snr_db = 20.0 + 20.0 * float(torch.rand(()).item())
    noise = torch.randn(len(shifted)).numpy() * signal / (10.0 ** (snr_db / 20.0))
    return (shifted + noise).astype(np.float32)
