"""The audio example's data, made on this machine (nothing is downloaded): a few command words
spoken by Debian's espeak-ng in many voices, speeds and pitches, each placed at a random offset in
a one-second clip with background noise mixed in at 10-30 dB SNR, written as 16 kHz wav files in
the audio-folder layout (<word>/<clip>.wav). Seeded: the same files every time.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tasks.core.errors import DataError

WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "go")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("", "+m1", "+m3", "+m5", "+f1", "+f2", "+f4", "+klatt")
CLIPS_PER_WORD = 120
SNR_DB = (10.0, 30.0)  # the speech's level over the noise's, drawn per clip
RATE = 16_000
SEED = 2026


def write_spoken_words(folder: Path, clips_per_word: int = CLIPS_PER_WORD, words: tuple[str, ...] = WORDS) -> int:
    """Write `clips_per_word` clips of each word under folder/<word>/; returns how many were written."""
    import soundfile

    from tasks.core.audio import decode

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise DataError("data.materialize_from: spoken_words needs Debian's espeak-ng to speak the words. "
                        "Fix: `make audio-tools` (or apt-get install espeak-ng).")
    generator = np.random.default_rng(SEED)
    written = 0
    with tempfile.TemporaryDirectory() as scratch:
        spoken = Path(scratch) / "word.wav"
        for word in words:
            (folder / word).mkdir(parents=True, exist_ok=True)
            for index in range(clips_per_word):
                voice = f"{VOICES[generator.integers(len(VOICES))]}{VARIANTS[generator.integers(len(VARIANTS))]}"
                speed, pitch = int(generator.integers(110, 210)), int(generator.integers(15, 85))
                subprocess.run([espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(spoken), word],
                               check=True, capture_output=True, timeout=30)
                clip = _in_noise(decode(spoken, RATE), generator)
                soundfile.write(folder / word / f"{word}-{index:03d}.wav", clip, RATE, subtype="PCM_16")
                written += 1
    return written


def _in_noise(speech: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """The word at a random offset in one second of coloured noise, at a random SNR in SNR_DB."""
    speech = speech[:RATE]
    clip = np.zeros(RATE, dtype=np.float32)
    offset = int(generator.integers(0, RATE - len(speech) + 1))
    clip[offset:offset + len(speech)] = speech * (0.5 / max(float(np.abs(speech).max()), 1e-6))
    from scipy.signal import lfilter

    smoothing = float(generator.uniform(0.0, 0.95))  # 0: white noise; near 1: a low rumble
    noise = lfilter([1.0], [1.0, -smoothing], generator.standard_normal(RATE))
    speech_rms = float(np.sqrt(np.mean(np.square(clip[offset:offset + len(speech)]))))
    noise *= speech_rms / (float(np.sqrt(np.mean(np.square(noise)))) * 10 ** (generator.uniform(*SNR_DB) / 20))
    return np.clip(clip + noise, -1.0, 1.0).astype(np.float32)
