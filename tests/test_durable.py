"""Result files: atomic replacement by racing writers, and the run lock on an output folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

from edgeweave.durable import write_atomic
from edgeweave.folder_lock import FolderInUse, lock_folder
from edgeweave.train.checkpoint import load_checkpoint, save_checkpoint


def test_racing_writers_each_replace_the_file_whole(tmp_path):
    """Eight threads rewrite one checkpoint and one text file 25 times each. With a fixed
    temporary name one writer renamed another's temporary away (FileNotFoundError) or
    published a torn file; with a temporary of its own each replace is whole."""
    ckpt, text = tmp_path / "checkpoint.pt", tmp_path / "run.json"
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(25):
                save_checkpoint(ckpt, {"round": k * 100 + i, "w": torch.full((256,), float(k))})
                write_atomic(text, f"{k}:{i}\n" * 1000)
        except BaseException as e:  # collected: a thread's exception would be lost
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = load_checkpoint(ckpt)
    k = state["round"] // 100
    assert torch.equal(state["w"], torch.full((256,), float(k)))  # one writer's file, whole
    lines = text.read_text().splitlines()
    assert len(lines) == 1000 and len(set(lines)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "run.json"]
    assert oct(text.stat().st_mode & 0o777) != oct(0o600)  # a result file, not a private one


def test_a_second_run_on_a_folder_is_refused_until_the_holder_dies(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from edgeweave.folder_lock import lock_folder\n"
         f"with lock_folder({str(out)!r}):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUse) as e, lock_folder(out, "exp.yaml: out_dir"):
            pass
        assert str(e.value) == (f"exp.yaml: out_dir: {out} is in use by another run (pid "
                                f"{holder.pid}); wait for it to finish or choose another "
                                "folder")
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock
        holder.wait(10)
        with lock_folder(out) as held, lock_folder(out):  # re-entrant in one thread
            assert held == out and (out / ".lock").read_text().strip() == str(os.getpid())
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        holder.stdout.close()
    # another thread of this process is another run
    with lock_folder(out):
        seen: list[str] = []
        t = threading.Thread(target=lambda: _try(out, seen))
        t.start()
        t.join()
    assert "in use by another run in this process" in seen[0]
    with pytest.raises(FolderInUse, match=r"--out: cannot create the folder /proc/nope/x"), \
            lock_folder("/proc/nope/x", "--out"):
        pass


def _try(out, seen: list[str]) -> None:
    try:
        with lock_folder(out):
            seen.append("acquired")
    except FolderInUse as e:
        seen.append(str(e))


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    write_atomic(target, b"old")
    assert target.read_bytes() == b"old" and oct(target.stat().st_mode & 0o777) != "0o600"

    def power_cut(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(OSError):
        write_atomic(target, b"new and longer")
    assert target.read_bytes() == b"old"  # never half-written
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind
