"""Frozen-backbone embeddings, computed once and cached on disk.

The cache is content-addressed: a folder per backbone key (model + weights hash + preprocessing)
and, inside it, shards of embeddings named by the hash of the example ids they hold. Shards are
read memory-mapped, so a second run on the same data reads instead of recomputing, and any
example already embedded by an earlier run (another split, another config) is reused.
Both files of a shard are written atomically, the array first: an id list only ever points at a
complete shard, and an id list that cannot be read (left by an older version) is a cache miss.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks.core.atomic import write_atomic, write_text_atomic
from tasks.core.hashing import sha256_text
from tasks.models.backbones import Backbone, backbone_cache_key


class EmbeddingCache:
    """Embeddings of one backbone, keyed by example id."""

    def __init__(self, root: Path, backbone_key: str, read_index: bool = True) -> None:
        """`read_index=False`: a writer that never reads the shards already there (each costs a file
        read), for a task that only adds the embeddings it was given to compute."""
        self.folder = root / backbone_key
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, tuple[Path, int]] = {}
        for ids_file in sorted(self.folder.glob("*.ids.json")) if read_index else []:
            shard = ids_file.with_name(ids_file.name.removesuffix(".ids.json") + ".npy")
            ids = _read_ids(ids_file)
            if shard.exists() and ids is not None:
                for row, example_id in enumerate(ids):
                    self._index[example_id] = (shard, row)

    def missing(self, ids: list[str]) -> list[str]:
        return [i for i in dict.fromkeys(ids) if i not in self._index]

    def get(self, ids: list[str]) -> np.ndarray:
        """Embeddings in the order of `ids` (all must be cached)."""
        shards: dict[Path, np.ndarray] = {}
        rows = []
        for example_id in ids:
            shard, row = self._index[example_id]
            if shard not in shards:
                shards[shard] = np.load(shard, mmap_mode="r")
            rows.append(shards[shard][row])
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)

    def put(self, ids: list[str], embeddings: np.ndarray) -> None:
        if len(ids) != len(embeddings):  # a shard whose rows and ids disagree would poison every later read
            raise ValueError(f"{len(ids)} example ids but {len(embeddings)} embeddings: nothing was cached")
        name = sha256_text("\n".join(ids))[:24]
        array = embeddings.astype(np.float32)
        shard = write_atomic(self.folder / f"{name}.npy", lambda handle: np.save(handle, array))
        write_text_atomic(self.folder / f"{name}.ids.json", json.dumps(ids))
        for row, example_id in enumerate(ids):
            self._index[example_id] = (shard, row)


def _read_ids(ids_file: Path) -> list[str] | None:
    """A shard's example ids, or None when the file is truncated or unreadable."""
    try:
        ids = json.loads(ids_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return ids if isinstance(ids, list) and all(isinstance(i, str) for i in ids) else None


def open_cache(workdir: Path, backbone: Backbone, read_index: bool = True) -> EmbeddingCache:
    return EmbeddingCache(workdir / "embeddings", backbone_cache_key(backbone), read_index)


def embed_inputs(backbone: Backbone, inputs: list[str], batch_size: int, num_workers: int = 0) -> np.ndarray:
    """Run the frozen backbone over raw inputs in batches, with a progress bar, on the device its
    module is on (bf16 autocast on CUDA). Inputs are decoded by a DataLoader: with `num_workers`
    > 0 in worker processes ahead of the model, so decoding is not the bottleneck on more cores."""
    from tasks.models.devices import autocast, to_device
    from tasks.models.loader import Batches

    weight = next(backbone.module.parameters(), None) if hasattr(backbone, "module") else None
    device = weight.device if weight is not None else torch.device("cpu")  # a classic family has no weights
    batches = Batches(inputs, torch.zeros(len(inputs), dtype=torch.long), batch_size, backbone.preprocess,
                      num_workers=num_workers if len(inputs) > batch_size else 0, pin_memory=device.type == "cuda")
    outputs = []
    with torch.inference_mode(), autocast(device):
        for batch, _ in tqdm(batches.iterate(), total=len(batches), desc="embedding", unit="batch"):
            batch = to_device(batch, device) if device.type != "cpu" else batch
            outputs.append(backbone.embed(batch).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, backbone.dim), np.float32)


def cached_embeddings(cache: EmbeddingCache, backbone: Backbone, ids: list[str], inputs: list[str],
                      batch_size: int, num_workers: int = 0) -> tuple[np.ndarray, int]:
    """Embeddings for `ids` and how many had to be computed (the rest came from the cache)."""
    input_of = dict(zip(ids, inputs, strict=True))
    missing = cache.missing(ids)
    if missing:
        cache.put(missing, embed_inputs(backbone, [input_of[i] for i in missing], batch_size, num_workers))
    return cache.get(ids), len(missing)
