"""Atomic writes: the whole file or the old one, and created with the mode `open()` would give."""

from __future__ import annotations

import os
import stat

import pytest

from tasks.core.atomic import write_text_atomic


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_written_file_has_the_umasks_mode_not_0600(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        written = write_text_atomic(tmp_path / "shared" / "manifest.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == mode
    assert written.read_text() == "{}"
    assert [p.name for p in written.parent.iterdir()] == ["manifest.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from tasks.core.atomic import write_atomic

    target = tmp_path / "table.parquet"
    target.write_text("old")

    def fail(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.parquet"]
