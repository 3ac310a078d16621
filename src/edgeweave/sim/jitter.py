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
measured median, spread and tail at once. `in_order` replays them instead, one per call in
the order measured: where requests reach a server in the order they were measured (one
device, one request at a time), each simulated request then takes its real twin's compute,
the host's bursts included where they fell.

A host's speed also drifts over minutes (other jobs start and stop). Given a ``level`` (a
function of nothing that says the speed in effect now, e.g. read from the simulated clock), a
`Jitter`'s every factor is scaled by it: the spread around the speed, the speed as measured
at the time (`sim.calibration.Calibration.at`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

_BLOCK = 4096


class Jitter:
    """Factors of mean ``scale`` (1: the profiled speed; 1.25: a device 25% slower than its
    profile), from ``rng``: gamma with coefficient of variation ``cv`` (> 0), or drawn from
    measured ``samples`` (any scale; scaled to mean ``scale``; they may all be equal)."""

    __slots__ = ("_block", "_i", "_ordered", "cv", "level", "rng", "samples", "scale")

    def __init__(self, cv: float, rng: np.random.Generator,
                 samples: Sequence[float] | None = None, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("a jitter's scale must be > 0")
        self.samples = None
        if samples is not None:
            got = np.asarray(samples, dtype=float)
            if len(got) < 2 or not (got > 0).all():
                raise ValueError("a measured jitter needs at least 2 times, all > 0")
            self.samples = got / got.mean() * scale
            cv = float(self.samples.std() / scale)
        elif cv <= 0:
            raise ValueError("a jitter needs cv > 0 (no jitter: no Jitter)")
        self.cv, self.rng, self.scale = cv, rng, scale
        self._block: list[float] = []
        self._i = 0
        self._ordered = False
        #: if set, every factor is scaled by what it returns when drawn (see the module doc)
        self.level: Callable[[], float] | None = None

    def in_order(self) -> None:
        """From now on, return the measured samples in their order (cycling), from the first."""
        if self.samples is None:
            raise ValueError("only measured times can be replayed in order")
        self._ordered, self._block, self._i = True, [], 0

    def __call__(self) -> float:
        i = self._i
        if i == len(self._block):
            samples = self.samples
            if samples is not None:
                self._block = (samples if self._ordered
                               else self.rng.choice(samples, _BLOCK)).tolist()
            else:
                shape = 1.0 / (self.cv * self.cv)
                self._block = self.rng.gamma(shape, self.scale / shape, _BLOCK).tolist()
            i = 0
        self._i = i + 1
        level = self.level
        return self._block[i] if level is None else self._block[i] * level()


def jitter(spread: float | Sequence[float], rng: np.random.Generator,
           scale: float = 1.0) -> Jitter | None:
    """A `Jitter` for a scenario's spread (a cv, or measured times) around ``scale``, or None
    for a cv of 0 or times that do not vary at a scale of 1 (deterministic service at the
    profiled speed, and no draw at all)."""
    if isinstance(spread, int | float):
        if spread > 0:
            return Jitter(spread, rng, scale=scale)
        spread = [1.0, 1.0]
    if max(spread) == min(spread) and scale == 1.0:
        return None
    return Jitter(0.0, rng, spread, scale)
