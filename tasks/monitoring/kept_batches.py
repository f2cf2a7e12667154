"""Drifted batches kept for labeling, and what a repeated check of one batch does.

A scheduled drift check re-reads the same `--incoming` folder every interval. Each batch is known
by its content digest: a batch already checked against the same champion is reported with its
first verdict and is neither copied nor evented again. Kept batches are bounded by
`drift.keep_batches`: beyond it the oldest are removed, but only those nobody has started
labelling (every file exactly as the check wrote it, by sha256, and nothing added), so a person's
work is never deleted, and nothing the tool did not write is either.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tasks.config.data_kinds import reads_files
from tasks.core.hashing import sha256_file, sha256_text
from tasks.monitoring.drift import IncomingBatch

MANIFEST = "manifest.json"


def batch_digest(batch: IncomingBatch) -> str:
    """The batch's content: file bytes with their paths inside the folder, or the texts in order."""
    if reads_files(batch.modality):
        parts = [f"{relative}\t{sha256_file(Path(path))}" for relative, path in zip(batch.relative, batch.inputs,
                                                                                    strict=True)]
    else:
        parts = list(batch.inputs)
    return sha256_text("\n".join(parts))


def written_files(folder: Path, files: list[str]) -> dict[str, str]:
    """sha256 per file the check wrote: what `untouched` compares with later."""
    return {name: sha256_file(folder / name) for name in files}


def untouched(batch_folder: Path) -> bool:
    """True when the folder holds exactly what the check wrote (manifest included), unchanged."""
    manifest_path = batch_folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    written = manifest.get("files_sha256")
    if not isinstance(written, dict):
        return False  # kept by an older version, which recorded no hashes: never removed
    present = {str(p.relative_to(batch_folder)) for p in batch_folder.rglob("*") if p.is_file()} - {MANIFEST}
    return present == set(written) and all(sha256_file(batch_folder / name) == digest
                                           for name, digest in written.items())


def prune_kept_batches(model_folder: Path, keep: int) -> tuple[list[Path], list[Path]]:
    """Remove the oldest untouched batches beyond the newest `keep`. Returns (removed, kept
    because someone started labelling them)."""
    batches = sorted(p for p in model_folder.iterdir() if p.is_dir()) if model_folder.is_dir() else []
    removed, in_labelling = [], []
    for folder in batches[:max(len(batches) - keep, 0)]:
        if untouched(folder):
            shutil.rmtree(folder)
            removed.append(folder)
        else:
            in_labelling.append(folder)
    return removed, in_labelling
