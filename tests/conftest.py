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
    """A small test image of mostly one colour, with one pixel of its complement: one colour
    throughout is a constant image, which the odd-inputs check quarantines as a placeholder."""
    from PIL import Image

    image = Image.new("RGB", size, colour)
    image.putpixel((0, 0), tuple(255 - c for c in colour))
    return image
