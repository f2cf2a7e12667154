"""The frozen prefix of a fine-tuning stage, computed once per stage instead of once per epoch.

While a stage trains the last k layer groups, the groups before them are frozen, and without
random augmentation their output for an example never changes. So the stage runs that prefix
once over each split (eval mode, inference mode, the deterministic preprocessing), and every epoch
pays only for the trainable suffix: `SuffixClassifier` is the classifier from the cut onwards,
`PrefixBatches` serves the stored outputs like `tasks.models.loader.Batches` serves inputs.

Outputs stay in RAM within a memory budget; past it they are written once as memory-mapped .npy
files under the caller's cache folder, keyed by the backbone (model, weights, preprocessing), the
number of frozen groups, a digest of the prefix's own weights (a group fine-tuned by an earlier
stage changes its output) and the example ids in order, so a later run with the same key reads
them back. Texts keep hidden states padded to the split's longest example with their attention
mask; each batch is trimmed to its own longest example, as the tokenizer would have padded it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tasks.core.atomic import atomic_output
from tasks.core.hashing import sha256_text
from tasks.models.backbones import Backbone, backbone_cache_key
from tasks.models.devices import autocast, to_device
from tasks.models.loader import index_chunks, pinned

if TYPE_CHECKING:
    from tasks.models.classifier import Classifier

# Per split. Past it, outputs go to disk: MiniLM's hidden states for 5,000 texts of 64 tokens are
# ~0.5 GB, MobileNetV2's at 224 px with one group trainable ~75 KB an image.
DEFAULT_MEMORY_BUDGET = 1 << 30


def can_cache_prefix(backbone: Backbone, augment: str, n_trainable_groups: int) -> bool:
    """The cache is exact only when the model can be cut between its groups, the prefix's input is
    the same every epoch (no random augmentation) and something is frozen."""
    return (backbone.SPLITS_EXACTLY and not backbone.is_random(augment)
            and backbone.frozen_groups(n_trainable_groups) > 0)


@dataclass
class PrefixOutputs:
    """The frozen prefix's outputs for a split's examples, in input order.

    `arrays` holds "features" [n, c, h, w] (images) or "hidden_states" [n, length, d] with
    "attention_mask" [n, length] (texts), as in-RAM arrays or memory-maps of `files`."""

    arrays: dict[str, np.ndarray]
    files: list[Path]      # the memory-mapped .npy files; empty when in RAM
    computed: bool         # False when read back from an earlier run's files

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def batch(self, index: torch.Tensor) -> Any:
        """The rows at `index` as the suffix takes them: channels_last maps, or trimmed token states."""
        rows = index.numpy()
        if "features" in self.arrays:
            features = torch.from_numpy(np.ascontiguousarray(self.arrays["features"][rows]))
            return features.contiguous(memory_format=torch.channels_last) if features.dim() == 4 else features
        mask = np.ascontiguousarray(self.arrays["attention_mask"][rows])
        length = int(np.flatnonzero(mask.any(axis=0)).max()) + 1
        return {"hidden_states": torch.from_numpy(np.ascontiguousarray(self.arrays["hidden_states"][rows, :length])),
                "attention_mask": torch.from_numpy(np.ascontiguousarray(mask[:, :length]))}


@dataclass
class PrefixBatches:
    """`tasks.models.loader.Batches` over stored prefix outputs: same length, same order for the same
    generator, same targets, so a stage's results do not depend on whether the cache was used."""

    outputs: PrefixOutputs
    targets: torch.Tensor
    batch_size: int
    pin_memory: bool = False

    def __len__(self) -> int:
        return (len(self.targets) + self.batch_size - 1) // self.batch_size

    def iterate(self, generator: torch.Generator | None = None) -> Iterator[tuple[Any, torch.Tensor]]:
        for index in index_chunks(len(self.targets), self.batch_size, generator):
            yield pinned(self.outputs.batch(index), self.pin_memory), self.targets[index]


class SuffixClassifier(nn.Module):
    """`classifier` from the cut on: prefix outputs -> logits. It holds the classifier itself (no
    copy), so training it trains the classifier, and the classifier's state_dict has the result."""

    def __init__(self, classifier: Classifier, n_trainable_groups: int) -> None:
        super().__init__()
        self.classifier = classifier
        _, self.suffix = classifier.backbone.split_at(n_trainable_groups)

    def forward(self, prefix_batch: Any) -> torch.Tensor:
        return self.classifier.head(self.suffix(prefix_batch))


def compute_prefix_outputs(backbone: Backbone, ids: list[str], inputs: list[Any], n_trainable_groups: int, *,
                           batch_size: int, cache_dir: Path,
                           memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET) -> PrefixOutputs:
    """Run the frozen prefix over `inputs` (whose example ids are `ids`) once, on the backbone's
    device; in RAM when the outputs fit `memory_budget_bytes`, else memory-mapped under `cache_dir`."""
    cut = backbone.frozen_groups(n_trainable_groups)
    if cut == 0 or not inputs:
        raise ValueError(f"nothing to cache: {cut} frozen layer groups, {len(inputs)} inputs")
    stem = cache_dir / backbone_cache_key(backbone) / f"frozen{cut}-{_content_key(backbone, cut, ids)}"
    stored = _read_stored(stem)
    if stored is not None:
        return stored
    prefix, _ = backbone.split_at(n_trainable_groups)
    device = next(backbone.module.parameters()).device
    with _eval_mode(backbone.module), torch.inference_mode(), autocast(device):
        batches, length = _preprocessed(backbone, inputs, batch_size)
        outputs = (_as_arrays(prefix(to_device(batch, device))) for batch in batches)
        first = next(outputs)
        shapes = {name: (len(inputs), *_row_shape(array, length)) for name, array in first.items()}
        size = sum(math.prod(shape) * first[name].itemsize for name, shape in shapes.items())
        if size <= memory_budget_bytes:
            arrays = {name: np.zeros(shape, first[name].dtype) for name, shape in shapes.items()}
            _fill(arrays, first, outputs)
            return PrefixOutputs(arrays, [], True)
        with contextlib.ExitStack() as files:  # each file appears complete, or not at all
            temporary = {name: files.enter_context(atomic_output(_file(stem, name))) for name in shapes}
            maps = {name: np.lib.format.open_memmap(temporary[name], mode="w+", dtype=first[name].dtype,
                                                    shape=shape) for name, shape in shapes.items()}
            _fill(maps, first, outputs)
            for memory_map in maps.values():
                memory_map.flush()
    stored = _read_stored(stem, computed=True)
    assert stored is not None, f"prefix outputs written to {stem} cannot be read back"
    return stored


def _preprocessed(backbone: Backbone, inputs: list[Any], batch_size: int) -> tuple[Iterable[Any], int | None]:
    """The deterministic preprocessing, batch by batch (lazily: decoding images is the cost), and
    for token batches the split's longest example, which sets the stored length."""
    batches = (backbone.preprocess(inputs[start:start + batch_size]) for start in range(0, len(inputs), batch_size))
    first = next(batches)
    if not isinstance(first, dict):
        return itertools.chain([first], batches), None
    tokenized = [first, *batches]
    return tokenized, max(batch["attention_mask"].shape[1] for batch in tokenized)


def _as_arrays(output: Any) -> dict[str, np.ndarray]:
    if isinstance(output, dict):
        return {"hidden_states": output["hidden_states"].float().cpu().numpy(),
                "attention_mask": output["attention_mask"].cpu().numpy()}
    return {"features": output.float().contiguous().cpu().numpy()}


def _row_shape(array: np.ndarray, length: int | None) -> tuple[int, ...]:
    """One example's stored shape: token arrays are padded to the split's longest example."""
    return tuple(array.shape[1:]) if length is None else (length, *array.shape[2:])


def _fill(arrays: Mapping[str, np.ndarray], first: dict[str, np.ndarray],
          rest: Iterable[dict[str, np.ndarray]]) -> None:
    """Write the batches in order; shorter token batches leave zeros (masked) behind their ends."""
    start = 0
    for batch in itertools.chain([first], rest):
        count = len(next(iter(batch.values())))
        for name, values in batch.items():
            arrays[name][start:start + count, :values.shape[1]] = values
        start += count


def _file(stem: Path, name: str) -> Path:
    return stem.with_name(f"{stem.name}.{name}.npy")


def _read_stored(stem: Path, computed: bool = False) -> PrefixOutputs | None:
    """Outputs an earlier call wrote under `stem`, memory-mapped, or None when there are none."""
    for names in (["features"], ["hidden_states", "attention_mask"]):
        files = [_file(stem, name) for name in names]
        if all(path.exists() for path in files):
            return PrefixOutputs({name: np.load(path, mmap_mode="r") for name, path in zip(names, files, strict=True)},
                                 files, computed)
    return None


def _content_key(backbone: Backbone, cut: int, ids: list[str]) -> str:
    """The frozen groups' exact weights and the examples in order (the backbone key is the folder)."""
    digest = hashlib.sha256()
    for group in backbone.layer_groups()[:cut]:
        for name, tensor in group.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha256_text(digest.hexdigest() + "\n" + "\n".join(ids))[:24]


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the prefix pass (no dropout, BatchNorm's running statistics), then each
    submodule's mode as it was."""
    modes = {layer: layer.training for layer in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for layer, training in modes.items():
            layer.training = training
