"""Fine-tuning augmentation: `none` is the evaluation preprocessing itself; `light` and `standard`
keep its size, layout and statistics but differ from draw to draw; texts are never augmented."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from tasks.config.families import model_spec
from tasks.models.backbones import load_backbone

IMAGE_MODELS = [("torchvision", "mobilenet_v2"), ("timm", "tf_efficientnet_lite0")]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list:
    """Small generated photos of different shapes: two files and one in-memory upload."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index, (width, height) in enumerate([(90, 70), (64, 96)]):
        path = folder / f"image-{index}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    upload = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(upload, format="PNG")
    return [*paths, upload]


def fresh(images: list) -> list:
    return [io.BytesIO(item.getvalue()) if isinstance(item, io.BytesIO) else item for item in images]


@pytest.mark.parametrize("family,name", IMAGE_MODELS)
def test_none_is_the_evaluation_preprocessing(family, name, images):
    backbone = load_backbone(model_spec(dict(family=family, name=name, image_size=64)))
    assert backbone.training_preprocess("none") == backbone.preprocess
    assert not backbone.is_random("none")
    assert torch.equal(backbone.training_preprocess("none")(fresh(images)), backbone.preprocess(fresh(images)))


@pytest.mark.parametrize("family,name", IMAGE_MODELS)
def test_the_geometry_describes_the_evaluation_transform(family, name, images):
    """Augmentations are built from `eval_geometry`: rebuilt without randomness, it is `preprocess`."""
    backbone = load_backbone(model_spec(dict(family=family, name=name, image_size=64)))
    geometry = backbone.eval_geometry()
    interpolation = InterpolationMode(geometry.interpolation)
    rebuilt = v2.Compose([v2.Resize(geometry.resize, interpolation=interpolation, antialias=True),
                          v2.CenterCrop(geometry.crop), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
                          v2.Normalize(list(geometry.mean), list(geometry.std))])
    expected = backbone.preprocess(fresh(images))
    with Image.open(images[0]) as image:
        assert torch.allclose(rebuilt(image.convert("RGB")), expected[0], atol=1e-5)


@pytest.mark.parametrize("family,name", IMAGE_MODELS)
@pytest.mark.parametrize("level", ["light", "standard"])
def test_augmented_batches_keep_the_layout_and_differ_between_draws(family, name, level, images):
    backbone = load_backbone(model_spec(dict(family=family, name=name, image_size=64)))
    augment = backbone.training_preprocess(level)
    reference = backbone.preprocess(fresh(images))
    torch.manual_seed(1)
    first = augment(fresh(images))
    torch.manual_seed(2)
    second = augment(fresh(images))
    torch.manual_seed(1)
    again = augment(fresh(images))
    assert backbone.is_random(level)
    assert first.shape == reference.shape and first.dtype == reference.dtype
    assert first.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(first, second) and torch.equal(first, again)
    assert abs(first.mean().item() - reference.mean().item()) < 0.5  # same normalization, roughly


def test_an_unknown_level_is_refused():
    backbone = load_backbone(model_spec(dict(family="torchvision", name="mobilenet_v2", image_size=64)))
    with pytest.raises(ValueError, match="expected none, light or standard"):
        backbone.training_preprocess("heavy")


@pytest.mark.parametrize("level", ["none", "light", "standard"])
def test_texts_are_never_augmented(level):
    backbone = load_backbone(model_spec(dict(family="hf_text", name="all-MiniLM-L6-v2")))
    assert backbone.training_preprocess(level) == backbone.preprocess
    assert not backbone.is_random(level)
