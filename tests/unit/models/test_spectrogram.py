"""The spectrogram front end (`tasks.models.backbones.spectrogram_models`) checked against tones and
independent numpy recomputations: the HTK mel filterbank has one triangle per band at increasing
frequencies and puts a pure tone in the band whose centre is nearest it; a log-mel image is
[3, n_mels, length / hop + 1], gain invariant, and padded clips leave their tail at the floor;
augmentation is deterministic when off and repeatable under one torch seed when on; and the
backbone's preprocessing id follows every front-end setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.config.families import model_spec
from tasks.models.backbones import load_backbone
from tasks.models.backbones.spectrogram_models import LogMel, decode_clips, mel_filterbank
from tests.sounds import chirp, noise_burst, tone, write

RATE = 16_000
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPECTROGRAM = {"family": "spectrogram", "name": "mobilenet_v2", "max_seconds": 1.0, "n_mels": 64}


def htk_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def htk_centres_hz(sample_rate: int, n_mels: int) -> np.ndarray:
    """The band centres: n_mels points equally spaced on the HTK mel scale strictly inside 0..Nyquist."""
    mels = np.linspace(0.0, htk_mel(sample_rate / 2), n_mels + 2)[1:-1]
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def front_end(seconds: float = 1.0, n_mels: int = 64, hop: int = 160, window: int = 400) -> LogMel:
    return LogMel(sample_rate=RATE, seconds=seconds, n_mels=n_mels, hop=hop, window=window,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD)


def busy_clip(seconds: float = 1.0) -> np.ndarray:
    """A sweep over a noise floor, with a quiet gap: energy at many frequencies and levels."""
    clip = chirp(200, 6000, seconds) + noise_burst(seconds, seed=1, amplitude=0.05)
    clip[len(clip) // 3: len(clip) // 2] *= 0.01
    return clip.astype(np.float32)


# --- the mel filterbank ------------------------------------------------------------------------

@pytest.mark.parametrize("sample_rate, n_fft, n_mels", [(16_000, 2048, 64), (22_050, 1024, 40), (8_000, 512, 32)])
def test_the_filterbank_has_one_triangle_per_band_peaking_near_its_htk_centre_in_increasing_order(
        sample_rate, n_fft, n_mels):
    filters = mel_filterbank(sample_rate, n_fft, n_mels).numpy()
    assert filters.shape == (n_mels, n_fft // 2 + 1)
    assert filters.min() >= 0.0 and filters.max() <= 1.0 and (filters.max(axis=1) > 0.5).all()
    peaks = filters.argmax(axis=1)
    assert (np.diff(peaks) > 0).all()  # each band peaks at a higher frequency than the one below
    bin_hz = sample_rate / n_fft
    assert np.abs(peaks * bin_hz - htk_centres_hz(sample_rate, n_mels)).max() <= bin_hz
    assert filters[:, 0].max() < 1e-6 and filters[:, -1].max() < 1e-6  # 0 Hz and Nyquist are the outer edges


def test_every_fft_bin_weighs_most_in_the_band_whose_htk_centre_is_nearest():
    """A tone on an FFT bin is that one bin of the spectrum: the filter with the largest weight
    there is the band it lands in."""
    filters = mel_filterbank(RATE, 2048, 64).numpy()
    centres = htk_centres_hz(RATE, 64)
    bins_hz = np.arange(2048 // 2 + 1) * RATE / 2048
    inside = (bins_hz > centres[0]) & (bins_hz < centres[-1])
    nearest = np.abs(bins_hz[inside, None] - centres[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(filters[:, inside].argmax(axis=0), nearest)


@pytest.mark.parametrize("hz", [150, 250, 700, 1000, 2500, 3000, 4000, 6000])
def test_a_pure_tones_energy_lands_in_the_band_whose_htk_centre_is_nearest_its_frequency(hz):
    centres_mel = htk_mel(htk_centres_hz(RATE, 64))
    distances = np.abs(centres_mel - htk_mel(hz))
    expected = int(distances.argmin())
    second = np.sort(distances)[1]
    assert distances[expected] < 0.5 * second  # clearly nearer one centre: mel- and Hz-nearest agree
    scaled = front_end().scaled(tone(hz, seconds=1.0))
    assert int(scaled.mean(dim=1).argmax()) == expected


# --- log-mel images ----------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, hop, window", [(1.0, 160, 400), (0.5, 256, 512), (1.0, 441, 1102)])
def test_a_log_mel_image_is_3_by_n_mels_by_length_over_hop_plus_one(tmp_path, seconds, hop, window):
    front = front_end(seconds=seconds, hop=hop, window=window)
    clips = [write(tmp_path / "short.wav", tone(440, seconds=0.3)), write(tmp_path / "long.flac", busy_clip(2.0))]
    images = decode_clips(clips, front)
    length = round(seconds * RATE)
    assert images.shape == (2, 3, 64, length // hop + 1)
    for image in images:  # one 0-1 picture (0: the floor 80 dB down, 1: the peak) in ImageNet's normalization
        scaled = [(image[c] * IMAGENET_STD[c] + IMAGENET_MEAN[c]) for c in range(3)]
        torch.testing.assert_close(scaled[0], scaled[1])
        torch.testing.assert_close(scaled[0], scaled[2])
        assert float(scaled[0].max()) == pytest.approx(1.0, abs=1e-5)
        assert float(scaled[0].min()) == pytest.approx(0.0, abs=1e-5)


def test_a_short_clip_is_padded_with_silence_after_it(tmp_path):
    scaled = decode_clips([write(tmp_path / "tone.wav", tone(1000, seconds=0.5))], front_end())[0, 0]
    scaled = scaled * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    frames = scaled.shape[1]  # 101: frame t is centred on sample 160 t; the tone ends at sample 8000
    assert (scaled[:, : 8000 // 160 - 2].max(dim=0).values > 0.9).all()  # the tone, at the start
    assert float(scaled[:, 8000 // 160 + 3:].abs().max()) == pytest.approx(0.0, abs=1e-5)  # zeros: the floor
    assert frames == 101


def test_a_clip_longer_than_max_seconds_is_read_by_its_middle(tmp_path):
    clip = np.concatenate([tone(300, seconds=1.0), tone(3000, seconds=1.0), tone(300, seconds=1.0)])
    images = decode_clips([write(tmp_path / "long.wav", clip, subtype="FLOAT"),
                           write(tmp_path / "middle.wav", tone(3000, seconds=1.0), subtype="FLOAT")], front_end())
    torch.testing.assert_close(images[0], images[1], atol=1e-4, rtol=0)


def test_the_front_end_is_gain_invariant(tmp_path):
    """Decibels are taken from the clip's own peak, so a quieter copy gives the same image: this is
    why the augmentation has no gain change."""
    clip = busy_clip()
    loud = write(tmp_path / "loud.wav", clip, subtype="FLOAT")
    quiet = write(tmp_path / "quiet.wav", 0.25 * clip, subtype="FLOAT")
    from tasks.core.audio import decode

    assert np.allclose(decode(quiet, RATE), 0.25 * decode(loud, RATE))  # really 12 dB apart
    images = decode_clips([loud, quiet], front_end())
    assert float((images[0] - images[1]).abs().max()) < 1e-4


def test_augmentation_none_is_deterministic_and_light_and_standard_repeat_under_one_seed_only(tmp_path):
    clips = [write(tmp_path / "a.wav", busy_clip()), write(tmp_path / "b.wav", tone(700, seconds=0.8))]
    front = front_end()

    def under_seed(seed: int, level: str) -> torch.Tensor:
        torch.manual_seed(seed)
        return decode_clips(clips, front, augment=level)

    plain = under_seed(0, "none")
    assert torch.equal(plain, under_seed(1, "none"))
    for level in ("light", "standard"):
        first = under_seed(0, level)
        assert torch.equal(first, under_seed(0, level)), level  # a seeded stage is reproducible
        assert not torch.equal(first, under_seed(1, level)), level
        assert not torch.equal(first, plain), level
        assert first.shape == plain.shape
    assert not torch.equal(under_seed(0, "light"), under_seed(0, "standard"))  # standard adds noise


# --- the backbone ------------------------------------------------------------------------------

def test_the_backbones_training_preprocessing_follows_the_augmentation_level(tmp_path):
    backbone = load_backbone(model_spec(SPECTROGRAM))
    clips = [write(tmp_path / "a.wav", busy_clip())]
    assert backbone.training_preprocess("none") == backbone.preprocess and not backbone.is_random("none")
    torch.manual_seed(0)
    light = backbone.training_preprocess("light")(clips)
    torch.manual_seed(0)
    assert torch.equal(light, backbone.training_preprocess("light")(clips)) and backbone.is_random("light")
    assert not torch.equal(light, backbone.preprocess(clips))
    with pytest.raises(ValueError, match="augmentation level 'heavy'"):
        backbone.training_preprocess("heavy")


@pytest.mark.parametrize("setting, value", [("n_mels", 96), ("hop_ms", 20.0), ("window_ms", 40.0),
                                            ("max_seconds", 1.5), ("sample_rate", 22_050)])
def test_the_preprocessing_id_changes_with_each_front_end_setting(setting, value):
    base = load_backbone(model_spec(SPECTROGRAM)).preprocessing_id
    assert load_backbone(model_spec(SPECTROGRAM)).preprocessing_id == base
    assert load_backbone(model_spec({**SPECTROGRAM, setting: value})).preprocessing_id != base


def test_without_augmentation_the_frozen_prefix_is_cached_and_cut_exactly(tmp_path):
    """`augment: none` keeps the frozen-prefix cache on (the inputs repeat every epoch), and the
    image model's prefix then suffix over a spectrogram equals the whole embedding; light turns the
    cache off."""
    from tasks.training.prefix_cache import can_cache_prefix

    backbone = load_backbone(model_spec({"family": "spectrogram", "name": "mobilenet_v2", "max_seconds": 0.5,
                                         "n_mels": 32, "image_size": 64}))
    assert can_cache_prefix(backbone, "none", 1) and not can_cache_prefix(backbone, "light", 1)
    clips = [write(tmp_path / "a.wav", chirp(300, 3000, seconds=0.5)), write(tmp_path / "b.wav", tone(880, 0.5))]
    batch = backbone.preprocess(clips)
    prefix, suffix = backbone.split_at(2)
    with torch.inference_mode():
        assert torch.allclose(suffix(prefix(batch)), backbone.embed(batch), atol=1e-5)
