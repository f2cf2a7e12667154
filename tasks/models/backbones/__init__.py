"""Base models: one adapter per family (`tasks/models/backbones/<family>_models.py`, registered with
`@adapter`), behind the Backbone contract in `base.py`; weights are located and checked in
`weights.py`. Import from here."""

from tasks.core.errors import WeightsError
from tasks.models.backbones.base import (
    ADAPTERS,
    Backbone,
    EvalGeometry,
    ImageBackbone,
    adapter,
    adapter_for,
    augmenting_transform,
    backbone_cache_key,
    clear_pristine_cache,
    load_backbone,
    locate_weights,
    pristine,
)
from tasks.models.backbones.weights import PinnedWeights, WeightsSource, file_sha256, network_allowed, seed_torch_hub

__all__ = [
    "ADAPTERS", "Backbone", "EvalGeometry", "ImageBackbone", "PinnedWeights", "WeightsError", "WeightsSource",
    "adapter", "adapter_for", "augmenting_transform", "backbone_cache_key", "clear_pristine_cache", "file_sha256",
    "load_backbone", "locate_weights", "network_allowed", "pristine", "seed_torch_hub",
]
