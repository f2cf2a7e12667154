"""Drifted batches kept for labeling: known by content, bounded by drift.keep_batches, and a batch
someone started labelling (or anything the tool did not write) is never removed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tasks.monitoring.drift import read_incoming
from tasks.monitoring.drift_report import DriftReport, StatisticShift
from tasks.monitoring.kept_batches import batch_digest, prune_kept_batches, untouched
from tests.conftest import write_config

REPORT = DriftReport("ab", "3", "in", True, 0.001, 0.2, 0.05, 11, 11, 20, 199, 1.0, {"a": 1.0}, {"a": 1.0}, 0.0,
                     {"width": StatisticShift(8.0, 0.5, 9.0)}, batch_digest="d1")


def image_batch(folder: Path, shade: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(11):
        Image.new("RGB", (8, 8), (i, shade, 0)).save(folder / f"{i}.png")
    return folder


def test_the_digest_is_the_content_not_the_path_or_the_time(tmp_path):
    first = read_incoming(image_batch(tmp_path / "monday"), "image", "text")
    copy = read_incoming(image_batch(tmp_path / "tuesday"), "image", "text")  # same bytes, another folder
    other = read_incoming(image_batch(tmp_path / "wednesday", shade=9), "image", "text")
    assert batch_digest(first) == batch_digest(copy) != batch_digest(other)
    (tmp_path / "tuesday" / "0.png").rename(tmp_path / "tuesday" / "renamed.png")
    assert batch_digest(read_incoming(tmp_path / "tuesday", "image", "text")) != batch_digest(first)


def test_a_report_survives_its_json(tmp_path):
    again = DriftReport.from_json(json.loads(json.dumps(REPORT.as_json())))
    assert again == REPORT  # null_scores are not stored: () on both sides here


@pytest.fixture
def kept(tmp_path):
    """Four batches kept by the real step, oldest first, under keep_batches: 10."""
    from tasks.config.loading import load_spec
    from tasks.steps.monitor import keep_incoming_batch

    (tmp_path / "data" / "a").mkdir(parents=True)
    config = write_config(tmp_path, f"""
task: Tell a from b.
metric: {{name: accuracy, target: 0.5}}
data: {{kind: image_folder, path: {tmp_path / "data"}}}
model: {{family: torchvision, name: mobilenet_v2}}
registry: {{model_name: ab}}
workdir: {tmp_path / "work"}
drift: {{keep_batches: 10}}
""")
    spec = load_spec(config)
    batches = [Path(keep_incoming_batch.fn(spec, read_incoming(image_batch(tmp_path / f"in{i}", i), "image", "text"),
                                           REPORT, "schedule")) for i in range(4)]
    return spec, batches


def test_only_untouched_batches_beyond_the_limit_are_removed(kept):
    _, batches = kept
    oldest, labelling, added_to, newest = batches
    assert all(untouched(b) for b in batches)
    (labelling / "unlabeled" / "0.png").rename(labelling / "0.png")  # someone started sorting it
    (added_to / "notes.txt").write_text("my notes")                  # not written by the tool
    removed, in_labelling = prune_kept_batches(oldest.parent, keep=1)
    assert removed == [oldest] and not oldest.exists()
    assert in_labelling == [labelling, added_to] and (added_to / "notes.txt").exists()
    assert newest.exists() and untouched(newest) and (labelling / "0.png").exists()


def test_an_edited_file_or_an_older_manifest_keeps_a_batch(kept):
    _, batches = kept
    Image.new("RGB", (8, 8), (255, 255, 255)).save(batches[0] / "unlabeled" / "3.png")  # changed in place
    manifest = json.loads((batches[1] / "manifest.json").read_text())
    del manifest["files_sha256"]  # as kept before hashes were recorded
    (batches[1] / "manifest.json").write_text(json.dumps(manifest))
    assert not untouched(batches[0]) and not untouched(batches[1]) and untouched(batches[2])
    removed, _ = prune_kept_batches(batches[0].parent, keep=1)
    assert removed == [batches[2]]


def test_keeping_a_batch_applies_the_limit(kept, tmp_path):
    from dataclasses import replace

    from tasks.steps.monitor import keep_incoming_batch

    spec, batches = kept
    spec = spec.model_copy(update={"drift": spec.drift.model_copy(update={"keep_batches": 2})})
    fifth = Path(keep_incoming_batch.fn(spec, read_incoming(image_batch(tmp_path / "in9", 9), "image", "text"),
                                        replace(REPORT, batch_digest="d9"), "schedule"))
    assert sorted(p for p in fifth.parent.iterdir()) == [batches[3], fifth]
    assert json.loads((fifth / "manifest.json").read_text())["batch_digest"] == "d9"
