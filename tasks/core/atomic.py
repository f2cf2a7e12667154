"""Atomic writes for every file the tool writes and later trusts (manifests, cache indexes,
checkpoints): a reader sees the old file or the whole new one, never a truncated one.

The temporary file has a unique name in the target's folder (so concurrent writers never share
it, and the final rename stays on one filesystem), is fsynced, then renamed over the target. It is
created as `open()` creates a file, mode 0666 less the umask (tempfile.mkstemp's 0600 would leave
manifests, reports and predictions unreadable to the rest of a team sharing a workdir).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on a clean exit it is fsynced and renamed onto
    `target`, on an error it is removed (the target is untouched)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    try:
        yield temporary
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(target: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write `target` through `write(binary_handle)` atomically."""
    with atomic_output(target) as temporary, temporary.open("wb") as handle:
        write(handle)
    return target


def write_bytes_atomic(target: Path, data: bytes) -> Path:
    return write_atomic(target, lambda handle: handle.write(data))


def write_text_atomic(target: Path, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """An advisory lock across processes on this machine (the kernel frees it if the holder dies),
    for read-modify-write steps such as the split history and the test ledger."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
