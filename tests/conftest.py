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
# Under pytest-xdist each worker (and each command it starts) gets its share of the cores for torch's
# and BLAS's threads. By default every process runs one thread per core, so two workers on two cores
# oversubscribe them and the threads spin waiting for each other: with other processes busy, a label
# audit of 255 digits took 53-71 s instead of 8-12 s, and test_text_flow.py used 110 s of CPU instead
# of 59 s.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cores = len(os.sched_getaffinity(0))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
from flows.runtime import apply_defaults  # noqa: E402  (settings must precede Prefect's import)

apply_defaults()


# The longest test files (module fixtures that run several flows or commands; measured), started
# first, then the other integration files, then the model and unit tests, whose many short files
# fill the end: with `--dist loadfile` each worker takes the next file in this order, so a long
# file left for last would run alone while the other worker idles.
LONGEST_FIRST = ("test_dask_runner.py", "test_resume_after_kill.py", "test_concurrent_retrains.py",
                 "test_bad_input.py", "test_audio_flow.py", "test_text_flow.py", "test_team_servers.py",
                 "test_sticky_split.py", "test_shared_split_history.py", "test_deployments.py")


def pytest_configure(config: pytest.Config) -> None:
    """xdist's loadfile scheduler re-sorts the files by their number of tests (most first), which
    put the long integration files, a few tests each, after the unit tests: keep the order above."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def order(item: pytest.Item) -> tuple[int, int]:
        if item.path.name in rank:
            return 0, rank[item.path.name]
        return (1 if "integration" in item.path.parts else 2), 0

    items.sort(key=order)  # stable: files keep their collection order within a group


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
