"""Where training runs (`runtime.device`, `runtime.num_workers`) and the few moves that depend on it.

The rest of the code stays device-agnostic: it asks for a device once, moves the model with
`prepare_module`, each batch with `to_device`, and wraps forward passes in `autocast(device)`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tasks.core.errors import SpecError

AVAILABLE = {
    "cuda": lambda: torch.cuda.is_available(),
    "mps": lambda: torch.backends.mps.is_available(),
}
FIXES = {
    "cuda": "install a CUDA build of torch on a machine with an NVIDIA GPU",
    "mps": "run on Apple silicon with macOS 12.3 or later",
}


def resolve_device(requested: str) -> torch.device:
    """`auto`: CUDA when present, else Apple MPS when present, else CPU. A device asked for by
    name that this machine lacks is the config's mistake, not a silent fallback to a slower one."""
    if requested == "auto":
        return torch.device(next((kind for kind, present in AVAILABLE.items() if present()), "cpu"))
    if requested in AVAILABLE and not AVAILABLE[requested]():
        if os.environ.get("TRANSFERFLOW_DEVICE", "").strip() == requested:  # the environment beat the config
            raise SpecError(f"TRANSFERFLOW_DEVICE is '{requested}', but this machine has no {requested} device "
                            f"(torch {torch.__version__}). Fix: unset TRANSFERFLOW_DEVICE or set it to auto (or "
                            f"cpu) for this machine's jobs, or {FIXES[requested]}.")
        raise SpecError(f"runtime.device is '{requested}', but this machine has no {requested} device "
                        f"(torch {torch.__version__}). Fix: set `runtime.device: auto` (or cpu), or "
                        f"{FIXES[requested]}.")
    return torch.device(requested)


def resolve_num_workers(requested: int | str, cpu_count: int | None = None) -> int:
    """DataLoader processes that decode inputs while the model computes.

    `auto` is 0 on 2 cores or fewer: there the model already uses both cores, and worker processes
    forked from a large heap pay copy-on-write faults, so decoding in the main process measured
    fastest (STACK.md). On bigger machines, one core stays with the main process and at most 8
    decode: past that, image decoding is rarely the bottleneck and each worker costs memory.
    """
    if requested != "auto":
        return int(requested)
    cores = cpu_count if cpu_count is not None else _usable_cores()
    return 0 if cores <= 2 else min(8, cores - 1)


def _usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA GPUs that support it (about twice the matmul throughput, and bf16
    keeps float32's range, so no loss scaling); full precision everywhere else, where CPU and MPS
    autocast is slower or less reliable than float32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def embedding_precision(device: torch.device) -> str:
    """The device class and precision `autocast` gives embeddings there: cuda-bf16, cpu-fp32, ..."""
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return f"{device.type}-{'bf16' if bf16 else 'fp32'}"


def to_device(batch: Any, device: torch.device) -> Any:
    """A tensor, or a dict of tensors (a tokenizer's output), on `device`. Pinned tensors copy
    asynchronously, so the next batch's transfer overlaps this batch's compute."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=batch.is_pinned())
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    raise TypeError(f"to_device takes a tensor or a dict of tensors, not {type(batch).__name__}")


def prepare_module(module: nn.Module, device: torch.device, convnet: bool) -> nn.Module:
    """`module` moved to `device` in place; convnets in channels_last, which roughly halves CPU
    convolution time (STACK.md) and is what GPU tensor cores expect."""
    module.to(device)
    if convnet:
        module.to(memory_format=torch.channels_last)
    return module


def on_runtime_device(setting: str, backbone: Any, module: torch.nn.Module | None = None) -> torch.device:
    """Move `module` (default: the backbone's encoder) to the device `runtime.device` names,
    channels_last for convnets; returns the device."""
    from tasks.models.backbones import ImageBackbone

    device = resolve_device(setting)
    prepare_module(module or backbone.module, device, convnet=isinstance(backbone, ImageBackbone))
    return device
