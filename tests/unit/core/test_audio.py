"""Sound files as the models read them (`tasks.core.audio`), checked against numpy recomputations:
decoding mixes channels to their mean and resamples without moving a tone or changing a clip's
length; wav, flac and ogg of one 16-bit content decode alike; clips are cut to their middle; odd
clips are named with their reason on both sides of each threshold; content keys are equal for the
same 16-bit samples in any lossless container or sample format and differ for any other samples."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tasks.core.audio import content_key, decode, fixed_length, odd_clip_reason
from tests.sounds import chirp, noise_burst, pcm16, silence, tone, write

RATE = 16_000


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def peak_hz(samples: np.ndarray, rate: int) -> float:
    """The frequency of the largest FFT bin (numpy's own, not the code's)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def loud_clip(seconds: float = 0.5) -> np.ndarray:
    """A sweep and a noise burst at up to 95% of full scale: many samples beyond half scale, where
    16-bit rounding is easiest to get wrong."""
    mixed = 1.6 * chirp(150, 5000, seconds) + noise_burst(seconds, seed=3, amplitude=0.1)
    return (0.95 * mixed / np.abs(mixed).max()).astype(np.float32)


# --- decode ------------------------------------------------------------------------------------

def test_stereo_is_mixed_to_the_mean_of_its_channels(tmp_path):
    left, right = tone(440, amplitude=0.6), chirp(300, 4000)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    mono = decode(path, RATE)
    expected = (left.astype(np.float64) + right.astype(np.float64)) / 2
    assert mono.dtype == np.float32 and mono.shape == (len(left),)
    np.testing.assert_allclose(mono, expected, rtol=0, atol=1e-7)


def test_a_44_1_khz_tone_resampled_to_16_khz_keeps_its_frequency_loudness_and_duration(tmp_path):
    path = write(tmp_path / "tone.wav", tone(1234, seconds=1.0, rate=44_100, amplitude=0.5), rate=44_100,
                 subtype="FLOAT")
    resampled = decode(path, RATE)
    assert len(resampled) == RATE  # 1.0 s at 16 kHz
    assert peak_hz(resampled, RATE) == 1234.0  # 1 Hz bins: the tone has not moved
    assert rms(resampled[800:-800]) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)  # edges aside: the filter's ramp


def test_a_tone_above_the_new_nyquist_is_filtered_out_not_folded_back(tmp_path):
    """A 10 kHz tone at 44.1 kHz has no place at 16 kHz: naive decimation would fold it to 6 kHz."""
    path = write(tmp_path / "high.wav", tone(10_000, seconds=1.0, rate=44_100), rate=44_100, subtype="FLOAT")
    assert rms(decode(path, RATE)[800:-800]) < 1e-3 * rms(tone(10_000, seconds=1.0, rate=44_100))


def test_the_same_16_bit_samples_decode_equal_from_wav_and_flac_and_nearly_from_ogg(tmp_path):
    samples = pcm16(chirp(200, 3000, seconds=1.0))
    wav, flac, ogg = (decode(write(tmp_path / f"clip.{suffix}", samples), RATE) for suffix in ("wav", "flac", "ogg"))
    exact = samples.astype(np.float64) / 32768  # a 16-bit sample s decodes to s / 32768
    np.testing.assert_array_equal(wav, exact)
    np.testing.assert_array_equal(flac, exact)
    assert len(ogg) == len(exact)  # lossy: the samples are close, not equal
    assert rms(ogg - exact) < 0.1 * rms(exact)
    assert np.corrcoef(ogg, exact)[0, 1] > 0.99


def test_fixed_length_takes_the_middle_and_zero_pads_at_the_end():
    ten = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(fixed_length(ten, 4), [4, 5, 6, 7])     # 3 cut before, 3 after
    np.testing.assert_array_equal(fixed_length(ten, 7), [2, 3, 4, 5, 6, 7, 8])  # odd: 1 before, 2 after
    np.testing.assert_array_equal(fixed_length(ten, 10), ten)
    np.testing.assert_array_equal(fixed_length(ten[:3], 6), [1, 2, 3, 0, 0, 0])
    np.testing.assert_array_equal(fixed_length(ten[:0], 2), [0, 0])


# --- odd clips ---------------------------------------------------------------------------------

def not_audio(path: Path) -> str:
    path.write_text("This is a shopping list, not a sound file.\n" * 20)
    return str(path)


def heavily_clipped(path: Path) -> str:
    return write(path, np.clip(tone(440, amplitude=3.0), -1.0, 1.0), subtype="FLOAT")


ODD = {
    "a text file named .wav": (not_audio, "undecodable audio ("),
    "a wav header with no samples": (lambda p: write(p, silence(0.0)), "zero-length audio (no samples)"),
    "a 50 ms clip": (lambda p: write(p, tone(440, seconds=0.05)), "too short: 50 ms (under 100 ms)"),
    "digital silence": (lambda p: write(p, silence(1.0)), "digital silence (RMS 0.0e+00, under 0.0001)"),
    "a tone clipped at full scale": (heavily_clipped, "heavily clipped: "),
    "a normal tone": (lambda p: write(p, tone(440)), None),
}


@pytest.mark.parametrize("make, expected", ODD.values(), ids=ODD.keys())
def test_each_odd_clip_is_named_with_its_reason_and_a_normal_one_is_not(tmp_path, make, expected):
    reason = odd_clip_reason(make(tmp_path / "clip.wav"))
    assert reason is None if expected is None else reason is not None and reason.startswith(expected), reason


def test_the_clipped_share_in_the_reason_is_the_share_of_full_scale_samples(tmp_path):
    samples = np.clip(tone(440, amplitude=3.0), -1.0, 1.0)
    share = float(np.mean(np.abs(samples) >= 0.999))  # a 3x sine sits at full scale most of the time
    assert share > 0.5
    assert odd_clip_reason(heavily_clipped(tmp_path / "clip.wav")) == \
        f"heavily clipped: {share:.1%} of samples at full scale (over 1%)"


@pytest.mark.parametrize("samples, odd", [(RATE // 10, False), (RATE // 10 - 1, True)])
def test_a_clip_of_exactly_100_ms_passes_and_one_sample_less_is_too_short(tmp_path, samples, odd):
    reason = odd_clip_reason(write(tmp_path / "clip.wav", tone(440, seconds=1.0)[:samples]))
    assert (reason is not None and reason.startswith("too short")) if odd else reason is None


@pytest.mark.parametrize("level, odd", [(1.02e-4, False), (0.98e-4, True)])  # -80 dBFS, +-2%
def test_a_quiet_clip_just_above_the_silence_level_passes_and_one_just_below_is_silence(tmp_path, level, odd):
    samples = tone(500, amplitude=level * np.sqrt(2))  # 250 whole periods: RMS = amplitude / sqrt(2)
    assert rms(samples) == pytest.approx(level, rel=1e-3)
    reason = odd_clip_reason(write(tmp_path / "quiet.wav", samples, subtype="FLOAT"))
    assert (reason is not None and reason.startswith("digital silence")) if odd else reason is None


@pytest.mark.parametrize("full_scale, odd", [(160, False), (161, True)])
def test_one_percent_of_samples_at_full_scale_passes_and_one_more_is_heavy_clipping(tmp_path, full_scale, odd):
    samples = tone(440, seconds=1.0)  # 16,000 samples at most 0.5
    samples[np.linspace(0, len(samples) - 1, full_scale).astype(int)] = [1.0, -1.0] * (full_scale // 2) + \
        [1.0] * (full_scale % 2)
    assert np.sum(np.abs(samples) >= 1.0) == full_scale  # 160 = 1.0% exactly, 161 just over
    reason = odd_clip_reason(write(tmp_path / "clip.wav", samples, subtype="FLOAT"))
    assert reason == ("heavily clipped: 1.0% of samples at full scale (over 1%)" if odd else None)


def test_samples_just_under_the_clip_level_are_not_clipped(tmp_path):
    samples = tone(440, seconds=1.0)
    samples[:1000] = 0.9989  # 6% of the clip, loud but short of full scale
    assert odd_clip_reason(write(tmp_path / "loud.wav", samples, subtype="FLOAT")) is None
    samples[:1000] = 0.999
    assert odd_clip_reason(write(tmp_path / "clipped.wav", samples, subtype="FLOAT")).startswith("heavily clipped")


def test_16_bit_full_scale_counts_as_clipped(tmp_path):
    """A 16-bit file's largest sample, 32767, decodes to 0.99997: still full scale."""
    samples = np.clip(tone(440, amplitude=3.0), -1.0, 1.0)
    assert odd_clip_reason(write(tmp_path / "clip.wav", pcm16(samples))).startswith("heavily clipped")


# --- content keys ------------------------------------------------------------------------------

def test_a_16_khz_mono_16_bit_files_key_is_the_hash_of_its_own_samples(tmp_path):
    samples = pcm16(loud_clip())
    path = write(tmp_path / "clip.wav", samples)
    assert content_key(path, RATE) == hashlib.sha256(samples.astype("<i2").tobytes()).hexdigest()


def test_the_same_16_bit_sound_in_any_lossless_container_or_sample_format_has_one_key(tmp_path):
    samples = pcm16(loud_clip())
    as_float = (samples / 32768).astype(np.float32)
    copies = {
        "16-bit wav": write(tmp_path / "a.wav", samples),
        "16-bit flac": write(tmp_path / "b.flac", samples),
        "24-bit flac": write(tmp_path / "c.flac", as_float, subtype="PCM_24"),
        "float wav": write(tmp_path / "d.wav", as_float, subtype="FLOAT"),
        "double wav": write(tmp_path / "e.wav", as_float.astype(np.float64), subtype="DOUBLE"),
        "float wav, stereo of two equal channels": write(tmp_path / "f.wav", np.stack([as_float, as_float], axis=1),
                                                         subtype="FLOAT"),
    }
    keys = {name: content_key(path, RATE) for name, path in copies.items()}
    assert len(set(keys.values())) == 1, keys


def test_a_float_copy_within_a_fraction_of_a_16_bit_step_keeps_the_key(tmp_path):
    """Quantising to 16 bits is there to absorb what float processing leaves below a 16-bit step."""
    samples = pcm16(loud_clip())
    assert np.sum(np.abs(samples) >= 16_384) > 1000  # the loud half of the scale is well represented
    wobble = np.random.default_rng(0).uniform(-0.3, 0.3, len(samples))  # in 16-bit steps
    nearly = ((samples + wobble) / 32768).astype(np.float32)
    assert content_key(write(tmp_path / "float.wav", nearly, subtype="FLOAT"), RATE) == \
        content_key(write(tmp_path / "pcm.wav", samples), RATE)


def test_another_clip_or_one_sample_changed_by_a_16_bit_step_or_more_gets_another_key(tmp_path):
    samples = pcm16(loud_clip())
    samples[1000] = 16_385  # 16385 and 16384 are one step apart just above half scale
    original = content_key(write(tmp_path / "original.wav", samples), RATE)
    keys = {original}
    for step in (1, 3, 100):
        changed = samples.copy()
        changed[1000] -= step
        keys.add(content_key(write(tmp_path / f"changed-{step}.wav", changed), RATE))
    keys.add(content_key(write(tmp_path / "other.wav", pcm16(tone(440))), RATE))
    assert len(keys) == 5


def test_sounds_at_another_rate_are_keyed_after_resampling_to_the_key_rate(tmp_path):
    """The same 44.1 kHz content in two containers shares a key, and so does its 16 kHz version
    (resampled here with soxr directly), which the 44.1 kHz original is not sample for sample."""
    import soxr

    samples = pcm16(0.9 * tone(700, seconds=0.5, rate=44_100))
    wav, flac = write(tmp_path / "a.wav", samples, rate=44_100), write(tmp_path / "a.flac", samples, rate=44_100)
    at_16k = soxr.resample(samples / 32768, 44_100, RATE, quality="HQ").astype(np.float32)
    assert len(at_16k) == RATE // 2
    resampled = write(tmp_path / "b.wav", at_16k, subtype="FLOAT")
    assert content_key(wav, RATE) == content_key(flac, RATE) == content_key(resampled, RATE)
    assert content_key(wav, RATE) != content_key(write(tmp_path / "c.wav", at_16k, rate=44_100, subtype="FLOAT"),
                                                 RATE)  # the same numbers read as 44.1 kHz are another sound
