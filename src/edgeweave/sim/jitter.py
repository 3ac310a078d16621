"""Service-time variability: what makes a real server's tail longer than its median.

The planner prices a stage by its profiled (median) time, and a queue whose every job takes
exactly that long waits half as long as one whose jobs vary as much as exponential ones do
(Pollaczek-Khinchine: the mean wait grows with 1 + cv^2). Real stages vary: a loaded host,
the garbage collector, a dilated emulation's sleeps; the runtime's measured per-request
compute times spread by a coefficient of variation of 0.1-0.5 on this project's hardware.
A `Jitter` draws the factor each request's compute is scaled by: gamma distributed, mean 1
and the given coefficient of variation (a gamma keeps times positive and right-skewed, as
measured service times are), drawn from numpy in blocks so a draw costs a list index.

A measured spread need not be a gamma: a host's tail is often longer (a burst of other work
slows a few requests by 2-3x). Given the measured times themselves, a `Jitter` draws each
factor from them at random (scaled to mean 1), so the simulated requests vary with the
measured median, spread and tail at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_BLOCK = 4096


class Jitter:
    """Factors of mean 1, from ``rng``: gamma with coefficient of variation ``cv`` (> 0), or
    drawn from measured ``samples`` (any scale; scaled to mean 1)."""

    __slots__ = ("_block", "_i", "cv", "rng", "samples")

    def __init__(self, cv: float, rng: np.random.Generator,
                 samples: Sequence[float] | None = None) -> None:
        self.samples = None
        if samples is not None:
            got = np.asarray(samples, dtype=float)
            if len(got) < 2 or not (got > 0).all():
                raise ValueError("a measured jitter needs at least 2 times, all > 0")
            self.samples = got / got.mean()
            cv = float(self.samples.std())
        if cv <= 0:
            raise ValueError("a jitter needs cv > 0 (no jitter: no Jitter)")
        self.cv, self.rng = cv, rng
        self._block: list[float] = []
        self._i = 0

    def __call__(self) -> float:
        i = self._i
        if i == len(self._block):
            if self.samples is not None:
                self._block = self.rng.choice(self.samples, _BLOCK).tolist()
            else:
                shape = 1.0 / (self.cv * self.cv)
                self._block = self.rng.gamma(shape, 1.0 / shape, _BLOCK).tolist()
            i = 0
        self._i = i + 1
        return self._block[i]


def jitter(spread: float | Sequence[float], rng: np.random.Generator) -> Jitter | None:
    """A `Jitter` for a scenario's spread (a cv, or measured times), or None for a cv of 0 or
    times that do not vary (deterministic service, and no draw at all)."""
    if isinstance(spread, int | float):
        return Jitter(spread, rng) if spread > 0 else None
    if max(spread) == min(spread):
        return None
    return Jitter(0.0, rng, spread)
