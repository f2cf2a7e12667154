"""Device choice without a GPU: `auto` prefers CUDA, then MPS, then CPU; a named device that is
absent is a config error naming the field and the fix; batches and modules move as expected."""

import pytest
import torch
from torch import nn

from tasks.core.errors import SpecError
from tasks.models.devices import autocast, prepare_module, resolve_device, resolve_num_workers, to_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend which accelerators this machine has."""
    def pretend(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return pretend


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda, mps)
    assert resolve_device("auto") == torch.device(expected)


@pytest.mark.parametrize("requested", ["cuda", "mps"])
def test_an_absent_device_asked_for_by_name_is_a_spec_error_with_the_fix(machine, requested):
    machine(False, False)
    with pytest.raises(SpecError) as refused:
        resolve_device(requested)
    message = str(refused.value)
    assert "runtime.device" in message and f"'{requested}'" in message and "Fix: set `runtime.device: auto`" in message


def test_a_present_or_cpu_device_is_returned_as_named(machine):
    machine(True, False)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("cores,expected", [(1, 0), (2, 0), (4, 3), (16, 8)])
def test_auto_workers_stay_in_the_main_process_on_small_machines(cores, expected):
    assert resolve_num_workers("auto", cpu_count=cores) == expected


def test_a_number_of_workers_is_kept():
    assert resolve_num_workers(3, cpu_count=2) == 3
    assert resolve_num_workers("auto") >= 0  # this machine's own cores


def test_autocast_changes_nothing_on_cpu():
    layer = nn.Linear(4, 2)
    with autocast(torch.device("cpu")):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_batches_and_modules_move_with_their_layout():
    cpu = torch.device("cpu")
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    moved = to_device(batch, cpu)
    assert moved.keys() == batch.keys() and all(torch.equal(moved[k], batch[k]) for k in batch)
    assert to_device(torch.zeros(2), cpu).device == cpu
    with pytest.raises(TypeError, match="tensor or a dict of tensors"):
        to_device([torch.zeros(2)], cpu)
    convnet = prepare_module(nn.Conv2d(3, 4, 3), cpu, convnet=True)
    assert convnet.weight.is_contiguous(memory_format=torch.channels_last)
    linear = prepare_module(nn.Linear(3, 4), cpu, convnet=False)
    assert linear.weight.is_contiguous()


def test_a_served_model_follows_transferflow_device(monkeypatch):
    from tasks.registry.serving import serving_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("TRANSFERFLOW_DEVICE", raising=False)
    assert serving_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert serving_device() == torch.device("cuda")  # auto takes the GPU when there is one
    monkeypatch.setenv("TRANSFERFLOW_DEVICE", "cpu")
    assert serving_device() == torch.device("cpu")
