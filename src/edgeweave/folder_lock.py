"""One run per output folder: an OS lock on ``<folder>/.lock`` held for the whole run.

Two runs writing the same folder interleave their metrics lines and overwrite each other's
checkpoint, and both "succeed". :func:`lock_folder` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on
``<folder>/.lock`` and keeps it until the run ends; the kernel drops it when the process exits,
however it exits (SIGKILL included), so a crashed run never leaves a stale lock behind and the
restarted run resumes. The holder writes its pid into the file so that the refused run can say
who holds it. The lock file itself is never deleted: unlinking it would let a third run lock a
new file while the second still holds the old one.

Re-entrant within one thread (the CLI locks before it starts a server, and the server loop locks
again when it opens the folder); another thread of the same process is refused like another
process, since flock would not tell them apart.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeweave.errors import EdgeWeaveError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; runs are not guarded
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"

_held: dict[tuple[int, int], tuple[int, int, int]] = {}  # (dev, ino) -> (fd, thread, depth)
_guard = threading.Lock()


class FolderInUse(EdgeWeaveError):
    """Another run holds the output folder, or the folder cannot be created."""


def make_folder(folder: str | os.PathLike[str], what: str) -> Path:
    """Create ``folder`` (and parents); an OSError becomes one error naming ``what``."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FolderInUse(f"{what}: cannot create the folder {path} "
                          f"({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FolderInUse(f"{what}: the folder {path} is not writable")
    return path


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


@contextmanager
def lock_folder(folder: str | os.PathLike[str], what: str = "out_dir") -> Iterator[Path]:
    """Hold the run lock of ``folder`` (created if needed) for the ``with`` block.

    ``what`` names the folder in the user's words (``"exp.yaml: out_dir"``, ``"--out"``) in the
    error raised when the folder cannot be created or another run holds it.
    """
    path = make_folder(folder, what)
    st = path.stat()
    key, me = (st.st_dev, st.st_ino), threading.get_ident()
    with _guard:
        held = _held.get(key)
        if held is not None:
            fd, owner, depth = held
            if owner != me:
                raise FolderInUse(f"{what}: {path} is in use by another run in this process "
                                  f"(pid {os.getpid()}); wait for it to finish or choose "
                                  "another folder")
            _held[key] = (fd, owner, depth + 1)
        else:
            fd = _acquire(path, what)
            _held[key] = (fd, me, 1)
    try:
        yield path
    finally:
        with _guard:
            fd, owner, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, owner, depth - 1)
            else:
                del _held[key]
                os.close(fd)  # releases the flock


def _acquire(path: Path, what: str) -> int:
    lock = path / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise FolderInUse(f"{what}: cannot create the lock file {lock} "
                          f"({e.strerror or e})") from None
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        who = _holder(fd)
        os.close(fd)
        raise FolderInUse(f"{what}: {path} is in use by another run{who}; wait for it to "
                          "finish or choose another folder") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
