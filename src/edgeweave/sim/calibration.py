"""What a real runtime's requests sent one at a time tell the simulator that the Plan does not
(`Calibration`): each tier's real speed and the spread of its compute times, and the runtime's
own per-request cost beyond compute and links. `sim.validate` calibrates the simulated lab with
it; anything that replays a measured fleet can do the same from the runtime's recorded
segments.

Where each tier's compute was measured matters on a shared host: its speed drifts over
minutes (recorded: the cloud 73% slower in a cool-down than in the warm-up before it), so a
calibration taken beside a run (a warm-up before it, a cool-down after it) tells the
simulator a speed the run never had, and a queue magnifies the difference (a device whose
link stepped down). `in_run` measures the compute while it is in effect instead: each tier's
compute times as the runtime reported them for the run's own requests (the time a stage
computed, no link, queue or total), placed at their requests' arrival times; the simulated
tier then runs at the speed its neighbouring requests measured (`Calibration.levels`), each
request varying around it as the run's did. The per-request cost beyond compute and links
still comes from requests sent one at a time beside the run: the run's own requests may
have queued, so their totals would count the queueing as that cost."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edgeweave.plan import Plan

if TYPE_CHECKING:
    from edgeweave.sim.engine import Simulation


@dataclass(frozen=True)
class Calibration:
    """What the warm-up measured that the Plan does not say. Per tier, its compute times
    (``compute``, ms): the servers run at the speed their mean says (against the Plan's
    figure), and each simulated request's compute is drawn from their spread, tail included
    (`sim.jitter`). Per request, what the runtime spent beyond compute and the shaped links
    (``overhead``, ms): encoding and decoding tensors, the gRPC calls, the servers'
    bookkeeping, over ``hops`` hops. The calibrating requests go one at a time, so nothing in
    them queued: what their total holds beyond the tiers' compute and the links' times is that
    per-request cost, which the simulator adds per hop crossed (`Application.overhead_ms`).
    """

    planned: dict[str, float] = field(default_factory=dict)  # tier -> the Plan's compute ms
    compute: dict[str, list[float]] = field(default_factory=dict)
    overhead: list[float] = field(default_factory=list)
    hops: int = 0
    #: per tier (if measured in the run, `in_run`): the run time (s) each of ``compute`` was
    #: measured at, in order
    at: dict[str, list[float]] = field(default_factory=dict)

    @property
    def load(self) -> dict[str, float]:
        """Per tier, measured / planned compute (the runtime's load factor over the
        calibrating requests)."""
        return {t: float(np.mean(ms)) / self.planned[t] for t, ms in self.compute.items()}

    @property
    def cv(self) -> dict[str, float]:
        """Per tier, the coefficient of variation of the times each request's is drawn from
        (`spread`)."""
        return {t: float(np.std(ms, ddof=1) / np.mean(ms))
                for t, ms in ((t, self.spread(t)) for t in self.compute)}

    def levels(self, tier: str, track: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The tier's speed through the run: at each measured time (``at``), the mean of the
        ``track`` compute times measured nearest to it (`TRACK` if 0) over the run's mean, so
        the simulator's factor for the run's mean speed (`load`) times it is the speed in
        effect then (between measured times, interpolated)."""
        t = np.asarray(self.at[tier], dtype=float)
        ms = np.asarray(self.compute[tier], dtype=float)
        k = min(len(ms), track or TRACK)
        sums = np.concatenate([[0.0], np.cumsum(ms)])
        lo = np.clip(np.arange(len(ms)) - k // 2, 0, len(ms) - k)
        local = (sums[lo + k] - sums[lo]) / k
        return t, local / ms.mean()

    def spread(self, tier: str) -> list[float]:
        """The tier's compute times to draw each request's from: as measured, or, if measured
        through the run (``at``), each over the speed in effect when it was (`levels`), so the
        drift is not counted twice (once as the level, once as spread)."""
        if tier not in self.at:
            return self.compute[tier]
        _, level = self.levels(tier)
        return (np.asarray(self.compute[tier]) / level).tolist()

    @property
    def overhead_ms(self) -> float:
        """Per hop crossed, the mean of the runtime's per-request cost."""
        return float(np.mean(self.overhead)) / self.hops if self.overhead else 0.0

    @property
    def overhead_cv(self) -> float:
        o = self.overhead
        return float(np.std(o, ddof=1) / np.mean(o)) if len(o) > 1 and np.mean(o) > 0 else 0.0


#: a request's measured overhead below this is timer noise (a factor must be > 0)
_MIN_OVERHEAD_MS = 0.01

#: measurements a tier's speed in effect is averaged over (`Calibration.levels`): at a
#: compute cv of 0.2-0.4 the mean of 30 is within ~5-7%, and at the lab's request a second
#: they span half a minute, shorter than the drifts recorded (tens of percent over minutes)
TRACK = 30


def calibrate(warm: list[dict[str, float]], chosen: Plan) -> Calibration:
    """`Calibration` from requests' segments (``<tier>_compute``, ``<hop>_uplink``,
    ``total_ms``), sent one at a time (nothing queued in them)."""
    pred = chosen.predicted
    planned, compute = {}, {}
    for tier, ms in pred["tier_compute_ms"].items():
        got = [s[f"{tier}_compute"] for s in warm if s.get(f"{tier}_compute", 0.0) > 0]
        if ms >= 1.0 and len(got) >= 3:  # below a ms the plan's figure is timer noise
            planned[tier], compute[tier] = ms, got
    hops = {name: h for name, h in pred["hops"].items() if h["up_ms"] > 0}
    if not hops or len(warm) < 3:
        return Calibration(planned, compute)
    rest = [max(_MIN_OVERHEAD_MS, s["total_ms"] - _links_ms(s, hops) -
                sum(v for k, v in s.items() if k.endswith("_compute"))) for s in warm]
    return Calibration(planned, compute, rest, len(hops))


def during_run(timed: list[dict[str, float]], batch: list[int], chosen: Plan,
               around: Calibration) -> Calibration:
    """The compute the host gave a timed run, with the per-hop cost of ``around`` (the
    calibration taken beside it): each tier's times from the timed requests' segments, but
    those the edge ran in a batch of more than one left out (``batch``, per request: their
    compute is the batch's). The timed requests may have queued, so what their totals hold
    beyond compute and links is not the runtime's own cost: that comes from ``around``."""
    singles = [seg for seg, b in zip(timed, batch, strict=True) if b <= 1]
    return dataclasses.replace(calibrate(singles, chosen), overhead=around.overhead,
                               hops=around.hops)


def in_run(timed: list[dict[str, float]], batch: list[int], times: np.ndarray, chosen: Plan,
           around: Calibration) -> Calibration:
    """`during_run` with each compute time placed at its request's arrival (``times``, s, as
    the simulation's clock): the tiers follow the speed measured through the run."""
    got = during_run(timed, batch, chosen, around)
    at = {tier: [float(t) for seg, b, t in zip(timed, batch, times, strict=True)
                 if b <= 1 and seg.get(f"{tier}_compute", 0.0) > 0] for tier in got.compute}
    return dataclasses.replace(got, at=at)


def follow_levels(sim: Simulation, cal: Calibration) -> None:
    """Make ``sim``'s tiers measured through a run (``cal.at``) compute at the speed in effect
    at each simulated time (`Calibration.levels`), before ``sim`` runs."""
    for tier, jits in sim.tier_jitters().items():
        if tier in cal.at:
            t, level = cal.levels(tier)
            for jit in jits:
                jit.level = lambda t=t, level=level: float(np.interp(sim.env.now, t, level))


def _links_ms(segments: dict[str, float], hops: dict[str, dict[str, float]]) -> float:
    """The time a request spent on the shaped links: the runtime's own record of each hop
    (``<hop>_uplink``, ``<hop>_downlink``), the Plan's figure where it has none. A request
    sent after the link changed (a cool-down after a bandwidth step) crossed the new link,
    not the one the Plan was made for: the Plan's figure would count the difference as the
    runtime's own cost."""
    return sum(segments.get(f"{name}_uplink", h["up_ms"]) +
               segments.get(f"{name}_downlink", h["down_ms"]) for name, h in hops.items())
