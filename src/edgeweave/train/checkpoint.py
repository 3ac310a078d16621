"""Crash-safe round state on disk: the metrics JSONL and the checkpoint of a server run.

The server appends a round's metrics line first and then replaces the checkpoint atomically
(:mod:`edgeweave.durable`: a temporary file of its own, fsync, ``os.replace``, fsync of the
folder). A SIGKILL can therefore land in three places: before the line (round lost from both:
redone), between the two (line ahead of the checkpoint: dropped on resume, round redone), or
after both. Resuming keeps exactly the lines of the checkpointed rounds, once each, so no round
is lost or repeated. Lines without any checkpoint (a crash before the first one, or a deleted
checkpoint) cannot be resumed; they are moved aside (:func:`set_aside_metrics`), never deleted.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeweave.durable import fsync_dir, replace_with
from edgeweave.train.types import RoundRecord, TrainError

METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
_BASE_FIELDS = ("round", "clients", "train_loss", "test_loss", "test_acc", "bytes_up",
                "bytes_down", "wall_s")


def _jsonable(v: Any) -> Any:
    # NaN (a round without evaluation) is not JSON; null is.
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def record_line(rec: RoundRecord) -> str:
    return json.dumps(_jsonable(rec.to_json()), sort_keys=False)


def record_from_json(d: dict[str, Any]) -> RoundRecord:
    base: dict[str, Any] = {k: d.get(k) for k in _BASE_FIELDS}
    for k in ("train_loss", "test_loss", "test_acc"):
        base[k] = float("nan") if base[k] is None else float(base[k])
    extra = {k: v for k, v in d.items() if k not in _BASE_FIELDS}
    return RoundRecord(**base, extra=extra)


def append_metrics(path: Path, rec: RoundRecord) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(record_line(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a metrics file; a torn last line (killed mid-write) is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_metrics(path: Path, last_round: int) -> list[RoundRecord]:
    """Keep one line per round 1..last_round (the first written), rewrite atomically."""
    seen: dict[int, dict[str, Any]] = {}
    for d in read_metrics(path):
        r = d.get("round")
        if isinstance(r, int) and 1 <= r <= last_round and r not in seen:
            seen[r] = d
    kept = [seen[r] for r in sorted(seen)]
    text = "".join(json.dumps(d) + "\n" for d in kept).encode("utf-8")
    replace_with(path, lambda f: f.write(text))
    return [record_from_json(d) for d in kept]


def set_aside_metrics(path: Path) -> Path | None:
    """Rename a metrics file that no checkpoint continues to ``<name>.orphan-<k>`` (the first
    free k) and return the new path; None when there was no file. Nothing is deleted."""
    if not path.exists():
        return None
    k = 1
    while (aside := path.with_name(f"{path.name}.orphan-{k}")).exists():
        k += 1
    os.replace(path, aside)
    fsync_dir(path.parent)
    return aside


def rng_state() -> dict[str, Any]:
    """torch's and numpy's global random state, as tensors and numbers (a checkpoint is loaded
    with ``weights_only``, so no numpy arrays). numpy's legacy ``normal`` makes Gaussians in
    pairs and caches the second (``has_gauss``/``gauss``); without the cache a resumed run would
    skip that number and draw differently from an uninterrupted one."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
        "numpy_pos": int(np_state["state"]["pos"]),
        "numpy_has_gauss": int(np_state["has_gauss"]),
        "numpy_gauss": float(np_state["gauss"]),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    # checkpoints written before the Gaussian cache was saved restore it empty, as they did
    np.random.set_state(("MT19937", state["numpy_key"].numpy().astype(np.uint32),
                         state["numpy_pos"], int(state.get("numpy_has_gauss", 0)),
                         float(state.get("numpy_gauss", 0.0))))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    replace_with(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        # weights_only: a checkpoint is data, never code to unpickle
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainError(f"checkpoint {path}: cannot be read ({e}); delete it to start over") \
            from None
