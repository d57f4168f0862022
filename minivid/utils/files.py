"""Atomic file writes: a run killed mid-write never leaves a truncated file where a good one was."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file next to ``path`` (same suffix, so tools that pick a format by extension
    work); on success flush it to disk (fsync) and move it onto ``path`` with ``os.replace`` (atomic on
    POSIX and Windows), then fsync the folder so the rename itself survives a power loss. On an exception
    the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        _fsync_file(tmp)  # the data is on disk before the rename makes it the file at ``path``
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync_file(path: str | os.PathLike) -> None:
    # Opened for writing: Windows' fsync (_commit) needs a writable descriptor; "r+b" never truncates.
    with open(path, "r+b") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder (makes a rename in it durable), best effort: Windows cannot open a folder this way
    and some file systems refuse to fsync one."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
