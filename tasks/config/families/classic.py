"""The classic families: `tfidf` (texts), `pixels` (images), `mfcc` (sound). No pretrained weights,
no layer groups: their features are fitted on the training split (a vocabulary and its idf, or the
mean and spread of each feature) and a linear head with its regularization chosen on validation
reads them. Every run scores its modality's classic family as an anchor (`tasks.steps.anchor`), and
a tournament includes it as a candidate unless `model.classic: false`: a transferred model has to
beat it to be worth its cost.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from tasks.config.families.base import FamilyOptions, model_family

SKLEARN = "scikit-learn==1.9.*"  # the served model computes tf-idf with scikit-learn's hashing vectorizer


class ClassicOptions(FamilyOptions):
    """What the classic families share: fitted on train, read by a regularized linear head."""

    CLASSIC: ClassVar[bool] = True
    FITS_ON_TRAIN: ClassVar[bool] = True
    ADAPTER = "tasks.models.backbones.classic_models"

    def describe(self) -> str:
        return self.family if self.name == self.family else f"{self.family}:{self.name}"


@model_family
class TfidfOptions(ClassicOptions):
    """Word and character n-gram counts (scikit-learn's hashing vectorizer, so the fitted state is a
    column list, not a vocabulary of strings), the `max_features` columns most frequent in training
    documents kept (each in at least `min_df` of them), sublinear tf (1 + log count), idf from the
    training split, each text scaled to unit length."""

    family: Literal["tfidf"]
    name: str = Field("tfidf", min_length=1)
    word_ngrams: tuple[int, int] = Field((1, 2), description="The range of word n-gram lengths counted.")
    char_ngrams: tuple[int, int] | None = Field(
        (2, 5), description="The range of character n-gram lengths counted within word boundaries (spelling "
                            "variants, typos, codes); unset counts words only.")
    max_features: int = Field(20_000, ge=1, le=200_000,
                              description="Columns kept: those in the most training texts.")
    min_df: int = Field(2, ge=1, description="A column must occur in at least this many training texts.")
    lowercase: bool = True

    MODALITY = "text"
    INPUT_SIZE = "max_features"
    SERVING_REQUIREMENTS = (SKLEARN,)
    EXAMPLE: ClassVar[dict[str, Any]] = {"family": "tfidf", "max_features": 64, "min_df": 1}

    @model_validator(mode="after")
    def _ordered_ranges(self) -> TfidfOptions:
        for field in ("word_ngrams", "char_ngrams"):
            low_high = getattr(self, field)
            if low_high is not None and not 1 <= low_high[0] <= low_high[1]:
                raise ValueError(f"{field}: [{low_high[0]}, {low_high[1]}] is not a range of n-gram lengths; "
                                 "write [low, high] with 1 <= low <= high")
        return self


@model_family
class PixelsOptions(ClassicOptions):
    """Each image resized (bilinear) to `image_size` x `image_size`, its raw pixels in 0-1 (grey, or
    RGB), each standardized by its mean and spread over the training split."""

    family: Literal["pixels"]
    name: str = Field("pixels", min_length=1)
    image_size: int = Field(32, ge=4, le=256, description="Images are resized to image_size x image_size.")
    grayscale: bool = Field(False, description="One grey channel instead of three.")

    MODALITY = "image"
    INPUT_SIZE = "image_size"
    EXAMPLE: ClassVar[dict[str, Any]] = {"family": "pixels", "image_size": 8}


@model_family
class MfccOptions(ClassicOptions):
    """Each clip decoded to mono at `sample_rate`, cut to its middle `max_seconds`, then `n_mfcc`
    mel-frequency cepstral coefficients per 25 ms frame (every 10 ms) and their deltas; the
    features are each coefficient's mean and standard deviation over time, standardized on the
    training split."""

    family: Literal["mfcc"]
    name: str = Field("mfcc", min_length=1)
    sample_rate: int = Field(16_000, ge=4_000, le=96_000)
    max_seconds: float = Field(2.0, gt=0.0, le=60.0)
    n_mels: int = Field(40, ge=8, le=256, description="Mel bands the cepstrum is computed from.")
    n_mfcc: int = Field(20, ge=2, le=128, description="Cepstral coefficients kept per frame.")

    MODALITY = "audio"
    INPUT_SIZE = "max_seconds"
    SERVING_REQUIREMENTS = ("soundfile==0.14.*", "soxr==1.1.*")
    EXAMPLE: ClassVar[dict[str, Any]] = {"family": "mfcc", "max_seconds": 1.0, "n_mels": 16, "n_mfcc": 8}

    @model_validator(mode="after")
    def _fewer_coefficients_than_bands(self) -> MfccOptions:
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) > n_mels ({self.n_mels}): the cepstrum has at most n_mels "
                             "coefficients; lower n_mfcc or raise n_mels")
        return self
