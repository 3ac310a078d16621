"""When each request of a load test is sent, for which model, by which logical device.

Open loop (the request rate does not slow down when the server does, as for many independent
devices): Poisson arrivals at a rate per model, or a trace of arrival times. Many devices
sending Poisson streams add up to one Poisson stream at the total rate, so each arrival is
drawn for the model in proportion to its rate and assigned to a device at random. Closed loop
(each device waits for its answer, then thinks) is played by the driver, not drawn here.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeweave.errors import ServeError

MAX_ARRIVALS = 10_000_000


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds from the start of the run
    model: str
    client: int  # the logical device sending it


def poisson(rates: Mapping[str, float], duration_s: float, clients: int, seed: int = 0
            ) -> list[Arrival]:
    """Poisson arrivals over `duration_s` at `rates` (requests/s per model)."""
    total = sum(rates.values())
    if not (total > 0 and math.isfinite(total)) or duration_s <= 0 or clients < 1:
        raise ServeError(f"a Poisson load needs a positive total rate, duration and number of "
                         f"devices; got {total!r} req/s for {duration_s!r} s, {clients} devices")
    if total * duration_s > MAX_ARRIVALS:
        raise ServeError(f"{total:g} req/s for {duration_s:g} s is more than "
                         f"{MAX_ARRIVALS} requests")
    rng = np.random.default_rng(seed)
    models = list(rates)
    share = np.array([rates[m] for m in models]) / total
    times, t = [], rng.exponential(1.0 / total)
    while t < duration_s:
        times.append(t)
        t += rng.exponential(1.0 / total)
    which = rng.choice(len(models), size=len(times), p=share)
    who = rng.integers(0, clients, size=len(times))
    return [Arrival(float(a), models[int(m)], int(c))
            for a, m, c in zip(times, which, who, strict=True)]


def from_trace(path: Path, models: Sequence[str], clients: int, seed: int = 0
               ) -> list[Arrival]:
    """Arrivals from a CSV file: one request per row, `time_s` first (seconds from the start),
    optionally `model` second (else the models take turns). ServeError names the row at
    fault."""
    if not path.is_file():
        raise ServeError(f"--trace {path}: no such file")
    rng = np.random.default_rng(seed)
    out: list[Arrival] = []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].strip().startswith("#") or (line == 1 and not _number(row[0])):
                continue  # blank, comment or header
            if not _number(row[0]) or float(row[0]) < 0 or not math.isfinite(float(row[0])):
                raise ServeError(f"--trace {path} line {line}: expected a time in seconds "
                                 f"(>= 0) first, got {row[0][:40]!r}")
            model = row[1].strip() if len(row) > 1 and row[1].strip() else models[
                len(out) % len(models)]
            if model not in models:
                raise ServeError(f"--trace {path} line {line}: model {model[:60]!r} is not one "
                                 f"of the --model given ({', '.join(models)})")
            out.append(Arrival(float(row[0]), model, int(rng.integers(0, clients))))
            if len(out) > MAX_ARRIVALS:
                raise ServeError(f"--trace {path}: more than {MAX_ARRIVALS} requests")
    if not out:
        raise ServeError(f"--trace {path}: no arrival times in it")
    return sorted(out, key=lambda a: a.at)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
