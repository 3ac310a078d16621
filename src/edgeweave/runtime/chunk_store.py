"""Weight chunks a node holds on disk, by digest, under a byte and a count budget (least
recently used go first).

Chunks are what incremental uploads leave on a node (:mod:`edgeweave.runtime.chunks`): a peer
decides how many it sends, so the store is bounded by ``serve --chunk-budget-mb`` and by
`MAX_CHUNKS` files (many tiny chunks must not exhaust the directory either), and a full store
evicts its least recently used chunks rather than refusing new ones. A chunk is stored only if
its bytes hash to its name, written to a temp file and renamed (a reader never sees half a
chunk), and checked again on every read: a chunk damaged on disk is deleted and reported
missing, so the device sends it again and the bad bytes are never built into a stage.
Chunks a previous run left in the directory are taken up again (resume across a node restart).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from edgeweave.runtime.chunks import chunk_digest, is_digest

#: Most chunk files kept, whatever their size.
MAX_CHUNKS = 1 << 16


class ChunkStore:
    """Thread-safe; reading a chunk marks it recently used."""

    def __init__(self, directory: Path, budget_bytes: int, max_chunks: int = MAX_CHUNKS):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.budget, self.max_chunks = budget_bytes, max_chunks
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evicted = 0
        self._adopt()

    def _adopt(self) -> None:
        """Take up chunks left by an earlier run (their bytes are checked when read); remove
        temp files a crash left behind."""
        for path in sorted(self.dir.iterdir(), key=_mtime):
            if is_digest(path.name) and path.is_file():
                self._sizes[path.name] = path.stat().st_size
                self._bytes += self._sizes[path.name]
            elif path.name.startswith("put-"):
                with contextlib.suppress(OSError):
                    path.unlink()
        self._evict(0, 0)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._sizes)

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._sizes

    def missing(self, digests: Iterable[str]) -> list[str]:
        with self._lock:
            return [d for d in digests if d not in self._sizes]

    def put(self, digest: str, data: bytes) -> bool:
        """Store ``data`` under ``digest``; False (nothing stored) when the bytes do not hash
        to it. Storing a chunk already held only marks it used."""
        if chunk_digest(data) != digest:
            return False
        with self._lock:
            if digest in self._sizes:
                self._sizes.move_to_end(digest)
                return True
        if len(data) > self.budget:
            return True  # cannot be kept at all: as if evicted at once
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            with self._lock:
                if digest not in self._sizes:
                    self._evict(len(data), 1)
                    self._bytes += len(data)
                os.replace(tmp, self.dir / digest)
                self._sizes[digest] = len(data)
                self._sizes.move_to_end(digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return True

    def read(self, digest: str) -> bytes | None:
        """The chunk's bytes, or None when it is not here or no longer hashes to its name (then
        it is deleted: the device must send it again)."""
        with self._lock:
            if digest not in self._sizes:
                return None
            self._sizes.move_to_end(digest)
        try:
            data = (self.dir / digest).read_bytes()
        except OSError:
            data = None
        if data is not None and chunk_digest(data) == digest:
            return data
        self.discard(digest)
        return None

    def discard(self, digest: str) -> None:
        with self._lock:
            size = self._sizes.pop(digest, None)
            if size is not None:
                self._bytes -= size
                self._unlink(digest)

    def _evict(self, nbytes: int, count: int) -> None:
        """Delete least recently used chunks until ``count`` more chunks of ``nbytes`` in all
        fit both budgets (the lock is held: a chunk put again meanwhile is not deleted)."""
        while self._sizes and (self._bytes + nbytes > self.budget
                               or len(self._sizes) + count > self.max_chunks):
            digest, size = self._sizes.popitem(last=False)
            self._bytes -= size
            self._unlink(digest)
            self.evicted += 1

    def _unlink(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / digest).unlink()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
