import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from tasks.config.families import model_spec
from tasks.config.spec import ModelSpec
from tasks.models.backbones import backbone_cache_key
from tasks.models.features import EmbeddingCache, cached_embeddings


@dataclass
class FakeBackbone:
    """Only what the cache key and the cached extraction read; counts what it embeds."""

    spec: ModelSpec
    weights_sha256: str = "w1"
    preprocessing_id: str = "resize73-crop64"
    dim: int = 3
    embedded: int = 0
    module: Any = field(default_factory=lambda: torch.nn.Linear(1, 1))  # where it runs: the cache key's device

    def preprocess(self, inputs):
        return inputs

    def embed(self, batch):
        import torch

        self.embedded += len(batch)
        return torch.tensor([[float(len(text)), 1.0, 2.0] for text in batch])


MOBILENET = model_spec(dict(family="torchvision", name="mobilenet_v2", image_size=64))


def test_cache_key_changes_with_weights_preprocessing_and_model():
    base = backbone_cache_key(FakeBackbone(MOBILENET))
    assert backbone_cache_key(FakeBackbone(MOBILENET)) == base
    assert backbone_cache_key(FakeBackbone(MOBILENET, weights_sha256="w2")) != base
    assert backbone_cache_key(FakeBackbone(MOBILENET, preprocessing_id="resize256-crop224")) != base
    other = model_spec(dict(family="timm", name="tf_efficientnet_lite0", image_size=64))
    assert backbone_cache_key(FakeBackbone(other)) != base


def test_cache_key_changes_with_the_device_class_and_precision():
    """bf16 GPU embeddings never mix with fp32 CPU ones. With no GPU here, a module on PyTorch's
    `meta` device stands for "another device": the key must differ from the CPU one."""
    from tasks.models.devices import embedding_precision

    assert embedding_precision(torch.device("cpu")) == "cpu-fp32"
    elsewhere = FakeBackbone(MOBILENET, module=torch.nn.Linear(1, 1, device="meta"))
    assert backbone_cache_key(elsewhere) != backbone_cache_key(FakeBackbone(MOBILENET))


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


def test_an_unreadable_id_list_from_an_older_version_is_a_cache_miss(tmp_path):
    backbone = FakeBackbone(MOBILENET)
    first, _ = cached_embeddings(EmbeddingCache(tmp_path, "key"), backbone, ["a", "b"], ["x", "yy"], 2)
    (ids_file,) = (tmp_path / "key").glob("*.ids.json")
    ids_file.write_text('["a", "b')  # truncated by a crash mid-write
    (tmp_path / "key" / "other.ids.json").write_bytes(b"\xff\xfe")  # not even UTF-8
    (tmp_path / "key" / "other.npy").write_bytes(b"")
    cache = EmbeddingCache(tmp_path, "key")
    assert cache.missing(["a", "b"]) == ["a", "b"]
    again, computed = cached_embeddings(cache, backbone, ["a", "b"], ["x", "yy"], 2)
    assert computed == 2 and json.loads(ids_file.read_text()) == ["a", "b"]  # rewritten whole
    np.testing.assert_array_equal(again, first)
    assert EmbeddingCache(tmp_path, "key").missing(["a", "b"]) == []


def test_a_shard_whose_array_write_fails_leaves_nothing_behind(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path, "key")

    def crash(handle, array):
        handle.write(b"\x93NUMPY half")
        raise OSError("disk full")

    monkeypatch.setattr("tasks.models.features.np.save", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put(["a"], np.ones((1, 3)))
    assert list((tmp_path / "key").iterdir()) == []
    assert EmbeddingCache(tmp_path, "key").missing(["a"]) == ["a"]


def test_decoding_in_worker_processes_gives_the_same_embeddings_in_input_order(tmp_path):
    """Extraction decodes through a DataLoader; with workers the batches come back in input order."""
    import torch

    from tasks.models.backbones import load_backbone
    from tasks.models.features import embed_inputs
    from tests.unit.models.test_backbones import sample_inputs

    backbone = load_backbone(model_spec(dict(family="torchvision", name="mobilenet_v2", image_size=32)))
    inputs = [path for _ in range(3) for path in sample_inputs("image", tmp_path)][::-1]  # 6 images, 2 kinds
    in_process = embed_inputs(backbone, inputs, batch_size=2)
    with torch.no_grad():
        direct = backbone.embed(backbone.preprocess(inputs)).numpy()
    assert np.allclose(in_process, direct, atol=1e-5)
    assert np.array_equal(embed_inputs(backbone, inputs, batch_size=2, num_workers=2), in_process)
