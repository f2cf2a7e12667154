"""Random states captured with a checkpoint and put back on resume, so a resumed run continues
the same random sequence as an uninterrupted one."""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The random states a resumed run needs to continue the same sequence: torch (CPU, and CUDA
    when present), numpy's and Python's global generators, and any named torch generators (e.g.
    the one that shuffles batches). Stored as tensors and plain values (weights_only-safe)."""
    kind, keys, position, has_gauss, cached_gaussian = cast(tuple[str, np.ndarray, int, int, float],
                                                             np.random.get_state(legacy=True))
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "generators": {name: generator.get_state() for name, generator in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Put back what `capture_rng` captured (CUDA only where it was captured and is present)."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["position"],
                         saved["has_gauss"], saved["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(int(x) for x in python["internal"].tolist()), python["gauss_next"]))
    for name, generator in (generators or {}).items():
        generator.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
