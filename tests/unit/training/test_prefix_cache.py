"""The frozen-prefix cache changes cost, never results: on real backbones, logits through stored
prefix outputs equal the uncached classifier's, one training step updates the weights identically,
and the memory-mapped store holds the same values as the in-RAM one."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tasks.config.families import model_spec
from tasks.config.spec import ModelSpec
from tasks.models.backbones import Backbone, load_backbone
from tasks.models.classifier import Classifier
from tasks.models.loader import Batches
from tasks.training.fit import _train_mode
from tasks.training.prefix_cache import PrefixBatches, SuffixClassifier, can_cache_prefix, compute_prefix_outputs

MOBILENET = model_spec(dict(family="torchvision", name="mobilenet_v2", image_size=64))
MINILM = model_spec(dict(family="hf_text", name="all-MiniLM-L6-v2"))
TEXTS = ["hi", "the parcel arrived two days late and the box was damaged", "call me back",
         "a slightly longer message than the others here", "ok", "win a free prize now, reply YES to claim it"]


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(6):
        path = folder / f"image-{index}.png"
        height, width = 60 + 7 * index, 90 - 5 * index
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def classifier_for(spec: ModelSpec) -> Classifier:
    """A fresh classifier; the same seed gives the same head every time."""
    backbone = load_backbone(spec)
    torch.manual_seed(0)
    return Classifier(backbone, nn.Linear(backbone.dim, 2))


def inputs_for(spec: ModelSpec, image_paths: list[str]) -> list[str]:
    return TEXTS if spec is MINILM else image_paths


def no_dropout(classifier: Classifier) -> Classifier:
    """Train mode without randomness, so two paths can be compared step for step."""
    for layer in classifier.modules():
        if isinstance(layer, nn.Dropout):
            layer.p = 0.0
    return classifier


def train_one_step(model: nn.Module, classifier: Classifier, k: int, batch, targets: torch.Tensor) -> None:
    """As fit trains: trainable groups in train mode, BatchNorm in eval, everything else frozen."""
    trainable = [*classifier.backbone.layer_groups()[-k:], classifier.head]
    _train_mode(model, trainable)
    parameters = [p for module in trainable for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.SGD(parameters, lr=0.5)
    nn.functional.cross_entropy(model(batch), targets).backward()
    optimizer.step()


@pytest.mark.parametrize("spec", [MOBILENET, MINILM], ids=["mobilenet_v2", "minilm"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_cached_prefix_gives_the_same_logits_and_the_same_training_step(spec, k, image_paths, tmp_path):
    inputs = inputs_for(spec, image_paths)
    targets = torch.tensor([0, 1, 0, 1, 1, 0])
    ids = [f"id-{i}" for i in range(len(inputs))]
    uncached, cached = no_dropout(classifier_for(spec)), no_dropout(classifier_for(spec))
    outputs = compute_prefix_outputs(cached.backbone, ids, inputs, k, batch_size=4, cache_dir=tmp_path)
    suffix_model = SuffixClassifier(cached, k)
    raw = Batches(inputs, targets, 4, uncached.backbone.preprocess)
    stored = PrefixBatches(outputs, targets, 4)
    assert len(stored) == len(raw) == 2

    uncached.eval(), suffix_model.eval()
    with torch.inference_mode():
        for (batch, want_targets), (prefix_batch, got_targets) in zip(
                raw.iterate(torch.Generator().manual_seed(5)), stored.iterate(torch.Generator().manual_seed(5)),
                strict=True):
            assert torch.equal(got_targets, want_targets)  # same shuffled order
            torch.testing.assert_close(suffix_model(prefix_batch), uncached(batch), atol=1e-5, rtol=1e-4)

    (batch, batch_targets), = Batches(inputs, targets, 6, uncached.backbone.preprocess).iterate()
    (prefix_batch, _), = PrefixBatches(outputs, targets, 6).iterate()
    train_one_step(uncached, uncached, k, batch, batch_targets)
    train_one_step(suffix_model, cached, k, prefix_batch, batch_targets)
    trained, reference = dict(cached.named_parameters()), dict(uncached.named_parameters())
    assert trained.keys() == reference.keys()
    initial = classifier_for(spec).state_dict()
    changed = [name for name, value in reference.items() if not torch.equal(value, initial[name])]
    assert any(name.startswith("head") for name in changed) and len(changed) > 2  # the step did train the groups
    for name, value in reference.items():
        torch.testing.assert_close(trained[name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert set(suffix_model.state_dict()) == {f"classifier.{name}" for name in cached.state_dict()}


@pytest.mark.parametrize("spec", [MOBILENET, MINILM], ids=["mobilenet_v2", "minilm"])
def test_memory_mapped_outputs_equal_the_in_ram_ones_and_are_read_back(spec, image_paths, tmp_path):
    backbone = load_backbone(spec)
    inputs = inputs_for(spec, image_paths)
    ids = [f"id-{i}" for i in range(len(inputs))]
    in_ram = compute_prefix_outputs(backbone, ids, inputs, 2, batch_size=4, cache_dir=tmp_path)
    on_disk = compute_prefix_outputs(backbone, ids, inputs, 2, batch_size=4, cache_dir=tmp_path, memory_budget_bytes=0)
    assert not in_ram.files and on_disk.files and all(path.exists() for path in on_disk.files)
    assert all(isinstance(array, np.memmap) for array in on_disk.arrays.values())
    assert in_ram.arrays.keys() == on_disk.arrays.keys()
    for name, array in in_ram.arrays.items():
        np.testing.assert_array_equal(on_disk.arrays[name], array)

    again = compute_prefix_outputs(backbone, ids, inputs, 2, batch_size=4, cache_dir=tmp_path, memory_budget_bytes=0)
    assert on_disk.computed and not again.computed and again.files == on_disk.files
    reordered = compute_prefix_outputs(backbone, ids[::-1], inputs[::-1], 2, batch_size=4, cache_dir=tmp_path,
                                       memory_budget_bytes=0)
    assert reordered.computed and set(reordered.files).isdisjoint(on_disk.files)
    with torch.no_grad():
        next(backbone.layer_groups()[0].parameters()).add_(1.0)  # as if an earlier stage had trained it
    changed = compute_prefix_outputs(backbone, ids, inputs, 2, batch_size=4, cache_dir=tmp_path, memory_budget_bytes=0)
    assert changed.computed and set(changed.files).isdisjoint(on_disk.files)


def test_text_batches_are_trimmed_to_their_longest_example(tmp_path):
    backbone = load_backbone(MINILM)
    outputs = compute_prefix_outputs(backbone, ["a", "b", "c"], ["ok", "hi", TEXTS[1]], 1, batch_size=2,
                                     cache_dir=tmp_path)
    longest = backbone.preprocess([TEXTS[1]])["input_ids"].shape[1]
    assert outputs.arrays["hidden_states"].shape[1] == longest
    short = outputs.batch(torch.tensor([0, 1]))
    assert short["hidden_states"].shape[1] == short["attention_mask"].shape[1] == 3  # [CLS] word [SEP]


def test_the_cache_applies_only_without_random_augmentation_and_with_a_frozen_prefix():
    images: Backbone = load_backbone(MOBILENET)
    texts: Backbone = load_backbone(MINILM)
    groups = len(images.layer_groups())
    assert can_cache_prefix(images, "none", 1) and not can_cache_prefix(images, "light", 1)
    assert not can_cache_prefix(images, "none", groups)
    assert can_cache_prefix(texts, "standard", 2)
    with pytest.raises(ValueError, match="cannot train the last"):
        can_cache_prefix(images, "none", groups + 1)


def test_nothing_frozen_is_refused(tmp_path: Path):
    backbone = load_backbone(MOBILENET)
    with pytest.raises(ValueError, match="nothing to cache"):
        compute_prefix_outputs(backbone, ["a"], ["x.png"], len(backbone.layer_groups()), batch_size=1,
                               cache_dir=tmp_path)
