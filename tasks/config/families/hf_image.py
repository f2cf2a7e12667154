"""`family: hf_image`: any Hugging Face vision encoder (ViT, DINOv2, CLIP vision, ...)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from tasks.config.families.base import FamilyOptions, model_family


@model_family
class HfImageOptions(FamilyOptions):
    """`name` is a hub id (`google/vit-base-patch16-224-in21k`, `facebook/dinov2-small`) or a local
    model folder; AutoModel with AutoImageProcessor. `weights`: as for hf_text."""

    family: Literal["hf_image"]
    image_size: int | None = Field(None, ge=32, le=1024, description="Crop size; unset: the image processor's.")
    pooling: Literal["cls", "mean"] = Field("cls", description="The first ([CLS]) token's final state, or the "
                                                               "mean over all tokens.")
    layer_groups: int | None = Field(None, ge=2, description="Fine-tuning groups: the embeddings, then the "
                                                             "encoder layers in this many - 1 chunks (unset: one "
                                                             "group per layer).")

    MODALITY = "image"
    INPUT_SIZE = "image_size"
    ADAPTER = "tasks.models.backbones.hf_models"
    SERVING_REQUIREMENTS = ("transformers==5.24.*",)
    # No vision encoder's weights ship in a wheel: the example is a tiny random ViT from its config.
    EXAMPLE: ClassVar[dict[str, Any]] = {"family": "hf_image", "name": "tiny-vit", "weights": "none"}
    EXAMPLE_FILES: ClassVar[dict[str, dict[str, Any]]] = {
        "config.json": {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
                        "intermediate_size": 64, "image_size": 32, "patch_size": 8},
        "preprocessor_config.json": {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                                     "size": {"height": 32, "width": 32}, "do_normalize": True,
                                     "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    }
