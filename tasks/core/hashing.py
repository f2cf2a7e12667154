"""Content hashes: the ids of examples and files, and the fingerprint that names a labeled dataset
everywhere (MLflow params, cache keys, the test ledger, the model card)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(ids: Iterable[object], labels: Iterable[object]) -> str:
    """Hash of the sorted distinct (id, label) pairs: it names this exact labeled dataset."""
    pairs = sorted(set(zip(map(str, ids), map(str, labels), strict=True)))
    return sha256_text("\n".join(f"{i}\t{label}" for i, label in pairs))
