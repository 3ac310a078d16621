"""Result files that survive a crash and a concurrent writer: write aside, fsync, rename, fsync.

A file is written to a temporary name that only this call uses (``tempfile.mkstemp`` in the
target's own folder, so the rename stays on one file system and is atomic), flushed and fsynced,
then ``os.replace``d over the target; finally the folder itself is fsynced, because a rename is
an entry in the folder and is not durable until the folder is (POSIX leaves it in the page
cache). A reader therefore sees the old file or the new one, never a torn mix; a power cut after
:func:`write_atomic` returns cannot bring the old file back; and two writers racing on the same
target each replace it whole, instead of one renaming the other's half-written temporary away
(what a fixed ``name.tmp`` does).

It sits at the package root, below every part, so that training's checkpoints, ``run.json`` and
any other part's result files share the one implementation.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["fsync_dir", "replace_with", "write_atomic"]

# mkstemp creates files 0600; a result file gets the mode a plain open() would give it. The
# umask can only be read by setting it, so it is read once, at import (single-threaded).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_MODE = 0o666 & ~_UMASK


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make the folder's entries (a rename, a new file) durable. No-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename itself happened
        pass
    finally:
        os.close(fd)


def replace_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Atomically replace ``path`` with what ``write(file)`` writes (see the module docstring).

    The temporary file is removed if ``write`` or the rename fails; OSError propagates (the
    caller names the file in its own words).
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Atomically replace ``path`` with ``data`` (text is written as UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    replace_with(path, lambda f: f.write(raw))
