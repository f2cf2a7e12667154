"""The drift test's statistics, checked against independent recomputations: MMD^2 and its
permutation p-value by brute force, false alarms on Gaussian samples, the class-mix distance. Plus
the incoming batch's bad-input messages. (On real embeddings: tests/model/.)"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.spatial.distance import cdist
from scipy.stats import binom

from tasks.core.errors import DataError
from tasks.monitoring.drift import class_mix_shift, read_incoming
from tasks.monitoring.drift_report import statistic_shifts
from tasks.monitoring.mmd import mmd_permutation_test

ALPHA = 0.05
SEEDS = 60


def brute_force_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased MMD^2 by the textbook double sums, with loops."""
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * sigma ** 2)))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


def median_bandwidth(pooled: np.ndarray) -> float:
    """The lower median of the pooled pairwise distances (torch's median is the lower one)."""
    distances = cdist(pooled, pooled)
    return statistics.median_low(distances[np.triu_indices(len(pooled), 1)].tolist())


def test_mmd_and_bandwidth_match_a_brute_force_recomputation():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 3)), rng.normal(0.7, 1.3, size=(5, 3))
    result = mmd_permutation_test(x, y, permutations=19, seed=0)
    sigma = median_bandwidth(np.concatenate([x, y]))
    assert result.bandwidth == pytest.approx(sigma, rel=1e-9)
    assert result.score == pytest.approx(brute_force_mmd2(x, y, sigma), rel=1e-9)


def test_permutation_p_value_matches_the_exact_one_by_enumeration():
    """With 3 + 3 vectors there are 20 labellings: the exact permutation p-value is the share whose
    brute-force MMD^2 reaches the observed one; many random permutations must agree with it."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 2)), rng.normal(1.0, 1.0, size=(3, 2))
    pooled = np.concatenate([x, y])
    sigma = median_bandwidth(pooled)
    observed = brute_force_mmd2(x, y, sigma)
    splits = [brute_force_mmd2(pooled[list(s)], pooled[[i for i in range(6) if i not in s]], sigma)
              for s in itertools.combinations(range(6), 3)]
    exact = np.mean(np.array(splits) >= observed - 1e-12)
    result = mmd_permutation_test(x, y, permutations=4000, seed=2)
    assert 0 < exact < 1
    assert result.p_value == pytest.approx(exact, abs=0.025)


def test_false_alarms_on_gaussian_samples_and_a_mean_shift_is_found():
    upper = binom.ppf(0.99, 100, ALPHA)
    false_alarms = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        p = mmd_permutation_test(rng.normal(size=(30, 5)), rng.normal(size=(25, 5)), 99, seed).p_value
        false_alarms += p < ALPHA
    assert false_alarms <= upper
    rng = np.random.default_rng(0)
    shifted = mmd_permutation_test(rng.normal(size=(60, 5)), rng.normal(0.6, 1.0, size=(60, 5)), 199, 0)
    assert shifted.p_value < ALPHA and shifted.p_value == pytest.approx(1 / 200)


def test_a_reference_larger_than_one_permutation_chunk_and_unequal_sizes():
    rng = np.random.default_rng(5)
    result = mmd_permutation_test(rng.normal(size=(40, 4)), rng.normal(size=(7, 4)), permutations=250, seed=1)
    assert len(result.null_scores) == 250 and 1 / 251 <= result.p_value <= 1


def test_class_mix_shift_is_the_total_variation_distance():
    assert class_mix_shift({"ham": 0.8, "spam": 0.2}, {"ham": 0.5, "spam": 0.5}) == pytest.approx(0.3)
    assert class_mix_shift({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    shifts = statistic_shifts({"length_chars": [10.0, 20.0, 30.0]}, {"length_chars": [40.0, 40.0]})
    assert shifts["length_chars"].shift_in_sd == pytest.approx((40 - 20) / np.std([10, 20, 30]))


def test_empty_folder_unreadable_image_and_missing_column_name_the_fix(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: no image files in this folder.*Fix: pass a folder of image files"):
        read_incoming(empty, "image", "text")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(images / f"{i}.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError, match=r"broken.jpg: not an image file PIL can read.*Fix: remove or replace"):
        read_incoming(images, "image", "text")
    (images / "broken.jpg").unlink()
    (images / "notes.txt").write_text("not an image")
    batch = read_incoming(images, "image", "text")
    assert len(batch.inputs) == 12 and batch.relative[0] == "0.png" and batch.skipped == ("notes.txt",)
    texts = tmp_path / "texts.csv"
    texts.write_text("message\n" + "hello\n" * 12)
    with pytest.raises(DataError, match=r"no column 'text' \(columns: \['message'\]\).*Fix: pass --column NAME"):
        read_incoming(texts, "text", "text")
    assert len(read_incoming(texts, "text", "message").inputs) == 12
    texts.write_text("text\nhi\n")
    with pytest.raises(DataError, match=r"1 input\(s\); the drift test needs at least 10"):
        read_incoming(texts, "text", "text")


def test_a_drifted_image_batch_is_copied_with_its_folders_and_a_manifest(tmp_path):
    """The copies keep their paths inside the batch folder, byte for byte; the source is untouched."""
    from tasks.config.loading import load_spec
    from tasks.monitoring.drift_report import DriftReport
    from tasks.steps.monitor import keep_incoming_batch
    from tests.conftest import write_config

    (tmp_path / "data" / "a").mkdir(parents=True)
    config = write_config(tmp_path, f"""
task: Tell a from b.
metric: {{name: accuracy, target: 0.5}}
data: {{kind: image_folder, path: {tmp_path / "data"}}}
model: {{family: torchvision, name: mobilenet_v2}}
registry: {{model_name: ab}}
workdir: {tmp_path / "work"}
""")
    incoming = tmp_path / "incoming"
    (incoming / "day2").mkdir(parents=True)
    for i in range(11):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(incoming / ("day2" if i % 2 else "") / f"{i}.png")
    batch = read_incoming(incoming, "image", "text")
    report = DriftReport("ab", "3", str(incoming), True, 0.001, 0.2, 0.05, 11, 11, 20, 199, 1.0,
                         {"a": 1.0}, {"a": 1.0}, 0.0, {})
    stored = Path(keep_incoming_batch.fn(load_spec(config), batch, report, "manual"))
    assert stored.parent == tmp_path / "work" / "incoming" / "ab"
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["n"] == 11 and manifest["champion_version"] == "3" and manifest["trigger"] == "manual"
    assert sorted(manifest["files"]) == sorted(f"unlabeled/{r}" for r in batch.relative)
    for relative in batch.relative:
        assert (stored / "unlabeled" / relative).read_bytes() == (incoming / relative).read_bytes()
    assert len(list(incoming.rglob("*.png"))) == 11


def test_a_text_batch_is_read_and_stored_with_the_configs_columns(tmp_path):
    """The CSV columns come from the csv_text data block; the stored batch is ready to label and append."""
    from tasks.config.loading import load_spec
    from tasks.monitoring.drift_report import DriftReport
    from tasks.steps.monitor import keep_incoming_batch, read_incoming_batch
    from tests.conftest import write_config

    (tmp_path / "data.csv").write_text("message,category\nhi,a\n")
    config = write_config(tmp_path, f"""
task: Tell a from b.
metric: {{name: accuracy, target: 0.5}}
data: {{kind: csv_text, path: {tmp_path / "data.csv"}, text_column: message, label_column: category}}
model: {{family: hf_text, name: all-MiniLM-L6-v2}}
registry: {{model_name: ab}}
workdir: {tmp_path / "work"}
""")
    spec = load_spec(config)
    incoming = tmp_path / "incoming.csv"
    incoming.write_text("message\n" + "".join(f"text {i}\n" for i in range(11)))
    batch = read_incoming_batch.fn(spec, str(incoming), None)
    assert batch.inputs[0] == "text 0" and len(batch.inputs) == 11
    report = DriftReport("ab", "3", str(incoming), True, 0.001, 0.2, 0.05, 11, 11, 20, 199, 1.0,
                         {"a": 1.0}, {"a": 1.0}, 0.0, {})
    stored = Path(keep_incoming_batch.fn(spec, batch, report, "manual"))
    assert list(pd.read_csv(stored / "texts.csv").columns) == ["message", "category"]
    assert "Fill the 'category' column" in json.loads((stored / "manifest.json").read_text())["how_to_label"]


# --- sound files -------------------------------------------------------------------------------

def expected_audio_statistics(mono: np.ndarray, rate: int) -> dict[str, float]:
    """Recomputed here, frame by frame: duration, RMS in dBFS, the rate, the share of whole 20 ms
    frames whose RMS is under -60 dBFS (1e-3)."""
    samples = mono.astype(np.float64)
    frame = rate // 50
    quiet = [np.sqrt(np.mean(samples[i:i + frame] ** 2)) < 1e-3 for i in range(0, len(samples) - frame + 1, frame)]
    return {"duration_s": len(samples) / rate, "rms_dbfs": 20 * np.log10(np.sqrt(np.mean(samples ** 2))),
            "sample_rate": float(rate), "silent_share": sum(quiet) / len(quiet)}


def test_audio_statistics_match_a_numpy_recomputation_on_known_clips(tmp_path):
    """A 16 kHz clip silent for its first 0.3 s, a 22.05 kHz stereo clip (mixed to the channels'
    mean), and a 16-bit 44.1 kHz noise burst whose last partial frame is not counted."""
    from tasks.monitoring.drift import input_statistics
    from tests.sounds import chirp, noise_burst, pcm16, silence, tone, write

    gap = np.concatenate([silence(0.3), tone(440, seconds=0.7)])
    left, right = tone(300, seconds=0.5, rate=22_050), chirp(200, 4000, seconds=0.5, rate=22_050)
    burst = pcm16(np.concatenate([noise_burst(0.2, rate=44_100), silence(0.05, rate=44_100)]))
    clips = [(write(tmp_path / "gap.wav", gap, subtype="FLOAT"), gap, 16_000),
             (write(tmp_path / "stereo.flac", np.stack([left, right], axis=1), rate=22_050, subtype="PCM_24"),
              (left.astype(np.float64) + right) / 2, 22_050),
             (write(tmp_path / "burst.wav", burst, rate=44_100), burst / 32768, 44_100)]
    stats = input_statistics(None, "audio", [path for path, _, _ in clips])
    assert set(stats) == {"duration_s", "rms_dbfs", "sample_rate", "silent_share"}
    for index, (_, mono, rate) in enumerate(clips):
        expected = expected_audio_statistics(mono, rate)
        for name, value in expected.items():
            assert stats[name][index] == pytest.approx(value, rel=1e-4, abs=1e-4), (index, name)
    assert stats["sample_rate"] == [16_000.0, 22_050.0, 44_100.0]
    assert stats["duration_s"] == pytest.approx([1.0, 0.5, 0.25])
    assert stats["silent_share"][0] == pytest.approx(0.3)  # 15 of 50 frames
    assert stats["rms_dbfs"][0] == pytest.approx(20 * np.log10(0.5 * np.sqrt(0.7 / 2)), abs=0.01)  # 0.7 s of tone


def test_a_folder_of_sound_files_is_read_whole_and_its_problems_name_the_fix(tmp_path):
    from tests.sounds import tone, write

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: no sound files in this folder.*Fix: pass a folder of sound files"):
        read_incoming(empty, "audio", "text")
    sounds = tmp_path / "sounds"
    for i in range(12):
        write(sounds / ("day2" if i % 2 else "") / f"{i:02d}.{'flac' if i % 3 else 'wav'}", tone(200 + 50 * i))
    (sounds / "notes.txt").write_text("not a sound")
    (sounds / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt not really")
    with pytest.raises(DataError, match=r"broken\.wav: not a sound file libsndfile can read.*Fix: remove or replace"):
        read_incoming(sounds, "audio", "text")
    (sounds / "broken.wav").unlink()
    batch = read_incoming(sounds, "audio", "text")
    assert batch.modality == "audio" and len(batch.inputs) == 12 and batch.skipped == ("notes.txt",)
    assert batch.relative[:2] == ("00.wav", "02.flac") and "day2/01.flac" in batch.relative
    with pytest.raises(DataError, match=r"the model reads sound files\. Fix: pass a folder of sound files"):
        read_incoming(sounds / "00.wav", "audio", "text")


def test_a_drifted_sound_batch_is_copied_with_its_folders_and_a_manifest(tmp_path):
    from tasks.config.loading import load_spec
    from tasks.monitoring.drift_report import DriftReport
    from tasks.steps.monitor import keep_incoming_batch
    from tests.conftest import write_config
    from tests.sounds import tone, write

    (tmp_path / "data" / "yes").mkdir(parents=True)
    config = write_config(tmp_path, f"""
task: Hear yes from no.
metric: {{name: accuracy, target: 0.5}}
data: {{kind: audio_folder, path: {tmp_path / "data"}}}
model: {{family: spectrogram, name: mobilenet_v2}}
registry: {{model_name: yn}}
workdir: {tmp_path / "work"}
""")
    incoming = tmp_path / "incoming"
    for i in range(11):
        write(incoming / ("day2" if i % 2 else "") / f"{i}.wav", tone(200 + 30 * i))
    batch = read_incoming(incoming, "audio", "text")
    report = DriftReport("yn", "3", str(incoming), True, 0.001, 0.2, 0.05, 11, 11, 20, 199, 1.0,
                         {"yes": 1.0}, {"yes": 1.0}, 0.0, {})
    stored = Path(keep_incoming_batch.fn(load_spec(config), batch, report, "manual"))
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["n"] == 11 and sorted(manifest["files"]) == sorted(f"unlabeled/{r}" for r in batch.relative)
    for relative in batch.relative:
        assert (stored / "unlabeled" / relative).read_bytes() == (incoming / relative).read_bytes()


def test_a_drifted_sound_batch_of_a_csv_audio_model_comes_with_a_sheet_of_rows_to_label(tmp_path):
    """For a CSV that lists files, the batch holds the files and a to_label.csv in the CSV's own
    columns (paths relative to the batch folder, labels empty), and the manifest says how to use it."""
    import pandas as pd

    from tasks.config.loading import load_spec
    from tasks.monitoring.drift_report import DriftReport
    from tasks.steps.monitor import keep_incoming_batch
    from tests.conftest import write_config
    from tests.sounds import tone, write

    (tmp_path / "clips.csv").write_text("file,word\n")
    config = write_config(tmp_path, f"""
task: Hear yes from no.
metric: {{name: accuracy, target: 0.5}}
data: {{kind: csv_audio, path: {tmp_path / "clips.csv"}, path_column: file, label_column: word}}
model: {{family: spectrogram, name: mobilenet_v2}}
registry: {{model_name: yn}}
workdir: {tmp_path / "work"}
""")
    incoming = tmp_path / "incoming"
    for i in range(10):
        write(incoming / f"{i}.wav", tone(200 + 30 * i))
    batch = read_incoming(incoming, "audio", "text")
    report = DriftReport("yn", "3", str(incoming), True, 0.001, 0.2, 0.05, 10, 10, 20, 199, 1.0,
                         {"yes": 1.0}, {"yes": 1.0}, 0.0, {})
    stored = Path(keep_incoming_batch.fn(load_spec(config), batch, report, "manual"))
    sheet = pd.read_csv(stored / "to_label.csv", keep_default_na=False)
    assert list(sheet.columns) == ["file", "word"] and set(sheet["word"]) == {""}
    assert sorted(sheet["file"]) == sorted(f"unlabeled/{r}" for r in batch.relative)
    assert all((stored / path).is_file() for path in sheet["file"])
    manifest = json.loads((stored / "manifest.json").read_text())
    assert "to_label.csv" in manifest["files"] and "Fill the 'word' column of to_label.csv" in manifest["how_to_label"]
