from dataclasses import dataclass

import numpy as np

from tasks.backbones import backbone_cache_key
from tasks.features import EmbeddingCache, cached_embeddings
from tasks.spec import ModelSpec


@dataclass
class FakeBackbone:
    """Only what the cache key and the cached extraction read; counts what it embeds."""

    spec: ModelSpec
    weights_sha256: str = "w1"
    preprocessing_id: str = "resize73-crop64"
    dim: int = 3
    embedded: int = 0

    def preprocess(self, inputs):
        return inputs

    def embed(self, batch):
        import torch

        self.embedded += len(batch)
        return torch.tensor([[float(len(text)), 1.0, 2.0] for text in batch])


MOBILENET = ModelSpec(family="torchvision", name="mobilenet_v2", image_size=64)


def test_cache_key_changes_with_weights_preprocessing_and_model():
    base = backbone_cache_key(FakeBackbone(MOBILENET))
    assert backbone_cache_key(FakeBackbone(MOBILENET)) == base
    assert backbone_cache_key(FakeBackbone(MOBILENET, weights_sha256="w2")) != base
    assert backbone_cache_key(FakeBackbone(MOBILENET, preprocessing_id="resize256-crop224")) != base
    other = ModelSpec(family="timm", name="tf_efficientnet_lite0", image_size=64)
    assert backbone_cache_key(FakeBackbone(other)) != base


def test_embeddings_are_computed_once_and_reused_across_cache_instances(tmp_path):
    backbone = FakeBackbone(MOBILENET)
    ids, texts = ["a", "b", "c"], ["x", "yy", "zzz"]
    first, computed = cached_embeddings(EmbeddingCache(tmp_path, "key"), backbone, ids, texts, 2)
    assert computed == 3 and backbone.embedded == 3
    reopened = EmbeddingCache(tmp_path, "key")
    second, computed = cached_embeddings(reopened, backbone, ["c", "a", "d"], ["zzz", "x", "wwww"], 2)
    assert computed == 1 and backbone.embedded == 4
    np.testing.assert_array_equal(second[0], first[2])
    np.testing.assert_array_equal(second[2], [4.0, 1.0, 2.0])
    assert reopened.missing(["a", "b", "c", "d", "e"]) == ["e"]
    assert EmbeddingCache(tmp_path, "other-key").missing(["a"]) == ["a"]
