"""Self-describing checkpoints: every field survives a round trip through a file that
`torch.load(weights_only=True)` reads, the classifier is rebuilt from the file alone, training
resumes where it stopped, and a legacy bare state dict still reads when its config is given."""

import random

import numpy as np
import pytest
import torch

from tasks.core.errors import TransferflowError
from tasks.models.backbones import load_backbone
from tasks.models.checkpoints import (
    FORMAT_VERSION,
    Checkpoint,
    legacy_config,
    read_checkpoint,
    restore_classifier_from,
    restore_selected,
    save_checkpoint,
    save_selected_answering_at,
)
from tasks.models.classifier import OperatingPoint
from tasks.training.rng import capture_rng, restore_rng
from tests.registered_models import SMALL_IMAGE_MODEL, png_base64

CLASSES = ["ants", "bees", "wasps"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classifier whose head took two optimizer steps, with its optimizer and scheduler."""
    from tasks.models.classifier import Classifier, new_head

    backbone = load_backbone(SMALL_IMAGE_MODEL)
    classifier = Classifier(backbone, new_head(backbone.dim, len(CLASSES), seed=0))
    optimizer = torch.optim.AdamW(classifier.head.parameters(), lr=1e-2, betas=(0.9, 0.99))
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=2)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[2])
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(classifier.head(torch.randn(8, backbone.dim)),
                                          torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])).backward()
        optimizer.step()
        scheduler.step()
    return classifier, optimizer, scheduler


def images(folder):
    import base64

    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        path = folder / f"{i}.png"
        path.write_bytes(base64.b64decode(png_base64(colour)))
        paths.append(str(path))
    return paths


def test_every_field_round_trips_through_a_weights_only_file(trained, tmp_path):
    classifier, optimizer, scheduler = trained
    batches = torch.Generator().manual_seed(7)
    written = Checkpoint(model=SMALL_IMAGE_MODEL, classes=CLASSES, weights=classifier.state_dict(),
                         stage="finetune-2", unfrozen_groups=2, epoch=3,
                         operating_point=OperatingPoint("bees", 0.3125), optimizer=optimizer.state_dict(),
                         scheduler=scheduler.state_dict(), rng=capture_rng({"batches": batches}))
    path = save_checkpoint(tmp_path / "finetune-2.pt", written)

    raw = torch.load(path, weights_only=True)  # only tensors and plain values: no code runs on load
    assert raw["format_version"] == FORMAT_VERSION == 1 and raw["model"] == SMALL_IMAGE_MODEL.model_dump(mode="json")
    assert raw["operating_point"] == {"class": "bees", "threshold": 0.3125}
    read = read_checkpoint(path)
    assert (read.model, read.classes, read.stage, read.unfrozen_groups, read.epoch, read.operating_point,
            read.format_version) == (SMALL_IMAGE_MODEL, CLASSES, "finetune-2", 2, 3, OperatingPoint("bees", 0.3125), 1)
    assert read.weights.keys() == written.weights.keys()
    assert all(torch.equal(read.weights[k], written.weights[k]) for k in written.weights)
    assert read.scheduler == scheduler.state_dict()
    assert read.optimizer is not None and read.optimizer["param_groups"] == optimizer.state_dict()["param_groups"]
    for index, state in optimizer.state_dict()["state"].items():
        assert all(torch.equal(read.optimizer["state"][index][k], v) for k, v in state.items())
    assert read.rng is not None and torch.equal(read.rng["torch"], written.rng["torch"])


def test_training_resumes_from_the_stored_optimizer_scheduler_and_random_state(trained, tmp_path):
    classifier, optimizer, scheduler = trained
    batches = torch.Generator().manual_seed(11)
    checkpoint = Checkpoint(model=SMALL_IMAGE_MODEL, classes=CLASSES, weights=classifier.state_dict(), stage="s",
                            unfrozen_groups=1, epoch=2, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), rng=capture_rng({"batches": batches}))
    path = save_checkpoint(tmp_path / "s.last.pt", checkpoint)
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.randperm(10, generator=batches))

    read = read_checkpoint(path)
    resumed = torch.optim.AdamW(classifier.head.parameters(), lr=1e-2)
    resumed.load_state_dict(read.optimizer)
    assert resumed.state_dict()["param_groups"][0]["lr"] == optimizer.state_dict()["param_groups"][0]["lr"]
    again = torch.Generator()
    restore_rng(read.rng, {"batches": again})
    drawn = (torch.rand(3), np.random.rand(3), random.random(), torch.randperm(10, generator=again))
    assert torch.equal(drawn[0], expected[0]) and np.array_equal(drawn[1], expected[1])
    assert drawn[2] == expected[2] and torch.equal(drawn[3], expected[3])


def test_the_classifier_is_rebuilt_from_the_file_alone(trained, tmp_path):
    classifier, _, _ = trained
    path = save_checkpoint(tmp_path / "c.pt", Checkpoint(model=SMALL_IMAGE_MODEL, classes=CLASSES,
                                                         weights=classifier.state_dict(), stage="baseline",
                                                         unfrozen_groups=0, epoch=5))
    restored, checkpoint = restore_classifier_from(path)
    batch = classifier.backbone.preprocess(images(tmp_path))
    with torch.inference_mode():
        assert torch.allclose(restored(batch), classifier(batch))
    assert checkpoint.classes == CLASSES and not restored.training
    assert not any(p.requires_grad for p in restored.parameters())


def test_a_legacy_bare_state_dict_needs_its_config(trained, tmp_path):
    classifier, _, _ = trained
    path = tmp_path / "baseline.pt"
    torch.save(classifier.state_dict(), path)  # how stages were saved before checkpoints described themselves
    with pytest.raises(TransferflowError, match=r"baseline\.pt: a bare state dict .* Fix: pass the model_config"):
        read_checkpoint(path)
    restored, checkpoint = restore_classifier_from(path, legacy_config(SMALL_IMAGE_MODEL, CLASSES))
    assert (checkpoint.format_version, checkpoint.classes, checkpoint.operating_point) == (0, CLASSES, None)
    assert torch.equal(restored.head.weight, classifier.head.weight)


def test_the_selected_classifier_is_restored_once_and_shared_by_its_thresholded_copy(trained, tmp_path):
    from tasks.core.hashing import sha256_file

    classifier, _, _ = trained
    source = tmp_path / "bare.pt"
    torch.save(classifier.state_dict(), source)
    config = legacy_config(SMALL_IMAGE_MODEL, CLASSES)
    first, _ = restore_selected(source, sha256_file(source), config)
    assert restore_selected(source, sha256_file(source), config)[0] is first  # restored once, handed on
    point = OperatingPoint("wasps", 0.2)
    out, out_sha256 = save_selected_answering_at(source, sha256_file(source), tmp_path / "described.pt", point, config)
    assert out_sha256 == sha256_file(out)
    assert read_checkpoint(out).operating_point == point and read_checkpoint(out).classes == CLASSES
    assert "format_version" not in torch.load(source, weights_only=True)  # the source is untouched
    shared, described = restore_selected(out, out_sha256)
    assert shared is first and described.operating_point == point  # same weights: not restored again
    torch.save(classifier.state_dict(), out)  # the file rewritten: another content, restored anew
    again, rewritten = restore_selected(out, sha256_file(out), config)
    assert again is not first and rewritten.operating_point is None
    assert torch.equal(again.head.weight, first.head.weight)


def test_a_checkpoint_from_a_newer_format_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(TransferflowError, match=r"future\.pt: checkpoint format_version 2 .* Fix: upgrade"):
        read_checkpoint(path)
