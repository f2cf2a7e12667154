"""`family: hybrid`: a pretrained model's frozen embeddings beside a classic family's features,
read by one logistic regression. Often the strongest where both meaning and exact words (or
pixels) matter: MiniLM's sense of the question with tf-idf's reading of a product code."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from tasks.config.families.base import FamilyOptions, model_family


@model_family
class HybridOptions(FamilyOptions):
    """`base` is a pretrained model's family block (frozen: hybrid never fine-tunes it); `classic`
    a classic family's block of the same modality (unset: the modality's with its defaults). Each
    part is scaled to unit length per example (the embedding standardized on the training split
    first), so neither drowns the other in the head's regularization."""

    family: Literal["hybrid"]
    name: str = Field("hybrid", min_length=1)
    base: dict[str, Any] = Field(description="The pretrained model, as `model:` takes one (a family block).")
    classic: dict[str, Any] | None = Field(None, description="The classic family's block; unset: the "
                                                             "modality's classic family with its defaults.")

    FITS_ON_TRAIN: ClassVar[bool] = True
    INPUT_SIZE = "name"
    ADAPTER = "tasks.models.backbones.hybrid_models"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "family": "hybrid", "base": {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 16},
        "classic": {"family": "tfidf", "max_features": 64, "min_df": 1}}

    @property
    def base_options(self) -> FamilyOptions:
        from tasks.config.families import model_spec

        return model_spec(self.base)

    @property
    def classic_options(self) -> FamilyOptions:
        from tasks.config.families import classic_model, model_spec

        return model_spec(self.classic) if self.classic is not None else classic_model(self.base_options.MODALITY)

    @property
    def MODALITY(self) -> str:  # type: ignore[override]  # the base model's: an instance's, not the family's
        return self.base_options.MODALITY

    @model_validator(mode="after")
    def _parts_fit(self) -> HybridOptions:
        base, classic = self.base_options, self.classic_options
        if base.FITS_ON_TRAIN or base.CLASSIC:
            raise ValueError(f"base: {base.family} is not a pretrained model; name one (hf_text, torchvision, ...)")
        if not classic.CLASSIC:
            raise ValueError(f"classic: {classic.family} is not a classic family (tfidf, pixels, mfcc)")
        if classic.MODALITY != base.MODALITY:
            raise ValueError(f"classic: {classic.family} reads {classic.MODALITY}s but base {base.family} reads "
                             f"{base.MODALITY}s; use the classic family of {base.MODALITY}s")
        return self

    def serving_requirements(self) -> list[str]:
        parts = [*self.base_options.serving_requirements(), *self.classic_options.serving_requirements()]
        return list(dict.fromkeys(parts))

    def describe(self) -> str:
        return f"hybrid({self.base_options.describe()} + {self.classic_options.describe()})"
