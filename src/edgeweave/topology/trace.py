"""Time-varying link bandwidth, replayed from a CSV of ``t_seconds,mbps`` samples.

Wireless uplinks fluctuate by several x within seconds, and a plan that is optimal at the mean
bandwidth can be far off at the dips; a trace lets runs and simulations see those dips instead of
a single constant.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from edgeweave.errors import FleetError


class BandwidthTrace(BaseModel):
    """Bandwidth samples: ``mbps[i]`` holds from ``t_s[i]`` until the next sample.

    The last sample holds for as long as the interval before it (one sample period), so the trace
    covers ``[t_s[0], t_s[-1] + (t_s[-1] - t_s[-2]))``. Beyond that it loops: a 2-minute trace can
    drive an hour-long simulation without the caller having to special-case the end, and looping
    keeps the bandwidth statistics of the whole run equal to those of the trace. A single-sample
    trace is a constant.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str | None = None
    t_s: list[float]
    mbps: list[float]

    @model_validator(mode="after")
    def _check_samples(self) -> BandwidthTrace:
        if not self.t_s:
            raise ValueError("a bandwidth trace needs at least one sample")
        if len(self.t_s) != len(self.mbps):
            raise ValueError(
                f"t_s has {len(self.t_s)} samples but mbps has {len(self.mbps)}; "
                "expected the same number"
            )
        for i, (t, rate) in enumerate(zip(self.t_s, self.mbps, strict=True)):
            if not (math.isfinite(t) and math.isfinite(rate)):
                raise ValueError(f"sample {i} is not finite (t={t}, mbps={rate})")
            if rate <= 0:
                raise ValueError(f"sample {i}: mbps must be > 0, got {rate}")
            if i and t <= self.t_s[i - 1]:
                raise ValueError(
                    f"sample {i}: time {t} is not after {self.t_s[i - 1]}; times must increase"
                )
        return self

    @property
    def period_s(self) -> float:
        """Length of one loop of the trace (0 for a single-sample, constant trace)."""
        if len(self.t_s) < 2:
            return 0.0
        last_step = self.t_s[-1] - self.t_s[-2]
        return self.t_s[-1] + last_step - self.t_s[0]

    @property
    def mean_mbps(self) -> float:
        """Time-weighted mean bandwidth over one loop; a fair constant stand-in for the trace."""
        if len(self.t_s) < 2:
            return self.mbps[0]
        ends = [*self.t_s[1:], self.t_s[0] + self.period_s]
        total = sum(
            rate * (end - start) for rate, start, end in zip(self.mbps, self.t_s, ends, strict=True)
        )
        return total / self.period_s

    def mbps_at(self, t: float) -> float:
        """Bandwidth at time ``t`` seconds: the latest sample at or before ``t``, looping."""
        if len(self.t_s) < 2:
            return self.mbps[0]
        start = self.t_s[0]
        wrapped = start + (t - start) % self.period_s
        index = max(bisect_right(self.t_s, wrapped) - 1, 0)
        return self.mbps[index]

    def segment_at(self, t: float) -> tuple[float, float]:
        """``(mbps, until)``: the bandwidth at ``t`` and the time it next changes (``inf`` for a
        constant trace), with the same looping as :meth:`mbps_at`, so a simulator can integrate
        a transfer across samples exactly instead of sampling the rate."""
        if len(self.t_s) < 2:
            return self.mbps[0], math.inf
        start, period = self.t_s[0], self.period_s
        loops = math.floor((t - start) / period)
        wrapped = t - loops * period
        index = max(bisect_right(self.t_s, wrapped) - 1, 0)
        end = self.t_s[index + 1] if index + 1 < len(self.t_s) else start + period
        return self.mbps[index], end + loops * period


def _parse_line(text: str, where: str) -> tuple[float, float]:
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != 2:
        raise FleetError(
            f"{where}: expected two comma-separated numbers 't_seconds,mbps', got {text!r}"
        )
    try:
        t, rate = float(fields[0]), float(fields[1])
    except ValueError:
        raise FleetError(f"{where}: expected two numbers 't_seconds,mbps', got {text!r}") from None
    if not (math.isfinite(t) and math.isfinite(rate)):
        raise FleetError(f"{where}: expected finite numbers, got {text!r}")
    if rate <= 0:
        raise FleetError(f"{where}: mbps must be > 0, got {fields[1]}")
    return t, rate


def load_trace(path: str | Path) -> BandwidthTrace:
    """Read a ``t_seconds,mbps`` CSV; ``#`` starts a comment and a header line is optional."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FleetError(f"{name}: bandwidth trace file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"{name}: cannot read bandwidth trace ({exc})") from None

    times: list[float] = []
    rates: list[float] = []
    seen_content = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        first_content = not seen_content
        seen_content = True
        if first_content and any(ch.isalpha() for ch in line.split(",")[0]):
            # A header such as "t_seconds,mbps"; only the first content line may be one.
            try:
                float(line.split(",")[0])
            except ValueError:
                continue
        t, rate = _parse_line(line, f"{name}:{lineno}")
        if times and t <= times[-1]:
            raise FleetError(
                f"{name}:{lineno}: time {t:g} is not after the previous sample's {times[-1]:g} "
                "(times must strictly increase)"
            )
        times.append(t)
        rates.append(rate)
    if not times:
        raise FleetError(f"{name}: no samples (expected lines of 't_seconds,mbps')")
    return BandwidthTrace(path=name, t_s=times, mbps=rates)
