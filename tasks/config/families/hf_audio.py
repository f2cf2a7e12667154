"""`family: hf_audio`: any Hugging Face audio encoder (wav2vec2, HuBERT, AST, Whisper's encoder,
CLAP's audio tower) through AutoModel and AutoFeatureExtractor."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from tasks.config.families.base import FamilyOptions, model_family


@model_family
class HfAudioOptions(FamilyOptions):
    """`name` is a hub id (`facebook/wav2vec2-base`, `facebook/hubert-base-ls960`,
    `MIT/ast-finetuned-audioset-10-10-0.4593`, `openai/whisper-tiny`, `laion/clap-htsat-unfused`)
    or a local model folder. `weights`: as for hf_text. Each clip is decoded, mixed to mono,
    resampled to `sample_rate`, cut to its middle `max_seconds` (or zero-padded), and handed to the
    model's own feature extractor (which may pad further: Whisper's to its 30 s window, AST's to its
    max_length frames)."""

    family: Literal["hf_audio"]
    pooling: Literal["mean", "cls"] = Field("mean", description="How frame states become one embedding: the mean "
                                                                "over the frames that cover the clip (Whisper pads "
                                                                "every clip to 30 s), or the first frame's (AST's "
                                                                "[CLS] token; models without one have no summary "
                                                                "there).")
    layer_groups: int | None = Field(None, ge=2, description="Fine-tuning groups: the feature encoder, then the "
                                                             "encoder layers in this many - 1 chunks (unset: one "
                                                             "group per layer).")
    sample_rate: int | None = Field(None, ge=4_000, le=96_000, description="Clips are resampled to this rate (Hz); "
                                                                           "unset: the feature extractor's "
                                                                           "sampling_rate (what the model was "
                                                                           "trained on).")
    max_seconds: float = Field(2.0, gt=0.0, le=60.0, description="Clips are cut to their middle max_seconds, "
                                                                 "shorter ones zero-padded at the end.")

    MODALITY = "audio"
    INPUT_SIZE = "max_seconds"
    ADAPTER = "tasks.models.backbones.hf_audio_models"
    SERVING_REQUIREMENTS = ("transformers==5.24.*", "soundfile==0.14.*", "soxr==1.1.*")
    # No audio encoder's weights ship in a wheel: the example is a tiny random wav2vec2 from its config.
    EXAMPLE: ClassVar[dict[str, Any]] = {"family": "hf_audio", "name": "tiny-wav2vec2", "weights": "none",
                                         "max_seconds": 1.0}
    EXAMPLE_FILES: ClassVar[dict[str, dict[str, Any]]] = {
        "config.json": {"model_type": "wav2vec2", "hidden_size": 32, "num_hidden_layers": 4,
                        "num_attention_heads": 2, "intermediate_size": 64, "conv_dim": [16, 16, 16],
                        "conv_stride": [5, 4, 4], "conv_kernel": [10, 8, 8], "num_conv_pos_embeddings": 16,
                        "num_conv_pos_embedding_groups": 2},
        "preprocessor_config.json": {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                                     "sampling_rate": 16_000, "padding_value": 0.0, "do_normalize": True,
                                     "return_attention_mask": False},
    }
