"""`family: hf_audio`: a Hugging Face audio encoder through AutoModel and AutoFeatureExtractor.

Each clip is decoded at the model's rate (`tasks.core.audio`), cut to its middle `max_seconds`
and handed to the model's own feature extractor; the embedding pools the last hidden state over
frames. Loading and layer groups are hf_models.py's.

Audio encoders differ in what runs before their layer stack (wav2vec2 and HuBERT: a convolutional
feature encoder, a projection, a convolutional position embedding and, in the original layout, a
norm; AST: patch embeddings; Whisper: two convolutions and positions) and after it (a final norm
in the stable-layer-norm layout, AST and Whisper; nothing in wav2vec2-base). Rather than a table of
module names per architecture, `trace` runs one clip through the model when it is built and
watches which modules run before the stack (the first layer group) and after it (riding with the
last). The same run checks that the layers, called one after another from a stored hidden state,
give the model's own output: where they do (wav2vec2, HuBERT, AST, Whisper), `split_at` cuts
exactly for the prefix cache; where they do not (CLAP's Swin stages take their grid size and
reshape between stages), SPLITS_EXACTLY is False and stages run the whole encoder.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from tasks.config.families import FamilyOptions
from tasks.config.families.hf_audio import HfAudioOptions
from tasks.core.errors import SpecError
from tasks.models.backbones.base import adapter
from tasks.models.backbones.hf_models import (
    _AutoModelBackbone,
    build_auto_model,
    encoder_layers,
    preprocessor_folder,
    transformer_groups,
)
from tasks.models.backbones.weights import WeightsSource

TRACE_SECONDS = 1.0  # the clip `trace` runs (seeded noise): long enough for every encoder's front end
PLAIN = (type(None), bool, int, float, str)  # layer arguments a cached hidden state can be replayed with


@dataclass(frozen=True)
class AudioFrontEnd:
    """Sound files -> the model's input tensor. A plain frozen dataclass, so DataLoader worker
    processes can receive it."""

    extractor: Any  # the model's feature extractor (AutoFeatureExtractor)
    sample_rate: int
    seconds: float

    @property
    def length(self) -> int:
        return round(self.seconds * self.sample_rate)

    @property
    def input_name(self) -> str:
        return str(self.extractor.model_input_names[0])

    @property
    def share(self) -> float:
        """The part of the model's input window the clip fills: Whisper's extractor pads every clip
        to its fixed window (`n_samples`, 30 s), and frames of padding would swamp the mean."""
        window = getattr(self.extractor, "n_samples", None)
        return min(1.0, self.length / window) if window else 1.0


def extract_clips(inputs: list[Any], front_end: AudioFrontEnd, augment: str = "none") -> torch.Tensor:
    """Sound file paths or file-like objects -> the feature extractor's batch. `augment` light: a
    random time shift (up to 10% of the clip, wrapping); standard adds noise at 20-40 dB SNR: the
    spectrogram family's waveform augmentation (its SpecAugment masks act on a log-mel these models
    compute inside their extractor or network). Draws from torch's global RNG."""
    from tasks.core.audio import decode, fixed_length
    from tasks.models.backbones.waveform import shifted_and_noisy

    clips = []
    for source in inputs:
        samples = fixed_length(decode(source, front_end.sample_rate), front_end.length)
        if augment != "none":
            samples = shifted_and_noisy(samples, noisy=augment == "standard")
        clips.append(samples)
    return features_of(clips, front_end)


def features_of(clips: list[np.ndarray], front_end: AudioFrontEnd) -> torch.Tensor:
    """Mono clips at the front end's rate -> the extractor's main input. Only that one: every clip
    is exactly max_seconds long, so the extractor pads none more than another and an attention mask
    would be all ones."""
    features = front_end.extractor(clips, sampling_rate=front_end.sample_rate, return_tensors="pt")
    return cast(torch.Tensor, features[front_end.input_name])


@dataclass(frozen=True)
class Layout:
    """What `trace` learned about a model: module paths, and how the model calls its layers."""

    layers: str                            # the layer stack
    front: tuple[str, ...]                 # modules that run before the stack, in order
    head: tuple[str, ...]                  # modules that run after it, in order
    layer_args: tuple[Any, ...]            # what the model passes each layer besides the hidden states
    layer_kwargs: tuple[tuple[str, Any], ...]
    dim: int                               # the pooled embedding's width
    exact: bool                            # whether `run_from` reproduces the model's output


def layer_stack(module: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's layers by their usual names (a wav2vec2's convolutions could outnumber a small
    stack), else the longest ModuleList."""
    for path in ("encoder.layers", "encoder.layer", "audio_encoder.layers", "layers"):
        try:
            stack = module.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(stack, nn.ModuleList):
            return path, stack
    longest = encoder_layers(module)
    return next(name for name, m in module.named_modules() if m is longest), longest


def _beside_the_stack(module: nn.Module, stack_path: str) -> dict[str, nn.Module]:
    """The modules with parameters that hang off the stack's ancestors (everything but the stack)."""
    parts = stack_path.split(".")
    ancestors = [".".join(parts[:depth]) for depth in range(len(parts))]
    found = {}
    for ancestor in ancestors:
        for name, child in module.get_submodule(ancestor).named_children():
            path = f"{ancestor}.{name}" if ancestor else name
            if path not in ancestors and path != stack_path and any(True for _ in child.parameters()):
                found[path] = child
    return found


def as_frames(hidden: torch.Tensor) -> torch.Tensor:
    """[n, frames, d]; a channels-first map [n, d, h, w] (CLAP) as its h x w positions."""
    return hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden


def layer_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, tuple[Any, ...], dict[str, Any]]:
    """A layer call's hidden states (first argument or `hidden_states=`), and its other arguments."""
    if args:
        return args[0], args[1:], kwargs
    rest = dict(kwargs)
    return rest.pop("hidden_states"), (), rest


def run_from(module: nn.Module, layout: Layout, index: int, hidden: torch.Tensor) -> torch.Tensor:
    """Layers `index`... of the stack and the modules after it, on the hidden states layer `index` takes."""
    def first(output: Any) -> torch.Tensor:
        return output[0] if isinstance(output, tuple) else output

    stack = cast(nn.ModuleList, module.get_submodule(layout.layers))
    for layer in stack[index:]:
        hidden = first(layer(hidden, *layout.layer_args, **dict(layout.layer_kwargs)))
    for path in layout.head:
        hidden = first(module.get_submodule(path)(hidden))
    return hidden


def trace(module: nn.Module, extractor: Any) -> Layout:
    """Run one clip through `module` (eval) and record which modules run before and after its layer
    stack, what it passes its layers, and whether `run_from` then reproduces its output."""
    stack_path, stack = layer_stack(module)
    order: list[str] = []  # module paths as they first run; the stack as stack_path
    calls: list[tuple[torch.Tensor, tuple[Any, ...], dict[str, Any]]] = []  # the first layer's

    def seen(path: str, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if path not in order:
            order.append(path)
        if path == stack_path:
            calls.append(layer_input(args, kwargs))

    watched = {**_beside_the_stack(module, stack_path), stack_path: stack[0]}
    handles = [child.register_forward_pre_hook(functools.partial(seen, path), with_kwargs=True)
               for path, child in watched.items()]
    rate = int(extractor.sampling_rate)
    clip = 0.1 * np.random.default_rng(0).standard_normal(round(TRACE_SECONDS * rate)).astype(np.float32)
    front_end = AudioFrontEnd(extractor, rate, TRACE_SECONDS)
    try:
        with torch.no_grad():
            output = module(**{front_end.input_name: features_of([clip], front_end)}).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    (hidden, args, kwargs), at = calls[0], order.index(stack_path)
    layout = Layout(stack_path, tuple(order[:at]), tuple(order[at + 1:]), args, tuple(kwargs.items()),
                    as_frames(output).shape[-1], exact=False)
    replayable = all(isinstance(value, PLAIN) for value in (*args, *kwargs.values()))
    return dataclasses.replace(layout, exact=replayable and _replays(module, layout, hidden, output))


def _replays(module: nn.Module, layout: Layout, hidden: torch.Tensor, output: torch.Tensor) -> bool:
    """Whether the layers and head, called one by one, give the model's own output."""
    try:
        with torch.no_grad():
            replayed = run_from(module, layout, 0, hidden)
    except (TypeError, ValueError, RuntimeError):  # layers that need more than the hidden states
        return False
    return replayed.shape == output.shape and torch.allclose(replayed, output, atol=1e-5)


class _Reached(Exception):
    """Raised by a pre-hook to stop a forward pass at a layer, carrying that layer's input."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__("forward pass stopped at the cut")
        self.hidden = hidden


@adapter("hf_audio")
class HfAudioBackbone(_AutoModelBackbone):
    """A Hugging Face audio encoder with its own feature extractor; frame states pooled (mean, or
    the first frame)."""

    spec: HfAudioOptions

    def __init__(self, spec: FamilyOptions) -> None:
        from transformers import AutoFeatureExtractor

        super().__init__(spec)
        self.layout: Layout = self.extras["layout"]
        overrides = {"sampling_rate": self.spec.sample_rate} if self.spec.sample_rate else {}
        extractor = AutoFeatureExtractor.from_pretrained(preprocessor_folder(spec, self.weights), **overrides)
        self.front_end = AudioFrontEnd(extractor, int(extractor.sampling_rate), self.spec.max_seconds)

    @classmethod
    def build(cls, spec: FamilyOptions, weights: WeightsSource) -> tuple[nn.Module, dict[str, Any]]:
        from transformers import AutoFeatureExtractor

        module = build_auto_model(spec, weights).eval()
        if getattr(cast(Any, module).config, "enable_fusion", False):
            raise SpecError(f"model.name '{spec.name}' is a fused CLAP model: its feature extractor picks random "
                            "crops, so the same clip would embed differently each time. Fix: use an unfused CLAP "
                            "(e.g. laion/clap-htsat-unfused).")
        extractor = AutoFeatureExtractor.from_pretrained(preprocessor_folder(spec, weights))
        return module, {"layout": trace(module, extractor)}

    @property
    def SPLITS_EXACTLY(self) -> bool:  # type: ignore[override]
        return self.layout.exact

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def preprocessing_id(self) -> str:
        settings = self.front_end.extractor.to_dict()
        kept = {k: v for k, v in sorted(settings.items()) if k not in ("processor_class", "_processor_class")}
        return f"{kept}|rate={self.front_end.sample_rate}|seconds={self.front_end.seconds}|{self.spec.pooling}pool"

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        return extract_clips(inputs, self.front_end)

    def training_preprocess(self, level: str) -> Callable[[Any], Any]:
        if level not in ("none", "light", "standard"):
            raise ValueError(f"augmentation level '{level}': expected none, light or standard")
        return self.preprocess if level == "none" else functools.partial(extract_clips, front_end=self.front_end,
                                                                         augment=level)

    def is_random(self, level: str) -> bool:
        return level != "none"

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self._pool(self._last_hidden_state(batch))

    def _last_hidden_state(self, batch: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.module(**{self.front_end.input_name: batch}).last_hidden_state)

    def _pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The mean over the frames that cover the clip (in Whisper's padded window, its first `share`), or the
        first frame."""
        frames = as_frames(hidden)
        if self.spec.pooling == "cls":
            return frames[:, 0]
        return frames[:, :max(1, math.ceil(frames.shape[1] * self.front_end.share))].mean(1)

    def layer_groups(self) -> list[nn.Module]:
        module, layout = self.module, self.layout
        return transformer_groups(module, self.spec.layer_groups,
                                  layers=cast(nn.ModuleList, module.get_submodule(layout.layers)),
                                  front=[module.get_submodule(path) for path in layout.front],
                                  head=[module.get_submodule(path) for path in layout.head])

    def split_at(self, n_trainable_groups: int) -> tuple[Callable[[Any], Any], Callable[[Any], torch.Tensor]]:
        """The prefix returns the hidden states [n, frames, d] the first trainable layer takes (the
        model's own forward pass, stopped there), or the last hidden state when nothing trains; with
        nothing frozen it is the extracted batch."""
        if not self.SPLITS_EXACTLY:
            return super().split_at(n_trainable_groups)
        groups = self.layer_groups()
        cut = self.frozen_groups(n_trainable_groups)
        if cut == 0:
            return (lambda batch: batch), self.embed
        if cut == len(groups):
            return self._last_hidden_state, self._pool
        stack = cast(nn.ModuleList, self.module.get_submodule(self.layout.layers))
        in_stack = {id(layer) for layer in stack}
        frozen = sum(id(m) in in_stack for group in groups[:cut]
                     for m in (group if isinstance(group, nn.ModuleList) else [group]))
        return (functools.partial(self._hidden_before, frozen),
                lambda hidden: self._pool(run_from(self.module, self.layout, frozen, hidden)))

    def _hidden_before(self, index: int, batch: torch.Tensor) -> torch.Tensor:
        """What the model hands layer `index` of its stack: its own forward pass, stopped there."""
        def stop(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            raise _Reached(layer_input(args, kwargs)[0])

        layer = cast(nn.ModuleList, self.module.get_submodule(self.layout.layers))[index]
        handle = layer.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self._last_hidden_state(batch)
        except _Reached as reached:
            return reached.hidden
        finally:
            handle.remove()
        raise AssertionError(f"{self.spec.name}: the forward pass never reached layer {index}")
