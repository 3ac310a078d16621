"""Service-time variability: what makes a real server's tail longer than its median.

The planner prices a stage by its profiled (median) time, and a queue whose every job takes
exactly that long waits half as long as one whose jobs vary as much as exponential ones do
(Pollaczek-Khinchine: the mean wait grows with 1 + cv^2). Real stages vary: a loaded host,
the garbage collector, a dilated emulation's sleeps; the runtime's measured per-request
compute times spread by a coefficient of variation of 0.1-0.5 on this project's hardware.
A `Jitter` draws the factor each request's compute is scaled by: gamma distributed, mean 1
and the given coefficient of variation (a gamma keeps times positive and right-skewed, as
measured service times are), drawn from numpy in blocks so a draw costs a list index.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 4096


class Jitter:
    """Factors of mean 1 and coefficient of variation ``cv`` (> 0), from ``rng``."""

    __slots__ = ("_block", "_i", "cv", "rng")

    def __init__(self, cv: float, rng: np.random.Generator) -> None:
        if cv <= 0:
            raise ValueError("a jitter needs cv > 0 (no jitter: no Jitter)")
        self.cv, self.rng = cv, rng
        self._block: list[float] = []
        self._i = 0

    def __call__(self) -> float:
        i = self._i
        if i == len(self._block):
            shape = 1.0 / (self.cv * self.cv)
            self._block = self.rng.gamma(shape, 1.0 / shape, _BLOCK).tolist()
            i = 0
        self._i = i + 1
        return self._block[i]


def jitter(cv: float, rng: np.random.Generator) -> Jitter | None:
    """A `Jitter`, or None for ``cv`` 0 (deterministic service, and no draw at all)."""
    return Jitter(cv, rng) if cv > 0 else None
