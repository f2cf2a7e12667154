"""Shared test set-up: quiet, offline runtime settings and access to the real shared datasets.

Real datasets live in ../shared/datasets (never copied into the repo). A missing dataset skips
its tests with the reason, except under CI (CI=true), where it is a failure.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="transferflow-prefect-"))
from flows.runtime import apply_defaults  # noqa: E402  (settings must precede Prefect's import)

apply_defaults()


# The longest test files (module fixtures that run several flows), started first: with
# `--dist loadfile` each worker takes the next file in collection order, so a long file left for
# last would run alone while the other worker idles.
LONGEST_FIRST = ("test_dask_runner.py", "test_shared_split_history.py", "test_concurrent_retrains.py",
                 "test_all_or_nothing.py", "test_drift_flow.py", "test_team_servers.py", "test_image_flow.py",
                 "test_work_pool_worker.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.exists():
        reason = f"shared dataset {path} is absent (tests use small slices of ../shared/datasets)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)
    return path


@pytest.fixture
def hymenoptera() -> Path:
    return shared_dataset("hymenoptera")


@pytest.fixture
def sms_spam() -> Path:
    return shared_dataset("sms_spam") / "sms_spam.csv"


@pytest.fixture
def banking77() -> Path:
    return shared_dataset("banking77")


def write_config(folder: Path, body: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(body)
    return path


def small_image(size: tuple[int, int], colour: tuple[int, int, int]):
    """A small test image of mean colour `colour`: a random texture (seeded by size and colour, so
    equal arguments give equal images) around it, as a photo has. Never one colour throughout (a
    constant image is quarantined as a placeholder), and images of different colours are distinct
    images, not near-copies of one flat picture that the split would keep together."""
    import numpy as np
    from PIL import Image

    width, height = size
    rng = np.random.default_rng([width, height, *colour])
    noise = rng.uniform(-1, 1, (height, width, 3))
    noise -= noise.mean(axis=(0, 1))
    noise /= np.abs(noise).max(axis=(0, 1))
    base = np.array(colour, dtype=float)
    amplitude = np.minimum(40, np.minimum(base, 255 - base))  # no clipping: the mean stays `colour`
    pixels = np.rint(base + amplitude * noise).astype(np.uint8)
    if not amplitude.any():  # every channel at 0 or 255: one pixel of the complement instead
        pixels[0, 0] = 255 - base
    return Image.fromarray(pixels)
