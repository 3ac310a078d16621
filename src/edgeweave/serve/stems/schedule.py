"""Mainstream's scheduler (Jiang et al., ATC 2018): each tenant's sharing depth and frame rate
under the server's compute budget, maximising the tenants' total quality.

The cost model. All tenants watch one stream. Block ``l`` of the backbone is shared by every
tenant frozen at depth >= l, so it runs once per frame any of them samples; with frame rates
that nest (each rate divides the next higher one, so a slower tenant's frames are a subset of a
faster one's) that is the highest of their rates. A tenant's own blocks and head run at its own
rate. In ms of compute per second::

    cost = sum_l block_ms[l] * max{fps_i : depth_i >= l}  +  sum_i fps_i * tail_ms(depth_i)

The search is exact. The shared part is a non-increasing "staircase" ``m_1 >= m_2 >= ...`` of
per-block rates; for a fixed staircase the tenants are independent except for the budget (a
tenant at depth d may sample at most ``m_d``), which is a multiple-choice knapsack
(:func:`edgeweave.serve.stems.knapsack.best_pick`). Enumerating every staircase over the
candidate rates (C(L + R, R) of them: 252 for 5 blocks and 5 rates) and keeping the best finds
the optimum: a staircase above the true per-block maxima only over-counts the cost, so the
optimum's own staircase wins. Mainstream searches greedily; on spaces this small exact is cheap.

Baselines at the same budget: no sharing (every tenant fine-tuned whole, depth 0) and maximal
sharing (every tenant at its deepest depth), each with its frame rates chosen by the same search.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeweave.serve.stems.backbone import STEM_BLOCKS, check_depth
from edgeweave.serve.stems.costs import StemCosts
from edgeweave.serve.stems.errors import TenancyError
from edgeweave.serve.stems.knapsack import best_pick
from edgeweave.serve.stems.quality import (
    DEFAULT_EVENT_S,
    check_accuracy,
    check_metric,
    check_positive,
    quality,
)


@dataclass(frozen=True)
class Tenant:
    """What the scheduler knows of a tenant: its accuracy at each depth it was fine-tuned at
    (measured on held-out data) and how long its events last (the ``event`` metric's
    ``event_s``)."""

    name: str
    accuracy: Mapping[int, float]
    event_s: float = DEFAULT_EVENT_S

    def __post_init__(self) -> None:
        if not self.name:
            raise TenancyError("tenant name: expected a non-empty name")
        if not self.accuracy:
            raise TenancyError(f"tenant {self.name!r}: no accuracy measured at any depth")
        for depth, acc in self.accuracy.items():
            check_depth(depth, f"tenant {self.name!r} accuracy depth")
            check_accuracy(acc, f"tenant {self.name!r} accuracy at depth {depth}")
        check_positive(self.event_s, f"tenant {self.name!r} event_s", "seconds")


@dataclass(frozen=True)
class Choice:
    tenant: str
    depth: int
    fps: float
    accuracy: float
    quality: float


@dataclass(frozen=True)
class Schedule:
    """The chosen depth and frame rate of every tenant, what they cost (ms of compute per
    second) and the objective (sum of the tenants' qualities)."""

    policy: str
    metric: str
    budget_ms_per_s: float
    native_fps: float
    cost_ms_per_s: float
    value: float
    choices: tuple[Choice, ...] = field(default=())

    def choice(self, tenant: str) -> Choice:
        for c in self.choices:
            if c.tenant == tenant:
                return c
        raise TenancyError(f"tenant {tenant!r} is not in this schedule; tenants: "
                           f"{', '.join(c.tenant for c in self.choices)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_rates(rates: Sequence[float], native_fps: float, nested: bool = True
                ) -> tuple[float, ...]:
    """Candidate frame rates, highest first, none above the stream's own. ``nested``: each must
    divide the next higher one (and the stream's rate) a whole number of times, so that the
    frames tenants sharing a stem sample nest (a slower tenant's frames are a subset of a
    faster one's)."""
    native = check_positive(native_fps, "native_fps", "frames per second")
    if not rates:
        raise TenancyError("rates: expected at least one candidate frame rate")
    out = sorted({check_positive(r, "rates", "frames per second") for r in rates},
                 reverse=True)
    if out[0] > native * (1 + 1e-9):
        raise TenancyError(f"rates: {out[0]:g} fps is above the stream's own {native:g} fps")
    for hi, lo in zip([native, *out], out, strict=False) if nested else ():
        ratio = hi / lo
        if abs(ratio - round(ratio)) > 1e-6:
            raise TenancyError(
                f"rates: {lo:g} fps must divide {hi:g} fps a whole number of times (rates "
                f"{', '.join(f'{r:g}' for r in out)} of a {native:g} fps stream), so that a "
                "slower tenant's frames are a subset of a faster one's")
    return tuple(out)


def stem_cost(depths: Sequence[int], fps: Sequence[float], costs: StemCosts) -> float:
    """Milliseconds of compute per second of tenants at ``depths`` sampling at ``fps``."""
    shared = sum(costs.block_ms[level - 1] * max((f for d, f in zip(depths, fps, strict=True)
                                                  if d >= level), default=0.0)
                 for level in range(1, STEM_BLOCKS + 1))
    own = sum(f * costs.tail_ms(d) for d, f in zip(depths, fps, strict=True))
    return shared + own


def schedule(tenants: Sequence[Tenant], costs: StemCosts, budget_ms_per_s: float,
             rates: Sequence[float], native_fps: float, metric: str = "event",
             depths: Mapping[str, Collection[int]] | Collection[int] | None = None,
             policy: str = "mainstream") -> Schedule:
    """The schedule of greatest total quality within ``budget_ms_per_s``. ``depths`` restricts
    the depths considered (for every tenant, or per tenant name); a TenancyError names an
    unknown tenant, a bad field, or a budget too small to serve every tenant at all."""
    budget = check_positive(budget_ms_per_s, "budget", "ms of compute per second")
    check_metric(metric)
    levels = check_rates(rates, native_fps)
    allowed = _allowed_depths(tenants, depths)
    top = max(max(a) for a in allowed)
    best: tuple[float, float, list[tuple[int, float]]] | None = None
    for stair in itertools.combinations_with_replacement((*levels, 0.0)[::-1], top):
        rates_at = (float("inf"), *sorted(stair, reverse=True))  # m_0 = no limit, m_1 >= ...
        shared = sum(costs.block_ms[i] * m for i, m in enumerate(rates_at[1:]))
        if shared > budget:
            continue
        groups = [[(d, r) for d in allowed[i] for r in levels if r <= rates_at[d]]
                  for i in range(len(tenants))]
        pick = best_pick([[(r * costs.tail_ms(d),
                            quality(metric, t.accuracy[d], r, native_fps, t.event_s))
                           for d, r in g] for t, g in zip(tenants, groups, strict=True)],
                         budget - shared)
        if pick is None:
            continue
        chosen = [g[i] for g, i in zip(groups, pick.indices, strict=True)]
        real = stem_cost([d for d, _ in chosen], [r for _, r in chosen], costs)
        if best is None or (pick.value, -real) > (best[0], -best[1]):
            best = (pick.value, real, chosen)
    if best is None:
        raise TenancyError(_too_small(tenants, allowed, costs, budget, levels[-1]))
    value, real, chosen = best
    choices = tuple(Choice(t.name, d, r, t.accuracy[d],
                           quality(metric, t.accuracy[d], r, native_fps, t.event_s))
                    for t, (d, r) in zip(tenants, chosen, strict=True))
    return Schedule(policy, metric, budget, float(native_fps), real, value, choices)


def no_sharing(tenants: Sequence[Tenant], costs: StemCosts, budget_ms_per_s: float,
               rates: Sequence[float], native_fps: float, metric: str = "event") -> Schedule:
    """Every tenant runs its whole own model (depth 0); frame rates chosen within the budget."""
    return schedule(tenants, costs, budget_ms_per_s, rates, native_fps, metric, {0},
                    "no-sharing")


def max_sharing(tenants: Sequence[Tenant], costs: StemCosts, budget_ms_per_s: float,
                rates: Sequence[float], native_fps: float, metric: str = "event") -> Schedule:
    """Every tenant shares as deep as it was fine-tuned; frame rates chosen within the budget."""
    deepest = {t.name: {max(t.accuracy)} for t in tenants}
    return schedule(tenants, costs, budget_ms_per_s, rates, native_fps, metric, deepest,
                    "max-sharing")


def _allowed_depths(tenants: Sequence[Tenant],
                    depths: Mapping[str, Collection[int]] | Collection[int] | None
                    ) -> list[tuple[int, ...]]:
    if not tenants:
        raise TenancyError("tenants: expected at least one tenant")
    names = [t.name for t in tenants]
    if len(set(names)) != len(names):
        raise TenancyError(f"tenants: names must be unique, got {names}")
    if isinstance(depths, Mapping):
        unknown = sorted(set(depths) - set(names))
        if unknown:
            raise TenancyError(f"depths: unknown tenant(s) {', '.join(map(repr, unknown))}; "
                               f"tenants: {', '.join(names)}")
    out = []
    for t in tenants:
        wanted = depths.get(t.name) if isinstance(depths, Mapping) else depths
        if wanted is None:
            out.append(tuple(sorted(t.accuracy)))
            continue
        for d in wanted:
            check_depth(d, f"depths for tenant {t.name!r}")
        have = tuple(sorted(set(wanted) & set(t.accuracy)))
        if not have:
            raise TenancyError(f"tenant {t.name!r} was fine-tuned at depths "
                               f"{sorted(t.accuracy)}, none of the depths allowed "
                               f"({sorted(wanted)})")
        out.append(have)
    return out


def _too_small(tenants: Sequence[Tenant], allowed: list[tuple[int, ...]], costs: StemCosts,
               budget: float, slowest: float) -> str:
    # Sharing deeper never costs more (a block moves from each tenant's tail into the shared
    # part, run once), so every tenant at its deepest depth and the slowest rate is the floor.
    need = stem_cost([max(a) for a in allowed], [slowest] * len(tenants), costs)
    return (f"budget: {budget:.4g} ms of compute per second cannot serve all {len(tenants)} "
            f"tenants even at the lowest frame rate ({slowest:g} fps, sharing as deep as "
            f"allowed, needs {need:.4g}); raise the budget or serve fewer tenants")
