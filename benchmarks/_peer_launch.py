"""The parent side of a peer run (fl_throughput, fl_time_to_accuracy): write the workload to one
``.npz``, run ``_fl_peers.py`` with the peers' interpreter, read its one JSON line back.

The peers live in their own venv (``.venv-peers``, see ``_fl_peers.py``); a missing venv, a
crash or a timeout becomes the row's ``error`` instead of stopping the benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeweave.train.task import Task
from edgeweave.train.types import FitConfig

ROOT = Path(__file__).resolve().parent.parent


def peers_python(given: str | None) -> str:
    """``given``, else ``.venv-peers/bin/python`` if it exists, else this interpreter."""
    venv = ROOT / ".venv-peers" / "bin" / "python"
    return given or (str(venv) if venv.exists() else sys.executable)


def run_peer(peer: str, task: Task, fit: FitConfig, rounds: int, python: str, threads: int,
             timeout: float, **extra: Any) -> dict:
    """The peer's result dict (``round_s``, ``final_acc``, ``version``, ... plus
    ``process_wall_s``) or ``{"error": ...}``. ``extra`` arrays go into the npz (the model spec,
    the cohorts, the target accuracy)."""
    data = task.data
    assert data is not None
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "workload.npz"
        np.savez(npz, x=data.x.numpy(), y=data.y.numpy(), offsets=data.offsets.numpy(),
                 test_x=task.test_x.numpy(), test_y=task.test_y.numpy(), lr=fit.lr,
                 batch_size=fit.batch_size, epochs=fit.epochs,
                 **{f"init.{k}": v.numpy() for k, v in task.init_params().items()}, **extra)
        cmd = [python, str(ROOT / "benchmarks" / "_fl_peers.py"), peer, str(npz),
               "--rounds", str(rounds), "--threads", str(threads)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "RAY_DEDUP_LOGS": "0"})
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s: {' '.join(cmd)}"}
        except OSError as e:
            return {"error": f"cannot start {python}: {e}"}
        wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PEER_RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return {"error": f"exit {proc.returncode}: " + "\n".join(tail), "python": python}
    res = json.loads(lines[-1].removeprefix("PEER_RESULT "))
    return {**res, "process_wall_s": wall, "python": python}
