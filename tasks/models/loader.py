"""Inputs and targets served in minibatches, decoded in worker processes when there are cores for it.

The order of examples is the one contract: `iterate(generator)` visits `torch.randperm(n, generator)`
in chunks of `batch_size` (input order without a generator), whatever the number of workers, so a
seed gives the same batches, and the same results, on a laptop and on a GPU box.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class Minibatches(Protocol):
    """What the training loop needs from a source of batches: `Batches` here, and
    `tasks.training.prefix_cache.PrefixBatches` for stored frozen-prefix outputs."""

    targets: torch.Tensor

    def __len__(self) -> int: ...

    def iterate(self, generator: torch.Generator | None = None) -> Iterator[tuple[Any, torch.Tensor]]: ...


def index_chunks(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Example positions for each batch of an epoch: shuffled by `generator`, in order without one."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


class _Listed(Dataset[Any]):
    """Raw inputs by position; decoding happens in `collate_fn`, one call per batch."""

    def __init__(self, inputs: Sequence[Any]) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> Any:
        return self.inputs[index]


class _EpochChunks(Sampler[list[int]]):
    """A batch sampler that serves whatever chunks the current epoch set (the DataLoader reads it
    in the main process, so persistent workers see each epoch's order)."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.chunks)


@dataclass
class Batches:
    """Inputs and targets served in minibatches; `prepare` turns a list of raw inputs (or a slice
    of a tensor) into a model batch.

    Raw inputs (a list of paths, image bytes or texts) are decoded through a DataLoader: with
    `num_workers` > 0, worker processes run `prepare` ahead of the model, and stay alive across
    epochs (re-forking them each epoch from a large heap cost more than it saved, STACK.md).
    A tensor (cached embeddings or prefix outputs) is sliced directly: there is nothing to decode.
    `pin_memory` pins each batch so `tasks.models.devices.to_device` copies it to the GPU asynchronously.
    """

    inputs: Sequence[Any] | torch.Tensor
    targets: torch.Tensor
    batch_size: int
    prepare: Callable[[Any], Any] = lambda x: x
    num_workers: int = 0
    pin_memory: bool = False
    _loader: DataLoader[Any] | None = field(default=None, init=False, repr=False)
    _chunks: _EpochChunks = field(default_factory=_EpochChunks, init=False, repr=False)

    def __len__(self) -> int:
        return (len(self.targets) + self.batch_size - 1) // self.batch_size

    def iterate(self, generator: torch.Generator | None = None) -> Iterator[tuple[Any, torch.Tensor]]:
        chunks = index_chunks(len(self.targets), self.batch_size, generator)
        if isinstance(self.inputs, torch.Tensor):
            for index in chunks:
                yield pinned(self.prepare(self.inputs[index]), self.pin_memory), self.targets[index]
            return
        self._chunks.chunks = [index.tolist() for index in chunks]
        for batch, index in zip(self._decoding_loader(self.inputs), chunks, strict=True):
            yield batch, self.targets[index]

    def _decoding_loader(self, inputs: Sequence[Any]) -> DataLoader[Any]:
        """One DataLoader for all epochs; the batch sampler serves the current epoch's chunks."""
        if self._loader is None:
            self._loader = DataLoader(
                _Listed(inputs), batch_sampler=self._chunks, collate_fn=self.prepare,
                num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                pin_memory=self.pin_memory and torch.cuda.is_available(),
                # Its own generator for the workers' base seed: without one, the DataLoader draws
                # it from the global RNG, which would shift dropout and every later random draw.
                generator=torch.Generator().manual_seed(0))
        return self._loader


def pinned(batch: Any, pin_memory: bool) -> Any:
    """A tensor or dict of tensors in page-locked memory when asked for and a CUDA GPU is present."""
    if not (pin_memory and torch.cuda.is_available()):
        return batch
    if isinstance(batch, dict):
        return {key: value.pin_memory() for key, value in batch.items()}
    return batch.pin_memory()
