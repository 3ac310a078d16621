"""How far a fidelity row (`sim.validate`) can be trusted: intervals on its percentiles and
errors, how far the host's speed drifted across the real run, and the edge's batch sizes on
both sides.

A p95 from a hundred requests rests on the five slowest, so one host hiccup moves it by tens of
percent; a row's error means little without saying how much it would move on another run of the
same arrivals. The intervals come from a paired moving-block bootstrap over the requests: the
simulated and the real latency of a request are resampled together (both sides replayed the
same arrivals, so the error is a paired statistic), in blocks of consecutive requests, because
requests that queue behind one another are correlated and resampling them one by one would
make the interval too narrow (Künsch 1989; block length ``n ** (1/3)``, the usual rule).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgeweave.sim.lab_run import RealRun

#: bootstrap resamples and the interval's coverage
REPS = 2000
LEVEL = 0.9


def block_indices(n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` rows of ``n`` request indices, each row a moving-block resample of 0..n-1."""
    block = max(1, min(n, round(n ** (1.0 / 3.0))))
    blocks = math.ceil(n / block)
    starts = rng.integers(0, n - block + 1, size=(reps, blocks))
    idx = (starts[:, :, None] + np.arange(block)).reshape(reps, blocks * block)
    return idx[:, :n]


def intervals(sim_ms: Sequence[float], real_ms: Sequence[float], qs: Iterable[int] = (50, 95),
              reps: int = REPS, level: float = LEVEL, seed: int = 0) -> dict[str, Any]:
    """Per percentile ``q``: a ``level`` interval of the real run's ``real_p{q}_ci_ms`` and of
    the relative error ``err_p{q}_ci`` (sim over real, less 1), from a paired block bootstrap
    of the requests (see the module doc); and ``tail_requests``, how many real requests lie
    above the real p95 (what the p95 rests on)."""
    sim, real = np.asarray(sim_ms, dtype=float), np.asarray(real_ms, dtype=float)
    if sim.shape != real.shape or sim.ndim != 1 or len(sim) < 2:
        raise ValueError("intervals need as many simulated as real latencies, at least 2")
    idx = block_indices(len(real), reps, np.random.default_rng(seed))
    lo, hi = 100.0 * (1 - level) / 2, 100.0 * (1 + level) / 2
    out: dict[str, Any] = {"ci_level": level, "ci_method": "paired moving-block bootstrap",
                           "tail_requests": int((real > np.percentile(real, 95)).sum())}
    for q in qs:
        r = np.percentile(real[idx], q, axis=1)
        s = np.percentile(sim[idx], q, axis=1)
        out[f"real_p{q}_ci_ms"] = [float(v) for v in np.percentile(r, [lo, hi])]
        out[f"err_p{q}_ci"] = [float(v) for v in np.percentile(s / r - 1.0, [lo, hi])]
    return out


def batch_sizes(per_request: Iterable[int]) -> dict[int, int]:
    """Requests per batch size they ran in, from each request's batch (0s, requests no node
    batched, are left out)."""
    out: dict[int, int] = {}
    for b in per_request:
        if b > 0:
            out[int(b)] = out.get(int(b), 0) + 1
    return dict(sorted(out.items()))


def mean_batch(sizes: Mapping[int, int]) -> float | None:
    """The batch size the average request ran in (None: no request was batched)."""
    n = sum(sizes.values())
    return sum(b * k for b, k in sizes.items()) / n if n else None


def drift(real: RealRun) -> dict[str, float]:
    """Per tier, how far the host's speed moved across the timed run: the cool-down's median
    compute over the warm-up's, less 1 (what calibrating on one side alone would miss)."""
    def median(rows: list[dict[str, float]], key: str) -> float:
        got = [r[key] for r in rows if r.get(key, 0.0) > 0]
        return float(np.median(got)) if got else 0.0

    keys = {k for r in real.warm for k in r if k.endswith("_compute")}
    out = {}
    for key in sorted(keys):
        before, after = median(real.warm, key), median(real.cool, key)
        if before > 0 and after > 0:
            out[key.removesuffix("_compute")] = after / before - 1.0
    return out


def timed_drift(real: RealRun) -> dict[str, dict[str, float]]:
    """Per tier, how the timed requests' compute compared with the calibrating ones' (the
    warm-up's and the cool-down's): median and p95 ratios, less 1. What the simulator was
    calibrated with against what the host gave during the run: a burst of other work in the
    middle of the run shows here (and in no calibration), a model error does not. Requests
    that ran in a batch of more than one are left out (their compute is the batch's)."""
    def times(rows: list[dict[str, float]], key: str, batch: list[int] | None = None
              ) -> list[float]:
        return [r[key] for k, r in enumerate(rows) if r.get(key, 0.0) > 0
                and (batch is None or k >= len(batch) or batch[k] <= 1)]

    keys = sorted({k for r in real.calibration for k in r if k.endswith("_compute")})
    out = {}
    for key in keys:
        cal, run = times(real.calibration, key), times(real.timed, key, real.batch)
        if cal and run:
            c50, c95 = np.percentile(cal, [50, 95])
            r50, r95 = np.percentile(run, [50, 95])
            out[key.removesuffix("_compute")] = {"p50": float(r50 / c50 - 1.0),
                                                 "p95": float(r95 / c95 - 1.0)}
    return out


def records(times: np.ndarray, devs: np.ndarray, sim_ms: list[float], real: RealRun,
            sim_parts: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per timed request, in arrival order: arrival (s), device, simulated and real latency
    (ms), the simulated request's network, server and device time (``sim_parts``, s, as the
    simulator's `Outcome` keeps them), the batch it ran in at the real edge, and the
    runtime's segments (ms)."""
    out = []
    for k, (t, d, s, r, b, seg) in enumerate(zip(times, devs, sim_ms, real.latency_ms,
                                                 real.batch, real.timed, strict=True)):
        rec = {"t_s": float(t), "device": int(d), "sim_ms": float(s), "real_ms": float(r),
               **{f"sim_{p}_ms": float(v[k]) * 1000.0 for p, v in sim_parts.items()},
               "edge_batch_real": int(b), "segments": dict(seg)}
        out.append(rec)
    return out
