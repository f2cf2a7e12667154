"""Pretrained base models behind one contract, whatever the family.

A Backbone offers `preprocess` (raw inputs -> model inputs), `embed` (model inputs -> [n, d]) and
`layer_groups()` ordered input -> output, so gradual unfreezing is "unfreeze the last k groups"
for every family; `split_at(k)` cuts `embed` there into the frozen prefix (computed once per
stage, tasks/training/prefix_cache.py) and the trainable suffix where the family can cut exactly, and
`training_preprocess(level)` adds random augmentation for fine-tuning.

Each family's adapter subclasses Backbone and registers with `@adapter("<family>")`; it
locates its weights without loading them (`locate_weights`, what `validate` checks) and builds
the encoder through the library's own loader (`build`), always with `weights_only=True`.
"""

from __future__ import annotations

import copy
import functools
import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tasks.config.families import FAMILIES, FamilyOptions
from tasks.core.plugins import Registry
from tasks.models.backbones.weights import RANDOM_SEED, WeightsSource

ADAPTERS: Registry[type[Backbone]] = Registry("backbone adapter")


def adapter(family: str) -> Callable[[type[Backbone]], type[Backbone]]:
    """Register the Backbone class that loads models of `family` (a registered options family)."""
    def register(cls: type[Backbone]) -> type[Backbone]:
        if family not in FAMILIES:
            raise ValueError(f"@adapter('{family}'): no options class registers that family in tasks/config/families")
        return ADAPTERS.add(family, cls)
    return register


def adapter_for(spec: FamilyOptions) -> type[Backbone]:
    """The adapter class of the spec's family (its module is imported on first use)."""
    if spec.family not in ADAPTERS:
        importlib.import_module(FAMILIES[spec.family].ADAPTER)
    return ADAPTERS[spec.family]


def locate_weights(spec: FamilyOptions) -> WeightsSource:
    """Where the spec's weights are, without loading them: a WeightsError (model, where it looked,
    the fix) when they are not on this machine and cannot be downloaded."""
    return adapter_for(spec).locate_weights(spec)


def load_backbone(spec: FamilyOptions) -> Backbone:
    """A fresh, frozen copy of the base model the spec names."""
    return adapter_for(spec)(spec)


@dataclass
class Pristine:
    """A base model as loaded, shared by every Backbone of it in this process (they get copies)."""

    module: nn.Module
    weights: WeightsSource
    extras: dict[str, Any]  # what the adapter learned while building (e.g. the image transform settings)


_PRISTINE: dict[tuple[str, str, str | None], Pristine] = {}


def pristine(spec: FamilyOptions) -> Pristine:
    """Each base model read from disk once per process: a flow run loads it several times (base
    model, baseline, stages, test); only copies are handed out, never this one."""
    key = (spec.family, spec.name, spec.weights)
    if key not in _PRISTINE:
        cls = adapter_for(spec)
        weights = cls.locate_weights(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)  # `weights: none` is the same network every time
            module, extras = cls.build(spec, weights)
        _PRISTINE[key] = Pristine(module.eval().requires_grad_(False), weights, extras)
    return _PRISTINE[key]


def clear_pristine_cache() -> None:
    """The next load reads its weights again (tests of the first load in a process)."""
    _PRISTINE.clear()


class Backbone(ABC):
    """A frozen-by-default pretrained encoder plus the preprocessing it was trained with."""

    SPLITS_EXACTLY: ClassVar[bool] = True  # False: `split_at` is unavailable, stages run the whole encoder
    LEARNS_FEATURES: ClassVar[bool] = False  # True: a classic family, fitted on the training split (`fit_to`)

    def __init__(self, spec: FamilyOptions) -> None:
        self.spec = spec
        loaded = pristine(spec)
        # Fine-tuning changes a module in place: each Backbone gets its own copy of the pristine one.
        self.module = copy.deepcopy(loaded.module)
        self.weights: WeightsSource = loaded.weights
        self.extras = loaded.extras
        self.weights_sha256 = loaded.weights.sha256
        self.started_from = ""  # set when the weights are a champion's fine-tuned ones
        self.freeze()

    @classmethod
    @abstractmethod
    def locate_weights(cls, spec: FamilyOptions) -> WeightsSource:
        """Where the weights are, checked but not loaded (fast; what `validate` calls)."""

    @classmethod
    @abstractmethod
    def build(cls, spec: FamilyOptions, weights: WeightsSource) -> tuple[nn.Module, dict[str, Any]]:
        """The encoder with these weights (slow: once per process), and facts for the instances."""

    def load_starting_point(self, weights: Any, sha256: str, origin: str) -> None:
        """Replace the pretrained weights with fine-tuned ones (`retrain.start_from: champion`).
        The embedding cache key follows `weights_sha256`, so no embedding of the pretrained model
        is ever reused for these weights."""
        self.module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # strict
        self.weights_sha256, self.started_from = sha256, origin
        self.freeze()

    def fit_to(self, inputs: list[Any]) -> None:
        """Learn the features from the training inputs: only classic families do (a pretrained
        model learns nothing here)."""
        return None

    def restore_fit(self, weights: dict[str, torch.Tensor]) -> None:
        """Take what `fit_to` learned from a classifier's state dict, before its head is built."""
        return None

    def reuse_embeddings(self, workdir: Path, ids: list[str], inputs: list[Any]) -> None:
        """Before `fit_to`: read what the embedding cache already holds for these examples. Only a
        hybrid does (its base model's embeddings, step 3a's); every other family embeds or fits itself."""
        return None

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of the embeddings."""

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def source(self) -> str:
        """Where the weights come from, for the model card."""
        if self.started_from:
            return (f"{self.spec.family}:{self.spec.name}, the fine-tuned backbone of {self.started_from} "
                    f"(weights sha256 {self.weights_sha256}), itself from {self.weights.description}")
        return f"{self.spec.family}:{self.spec.name}, {self.weights.description} (weights sha256 {self.weights_sha256})"

    @property
    @abstractmethod
    def preprocessing_id(self) -> str:
        """Everything about preprocessing that changes an embedding (part of the cache key)."""

    @abstractmethod
    def preprocess(self, inputs: list[Any]) -> Any:
        """Raw inputs (image paths or texts) -> a batch the encoder accepts."""

    @abstractmethod
    def embed(self, batch: Any) -> torch.Tensor:
        """A preprocessed batch -> embeddings [n, dim]; gradients flow where groups are unfrozen."""

    @abstractmethod
    def layer_groups(self) -> list[nn.Module]:
        """Blocks ordered from input to output; fine-tuning unfreezes them from the end."""

    def split_at(self, n_trainable_groups: int) -> tuple[Callable[[Any], Any], Callable[[Any], torch.Tensor]]:
        """(prefix, suffix) with suffix(prefix(batch)) == embed(batch): the prefix runs the groups
        that stay frozen while the last `n_trainable_groups` train, the suffix runs those and the
        pooling. A frozen prefix's output never changes, so a stage can compute it once.
        Only where `SPLITS_EXACTLY`."""
        raise NotImplementedError(f"{self.spec.family}:{self.spec.name} cannot be cut between layer groups")

    def training_preprocess(self, level: str) -> Callable[[Any], Any]:
        """`preprocess` with random augmentation at `level` (none | light | standard)."""
        return self.preprocess

    def is_random(self, level: str) -> bool:
        """Whether `training_preprocess(level)` is random: only then is the frozen prefix's output
        different each epoch, so only then must the prefix run every epoch."""
        return False

    def frozen_groups(self, n_trainable_groups: int) -> int:
        """How many groups, from the input end, stay frozen when the last `n_trainable_groups` train."""
        total = len(self.layer_groups())
        if not 0 <= n_trainable_groups <= total:
            raise ValueError(f"{self.spec.name} has {total} layer groups: cannot train the last {n_trainable_groups}")
        return total - n_trainable_groups

    def freeze(self) -> None:
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.module.eval()


class ImageBackbone(Backbone):
    """An image encoder's pooled features, with the preprocessing its weights were trained with.
    Subclasses that can cut exactly give `layer_groups` that compose to everything before `pool`."""

    def __init__(self, spec: FamilyOptions) -> None:
        super().__init__(spec)
        self.preprocessing, self.transform = self.image_preprocessing(spec.input_size[1])

    @abstractmethod
    def image_preprocessing(self, size: int | None) -> tuple[dict[str, Any], Callable[[Any], torch.Tensor]]:
        """The settings (resize, crop, interpolation, mean, std) for crops of `size`, and the transform."""

    @abstractmethod
    def eval_geometry(self) -> EvalGeometry:
        """What the evaluation transform does, for augmentations that keep its framing and statistics."""

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The last layer group's output -> pooled features [n, dim] (what follows the groups)."""
        raise NotImplementedError

    @property
    def preprocessing_id(self) -> str:
        return ";".join(f"{key}={value}" for key, value in sorted(self.preprocessing.items()))

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        """Image paths or file-like objects (BytesIO) -> a channels_last batch."""
        return decode_images(inputs, self.transform)

    def training_preprocess(self, level: str) -> Callable[[Any], Any]:
        """none: `preprocess` itself. light: crops of 80-100% of the evaluation crop's area, near
        square, anywhere in the resized image, and rotations up to 5 degrees: framing jitter that
        keeps the object's scale close to what evaluation sees. standard: light, plus horizontal
        flips and mild colour jitter (wrong where a flip changes the label, e.g. digits or text).
        Same size, interpolation and normalization as the evaluation transform.
        A functools.partial, not a closure, so DataLoader workers can receive it when spawned."""
        if level == "none":
            return self.preprocess
        return functools.partial(decode_images, transform=augmenting_transform(self.eval_geometry(), level))

    def is_random(self, level: str) -> bool:
        return level != "none"

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch)

    def split_at(self, n_trainable_groups: int) -> tuple[Callable[[Any], Any], Callable[[Any], torch.Tensor]]:
        if not self.SPLITS_EXACTLY:
            return super().split_at(n_trainable_groups)
        groups = self.layer_groups()  # together they are everything before the pooling
        cut = self.frozen_groups(n_trainable_groups)
        return (functools.partial(run_in_order, groups[:cut]),
                lambda features: self.pool(run_in_order(groups[cut:], features)))


@dataclass(frozen=True)
class EvalGeometry:
    """An image model's evaluation transform: resize the short side, centre-crop, normalize."""

    resize: int
    crop: int
    interpolation: str  # torchvision InterpolationMode value: "bilinear", "bicubic", ...
    mean: tuple[float, ...]
    std: tuple[float, ...]


def augmenting_transform(geometry: EvalGeometry, level: str) -> Callable[[Any], torch.Tensor]:
    """A PIL image -> a normalized tensor of the evaluation size, randomly framed (and for
    `standard` flipped and colour-jittered); draws from torch's global RNG."""
    from torchvision.transforms import InterpolationMode, v2

    if level not in ("light", "standard"):
        raise ValueError(f"augmentation level '{level}': expected none, light or standard")
    interpolation = InterpolationMode(geometry.interpolation)
    eval_area = (geometry.crop / geometry.resize) ** 2  # the evaluation crop's share of the square
    steps: list[Any] = [
        v2.Resize(geometry.resize, interpolation=interpolation, antialias=True),
        v2.CenterCrop(geometry.resize),
        v2.RandomRotation(5, interpolation=interpolation),
        v2.RandomResizedCrop(geometry.crop, scale=(0.8 * eval_area, eval_area), ratio=(0.9, 1 / 0.9),
                             interpolation=interpolation, antialias=True),
    ]
    if level == "standard":
        steps += [v2.RandomHorizontalFlip(), v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)]
    steps += [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
              v2.Normalize(list(geometry.mean), list(geometry.std))]
    return v2.Compose(steps)


def decode_images(inputs: list[Any], transform: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """Image paths or file-like objects -> `transform`ed, upright RGB images as a channels_last batch."""
    from PIL import Image, ImageOps

    tensors = []
    for source in inputs:
        with Image.open(source) as image:
            tensors.append(transform(ImageOps.exif_transpose(image).convert("RGB")))
    return torch.stack(tensors).contiguous(memory_format=torch.channels_last)


def run_in_order(groups: list[nn.Module], features: torch.Tensor) -> torch.Tensor:
    """Layer groups applied in order; a ModuleList group (a stem, a head) layer by layer."""
    for group in groups:
        for layer in group if isinstance(group, nn.ModuleList) else [group]:
            features = layer(features)
    return features


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, as sentence-transformers pools all-MiniLM-L6-v2."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def chunked(items: list[nn.Module], groups: int | None) -> list[nn.Module]:
    """`items` in at most `groups` consecutive, near-equal chunks (ModuleLists); None: one each."""
    if groups is None or groups >= len(items):
        return list(items)
    size = math.ceil(len(items) / groups)
    return [nn.ModuleList(items[start:start + size]) for start in range(0, len(items), size)]


def backbone_cache_key(backbone: Backbone) -> str:
    """What identifies an embedding apart from the example: model, exact weights, preprocessing,
    and the numeric precision of the device the encoder sits on (bf16 GPU embeddings never mix
    with float32 CPU ones)."""
    from tasks.core.hashing import sha256_text
    from tasks.models.devices import embedding_precision

    spec = backbone.spec
    weight = next(backbone.module.parameters(), None)
    precision = embedding_precision(weight.device if weight is not None else torch.device("cpu"))
    return sha256_text(f"{spec.family}/{spec.name}|{backbone.weights_sha256}|{backbone.preprocessing_id}|{precision}")
