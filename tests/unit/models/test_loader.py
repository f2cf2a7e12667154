"""tasks.models.loader.Batches serves exactly the batches of the original in-memory class (same order
for the same generator, same content), with or without decoding workers."""

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from tasks.models.loader import Batches


def reference_batches(inputs: Any, targets: torch.Tensor, batch_size: int, prepare: Any,
                      generator: torch.Generator | None) -> Iterator[tuple[Any, torch.Tensor]]:
    """The loop `tasks.training.fit.Batches` ran before this module (kept here as the specification)."""
    order = torch.randperm(len(targets), generator=generator) if generator else torch.arange(len(targets))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        chunk = inputs[index] if isinstance(inputs, torch.Tensor) else [inputs[i] for i in index.tolist()]
        yield prepare(chunk), targets[index]


def decode(texts: list[str]) -> dict[str, torch.Tensor]:
    """A stand-in for a tokenizer: a dict of tensors, like the text backbones' batches."""
    values = torch.tensor([[float(t.split("-")[1].rstrip("x")), len(t)] for t in texts])
    return {"values": values, "mask": torch.ones(len(texts), 2, dtype=torch.long)}


def assert_same(actual: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert torch.equal(actual[key], expected[key])
    else:
        assert torch.equal(actual, expected)


def epochs(batches: Batches, seed: int | None, count: int = 2) -> list[list[tuple[Any, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return [list(batches.iterate(generator)) for _ in range(count)]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("seed", [None, 7])
def test_raw_inputs_give_the_same_batches_as_before(num_workers, seed):
    texts = [f"example-{i}" + "x" * (i % 5) for i in range(23)]
    targets = torch.arange(23) % 3
    batches = Batches(texts, targets, 5, decode, num_workers=num_workers)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    expected = [list(reference_batches(texts, targets, 5, decode, generator)) for _ in range(2)]
    actual = epochs(batches, seed)
    assert len(batches) == 5
    for epoch_actual, epoch_expected in zip(actual, expected, strict=True):
        assert len(epoch_actual) == len(epoch_expected)
        for (batch, batch_targets), (want, want_targets) in zip(epoch_actual, epoch_expected, strict=True):
            assert_same(batch, want)
            assert torch.equal(batch_targets, want_targets)
    if seed is not None:
        first, second = (torch.cat([t for _, t in epoch]) for epoch in actual)
        assert not torch.equal(first, second)  # each epoch reshuffles


def test_tensor_inputs_are_sliced_directly_in_the_same_order():
    features = torch.randn(10, 4)
    targets = torch.arange(10)
    batches = Batches(features, targets, 3, lambda x: x * 2)
    generator = torch.Generator().manual_seed(3)
    expected = list(reference_batches(features, targets, 3, lambda x: x * 2, generator))
    actual = list(batches.iterate(torch.Generator().manual_seed(3)))
    assert batches._loader is None  # no DataLoader for a tensor
    for (batch, batch_targets), (want, want_targets) in zip(actual, expected, strict=True):
        assert torch.equal(batch, want) and torch.equal(batch_targets, want_targets)


def test_decoding_leaves_the_global_random_stream_alone():
    """Dropout and augmentation draw from the global RNG: the loader must not consume it."""
    batches = Batches([f"example-{i}" for i in range(8)], torch.arange(8), 3, decode)
    torch.manual_seed(0)
    list(batches.iterate(torch.Generator().manual_seed(1)))
    after_loader = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after_loader)


def test_both_batch_sources_satisfy_the_protocol_fit_can_take():
    from tasks.models.loader import Minibatches
    from tasks.training.prefix_cache import PrefixBatches, PrefixOutputs

    sources: list[Minibatches] = [
        Batches(torch.zeros(3, 2), torch.arange(3), 2),
        PrefixBatches(PrefixOutputs({"features": torch.zeros(3, 2).numpy()}, [], True), torch.arange(3), 2)]
    for source in sources:
        assert len(source) == 2 and [len(t) for _, t in source.iterate()] == [2, 1]
