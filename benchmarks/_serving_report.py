"""The serving benchmark's tables and verdicts (`serving.py`): the rows by load, the systems
side by side at the same p99 objective, the issue's goals met or not, the shared stems' totals,
and the batch runners' times."""

from __future__ import annotations

from rich.table import Table

from edgeweave.serve.loadgen import Row
from edgeweave.serve.loadgen.stats import refusals


def misses(records: list) -> dict:
    """Why the requests of one run that were not answered in time were missed: answered late
    (and by how much past the deadline, the median and worst, ms), refused by status,
    throttled by the device, lost; with the answered ones' latency over the deadline. The
    refusals come from the load generator's records of each one's status and details
    (`loadgen.stats.refusals`: by status, then by the rule its details name, with an
    example)."""
    out: dict = {"sent": len(records), "in_time": sum(r.in_time for r in records)}
    late = sorted((r.latency_s - r.deadline_s) * 1000.0 for r in records
                  if r.end == "answered" and not r.in_time)
    if late:
        out["late"] = {"n": len(late), "median_over_ms": late[len(late) // 2],
                       "worst_over_ms": late[-1]}
    for r in records:
        if r.throttled:
            key = "throttled"
        elif r.end == "lost":
            key = "lost"
        elif r.end != "answered":
            key = f"refused {r.status or '?'}"
        else:
            continue
        out[key] = out.get(key, 0) + 1
    out["refusals"] = refusals(records)
    share = sorted(r.latency_s / r.deadline_s for r in records
                   if r.end == "answered" and r.deadline_s > 0)
    if share:
        out["answered_latency_over_deadline_p50_p99"] = [
            round(share[len(share) // 2], 3), round(share[min(len(share) - 1,
                                                          int(0.99 * len(share)))], 3)]
    return out


def rows_table(rows: list[Row], note: str) -> Table:
    """Every row: one system, one model, one load."""
    table = Table(title=f"open-loop Poisson load; {note}")
    for col in ("system", "model", "load", "offered/s", "thru/s", "goodput/s", "p50 ms",
                "p99 ms", "SLO", "rejected", "fallback", "lost"):
        table.add_column(col, justify="left" if col in ("system", "model") else "right")
    for r in rows:
        table.add_row(r.system, r.model, f"{r.load:.0%}", f"{r.offered_rps:.1f}",
                      f"{r.throughput_rps:.1f}", f"{r.goodput_rps:.1f}", f"{r.p50_ms:.0f}",
                      f"{r.p99_ms:.0f}", f"{r.slo_attainment:.1%}", str(r.rejected),
                      str(r.fallback), str(r.lost))
    return table


def at_objective(rows: list[Row], slo_ms: float) -> float:
    """The most throughput reached at a load where p99 stayed within the SLO (0 if none)."""
    return max((r.throughput_rps for r in rows if r.p99_ms == r.p99_ms and r.p99_ms <= slo_ms),
               default=0.0)


def summary(rows: list[Row], infos: dict[str, dict]) -> tuple[Table, list[dict], list[str]]:
    t = Table(title="at the same p99 objective (p99 <= SLO): most throughput, and SLO "
                    "attainment by load")
    for col in ("model", "system", "thru @ p99<=SLO", "SLO 80%", "SLO 100%", "SLO 150%",
                "capacity @ SLO", "goodput 200% / capacity", "lost", "adds up"):
        t.add_column(col, justify="left" if col in ("model", "system") else "right")
    out, goals = [], []
    for model, info in infos.items():
        mine = [r for r in rows if r.model == model]
        best = {}
        for system in dict.fromkeys(r.system for r in mine):
            sr = [r for r in mine if r.system == system]
            att = {r.load: r.slo_attainment for r in sr}
            top = next((r for r in sr if r.load == 2.0), None)
            best[system] = at_objective(sr, info["slo_ms"])
            own = info.get("capacity_at_slo_rps", {}).get(system)
            entry = {"model": model, "system": system, "throughput_at_slo_p99": best[system],
                     "capacity_at_slo_rps": own, "slo_attainment": att,
                     "goodput_200_over_capacity": (top.goodput_rps / info["capacity_rps"]
                                                   if top else None),
                     "lost": sum(r.lost for r in sr), "adds_up": all(r.adds_up for r in sr)}
            out.append(entry)
            t.add_row(model, system, f"{best[system]:.1f}",
                      *(f"{att[x]:.1%}" if x in att else "-" for x in (0.8, 1.0, 1.5)),
                      "-" if own is None else f"{own:.1f}",
                      f"{entry['goodput_200_over_capacity']:.0%}" if top else "-",
                      str(entry["lost"]), "yes" if entry["adds_up"] else "NO")
        goals += _goals(model, best, mine, info["capacity_rps"])
        goals.append(f"{model}: {info['capacity_method']}; measured (req/s): " + ", ".join(
            f"{s} {', '.join(f'{x:.1f}' for x in v)}"
            for s, v in info["capacity_rounds_rps"].items()))
        goals.append(f"{model}: {info['slo_method']}")
    return t, out, goals


def _goals(model: str, best: dict[str, float], rows: list[Row], capacity: float
           ) -> list[str]:
    def row(system: str, load: float) -> Row | None:
        return next((r for r in rows if r.system == system and r.load == load), None)

    lines = []
    ew = best.get("edgeweave", 0.0)
    if "ray" in best:
        ok = ew > 0 and ew >= best["ray"]
        lines.append(f"{model}: throughput at the p99 objective {ew:.1f} vs Ray Serve "
                     f"{best['ray']:.1f} req/s (0: p99 above the SLO at every load): "
                     f"{'met' if ok else 'NOT met'}")
        for load in (0.8, 1.0, 1.5):
            a, b = row("edgeweave", load), row("ray", load)
            if a and b:
                verdict = ("met" if a.slo_attainment > b.slo_attainment else "tie, NOT higher"
                           if a.slo_attainment == b.slo_attainment else "NOT met")
                lines.append(f"{model} at {load:.0%}: SLO attainment {a.slo_attainment:.1%} vs "
                             f"Ray Serve {b.slo_attainment:.1%}: {verdict}")
    if "fifo" in best and ew > 0 and best["fifo"] > 0:
        ratio = ew / best["fifo"]
        lines.append(f"{model}: throughput at the p99 objective {ratio:.2f}x the old server's "
                     f"(goal 1.5x): {'met' if ratio >= 1.5 else 'NOT met'}")
    elif "fifo" in best:
        lines.append(f"{model}: throughput at the p99 objective {ew:.1f} vs the old server's "
                     f"{best['fifo']:.1f} req/s (0: p99 above the SLO at every load): "
                     f"{'met' if ew > 0 else 'NOT met'}")
    top = row("edgeweave", 2.0)
    if top is not None and capacity:
        share = top.goodput_rps / capacity
        over = " (more than the capacity measured: it was measured low)" if share > 1.1 else ""
        lines.append(f"{model} at 200%: goodput {top.goodput_rps:.1f} req/s = {share:.0%} of "
                     f"capacity{over} (goal 90%): {'met' if share >= 0.9 else 'NOT met'}")
    if top is not None:
        lines.append(f"{model} at 200%: lost {top.lost}, sent {top.sent} = answered "
                     f"{top.answered} + fallback {top.fallback} + refused {top.refused} + "
                     f"lost {top.lost}: {'adds up' if top.adds_up else 'DOES NOT add up'}")
    return lines


def stem_goals(rows: list[dict]) -> list[str]:
    """Mainstream's total quality against no sharing and max sharing, budget by budget."""
    by: dict[float, dict[str, float | None]] = {}
    for r in rows:
        if r.get("metric") == "event" and "budget_ms_per_s" in r:
            by.setdefault(r["load"], {})[r["system"]] = r["total_quality"]
    lines = []
    for load, q in by.items():
        m = q.get("mainstream")
        others = [v for k, v in q.items() if k != "mainstream" and v is not None]
        ok = m is not None and all(m >= v for v in others)
        shown = ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in q.items())
        lines.append(f"shared stems at {load:g}x the budget: total quality {shown}: "
                     f"{'met' if ok else 'NOT met'}")
    return lines
