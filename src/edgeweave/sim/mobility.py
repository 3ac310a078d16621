"""Where each device is over time: EdgeCloudSim's nomadic mobility, generated for all devices
at once.

A device stays at a place for an exponential dwell time whose mean is the place's ``dwell_s``,
then moves to one of the other places it may visit, chosen with probability proportional to
their attractiveness (Sonmez et al., "EdgeCloudSim", 2018: places of different attractiveness
levels, devices attach to the access point of their place). The first place is drawn with the
same weights; exponential dwells are memoryless, so starting every device at t = 0 with a fresh
dwell is already the stationary picture.

Nothing here is a simulation process: a device's whole itinerary is drawn up front, one numpy
step per move for all devices together, and stored as a :class:`Timeline` the engine looks
up (for one device, or for a million requests at once) instead of waking 10,000 idle devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: timeline keys are (device << 40) + microseconds: exact to 1 us for runs up to 12 days and
#: 8 million devices, and searchable with one np.searchsorted
_SHIFT = 40
_US = 1e6


def _keys(devices: np.ndarray, times: np.ndarray) -> np.ndarray:
    return (devices.astype(np.int64) << _SHIFT) + np.floor(times * _US).astype(np.int64)


@dataclass(frozen=True)
class Timeline:
    """A piecewise-constant integer per device: device d holds ``value[j]`` from ``t[j]`` on,
    for its entries ``j`` in ``offsets[d]:offsets[d+1]`` (the first at t = 0)."""

    t: np.ndarray
    value: np.ndarray
    offsets: np.ndarray
    _keys: np.ndarray

    @staticmethod
    def build(devices: np.ndarray, times: np.ndarray, values: np.ndarray,
              n_devices: int) -> Timeline:
        order = np.lexsort((times, devices))
        d, t, v = devices[order], times[order], values[order]
        counts = np.bincount(d, minlength=n_devices)
        if (counts == 0).any():
            raise ValueError("every device needs a value from t = 0")
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return Timeline(t, v.astype(np.int32), offsets, _keys(d, t))

    def at(self, devices: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The value of each ``devices[i]`` at ``times[i]`` (vectorised)."""
        idx = np.searchsorted(self._keys, _keys(np.asarray(devices), np.asarray(times)),
                              side="right") - 1
        return self.value[idx]

    def at_one(self, device: int, time: float) -> int:
        lo, hi = int(self.offsets[device]), int(self.offsets[device + 1])
        j = lo + int(np.searchsorted(self.t[lo:hi], time, side="right")) - 1
        return int(self.value[max(j, lo)])

    def changes_between(self, device: int, start: float, end: float) -> bool:
        """True if the device's value changes in (start, end]."""
        return self.at_one(device, start) != self.at_one(device, end)

    def segments(self, device: int) -> list[tuple[float, int]]:
        lo, hi = int(self.offsets[device]), int(self.offsets[device + 1])
        return list(zip(self.t[lo:hi].tolist(), self.value[lo:hi].tolist(), strict=True))


def _draw_other(rng: np.random.Generator, cdf: np.ndarray, current: np.ndarray) -> np.ndarray:
    """A place per device from ``cdf`` (over the allowed places), never its current one:
    redraw the clashes (rejection sampling; each redraw clears most of them)."""
    out = np.searchsorted(cdf, rng.random(len(current)), side="right")
    clash = out == current
    while clash.any():
        out[clash] = np.searchsorted(cdf, rng.random(int(clash.sum())), side="right")
        clash = out == current
    return out


def nomadic(devices: np.ndarray, allowed: Sequence[int], attractiveness: Sequence[float],
            dwell_s: Sequence[float], duration_s: float, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The place itineraries of ``devices`` moving among the places ``allowed`` (indices into
    ``attractiveness`` / ``dwell_s``) until ``duration_s``: arrays (device, time, place), one
    row per arrival at a place, the first at t = 0."""
    allowed_arr = np.asarray(allowed, dtype=np.int64)
    weights = np.asarray(attractiveness, dtype=float)[allowed_arr]
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    mean = np.asarray(dwell_s, dtype=float)[allowed_arr]
    n = len(devices)
    cur = np.searchsorted(cdf, rng.random(n), side="right")
    rows_d, rows_t, rows_p = [devices], [np.zeros(n)], [allowed_arr[cur]]
    if len(allowed_arr) < 2:
        return devices, np.zeros(n), allowed_arr[cur]
    t = np.zeros(n)
    live = np.arange(n)
    while len(live):
        t[live] += rng.exponential(mean[cur[live]])
        live = live[t[live] < duration_s]
        if not len(live):
            break
        cur[live] = _draw_other(rng, cdf, cur[live])
        rows_d.append(devices[live])
        rows_t.append(t[live].copy())
        rows_p.append(allowed_arr[cur[live]])
    return np.concatenate(rows_d), np.concatenate(rows_t), np.concatenate(rows_p)
