"""Content hashes: the ids of examples and files, and the fingerprint that names a labeled dataset
everywhere (MLflow params, cache keys, the test ledger, the model card)."""

from __future__ import annotations

import functools
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


def code_version() -> str:
    """A digest of every Python file of the `tasks` package (the code that computes the steps'
    results): cached step results are keyed by it, since a result depends on far more code than the
    step's own function (a fix in a helper must not be answered from a cache the old code filled)."""
    return _code_version()


@functools.cache
def _code_version() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root).as_posix()}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
