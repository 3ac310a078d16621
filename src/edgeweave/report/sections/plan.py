"""A plan (`edgeweave plan --json`): the inference modes compared, the cut, and the
Neurosurgeon figure (per-layer latency on each tier and output size, the cuts marked).

Read from the Plan JSON alone (edgeweave.plan.record is its writer). Layers are drawn in the
file's node order, fx's topological order, which is the model's own layer order.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from edgeweave import formats
from edgeweave.errors import ReportError
from edgeweave.report.markup import PALETTE, TIER_COLORS, fmt, number
from edgeweave.report.section import Problem, Section, SectionKind


class PlanKind(SectionKind):
    name = "plan"
    order = 10
    format_version = formats.PLAN

    def claims_file(self, path: Path, doc: dict[str, Any] | None) -> bool:
        return doc is not None and {"placement", "alternatives", "predicted"} <= doc.keys()

    def build(self, source: Path, doc: dict[str, Any] | None,
              problems: list[Problem]) -> Section:
        assert doc is not None
        p = _checked(source, doc)
        pred = p["predicted"]
        alts = [a for a in p["alternatives"] if isinstance(a, dict)]
        device_only = next((number(a.get("total_ms")) for a in alts
                            if a.get("mode") == "device-only"), None)
        total = number(pred.get("total_ms"))
        speedup = device_only / total if device_only and total else None
        sec = Section(
            "plan", f"Plan: {p['model']} on {p['fleet']}", source,
            summary=(f"{p['mode']} chosen for {p.get('objective', 'latency')}: predicted "
                     f"{fmt(total, 'ms')} per inference"
                     + (f", {speedup:.2f}x faster than device-only" if speedup else "")))
        sec.numbers = [("chosen mode", str(p["mode"])), ("predicted latency", fmt(total, "ms")),
                       ("vs device-only", f"{speedup:.2f}x" if speedup else "–"),
                       ("device energy", fmt(number(pred.get("energy_j")), "J")),
                       ("throughput", fmt(number(pred.get("throughput_fps")), "fps")),
                       ("bottleneck", str(pred.get("bottleneck", "–")))]
        _modes(sec, p, alts, device_only)
        _cut(sec, p)
        _neurosurgeon(sec, p)
        return sec


def _checked(source: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The fields this section draws from, present and of the right shape, or one error."""
    for key, kind in (("model", str), ("fleet", str), ("mode", str), ("tiers", list),
                      ("nodes", list), ("placement", dict), ("predicted", dict),
                      ("alternatives", list)):
        if not isinstance(doc.get(key), kind):
            raise ReportError(f"{source}: {key}: missing or not a {kind.__name__} (is this a "
                              "plan written by `edgeweave plan --json`?)")
    return doc


def _modes(sec: Section, p: dict[str, Any], alts: list[dict[str, Any]],
           device_only: float | None) -> None:
    rows: list[list[Any]] = []
    chosen: set[int] = set()
    for a in alts:
        ms = number(a.get("total_ms"))
        if a.get("mode") == p["mode"]:
            chosen.add(len(rows))
        rows.append([a.get("mode"), ms, number(a.get("energy_j")),
                     number(a.get("throughput_fps")),
                     f"{device_only / ms:.2f}x" if device_only and ms else "–",
                     a.get("meets_constraints") if a.get("available", True) else "unavailable",
                     a.get("note", "")])
    sec.add_heading("Inference modes")
    limits = {k: v for k, v in (p.get("constraints") or {}).items() if v is not None}
    sec.add_note(f"Objective: {p.get('objective', 'latency')}; constraints: "
                 + (", ".join(f"{k} {fmt(v)}" for k, v in limits.items()) or "none")
                 + f". Planner: {p.get('algorithm', '?')}"
                 + (" (exact)." if p.get("exact") else "."))
    sec.add_table(["mode", "latency ms", "device energy J", "fps", "vs device-only",
                   "meets constraints", "note"], rows, highlight=chosen)
    shown = [r for r in rows if r[1] is not None]
    if shown:
        import plotly.graph_objects as go

        colors = [PALETTE[0] if r[0] == p["mode"] else "#b8c0cc" for r in shown]
        fig = go.Figure(go.Bar(
            y=[r[0] for r in shown], x=[r[1] for r in shown], orientation="h",
            marker_color=colors, text=[fmt(r[1], "ms") for r in shown], textposition="auto",
            customdata=[[fmt(r[2], "J"), fmt(r[3], "fps")] for r in shown],
            hovertemplate="%{y}: %{x:.2f} ms<br>device energy %{customdata[0]}, "
                          "%{customdata[1]}<extra></extra>"))
        fig.update_layout(title="Predicted latency per inference, by mode (chosen in blue)",
                          height=110 + 34 * len(shown), xaxis_title="ms",
                          yaxis={"autorange": "reversed"})
        sec.add_figure(fig)


def _tier_of(p: dict[str, Any]) -> dict[str, int]:
    rank = {t: i for i, t in enumerate(p["tiers"])}
    return {n: rank.get(t, 0) for n, t in p["placement"].items()}


def _cut(sec: Section, p: dict[str, Any]) -> None:
    """Where the model is cut: layers and compute per tier, then per hop what crosses it."""
    tiers, tier = p["tiers"], _tier_of(p)
    pred = p["predicted"]
    counts = [sum(1 for t in tier.values() if t == k) for k in range(len(tiers))]
    compute = pred.get("tier_compute_ms") or {}
    sec.add_heading("The cut")
    sec.add_table(["tier", "node", "layers", "compute ms"],
                  [[t, (p.get("tier_nodes") or {}).get(t, t), counts[k],
                    number(compute.get(t))] for k, t in enumerate(tiers)])
    hops = [f"{a}-{b}" for a, b in itertools.pairwise(tiers)]
    crossing: dict[str, list[str]] = {h: [] for h in hops}
    for edge in p.get("edges") or []:
        if len(edge) == 2 and edge[0] in tier and edge[1] in tier:
            lo, hi = sorted((tier[edge[0]], tier[edge[1]]))
            for k in range(lo, hi):
                if edge[0] not in crossing[hops[k]]:
                    crossing[hops[k]].append(edge[0])
    links, cuts, per_hop = p.get("links") or {}, p.get("cuts") or {}, pred.get("hops") or {}
    rows = []
    for h in hops:
        link, cost = links.get(h) or {}, per_hop.get(h) or {}
        names = crossing[h]
        rows.append([h, f"{fmt(number(link.get('mbps')))} Mbit/s, {fmt(number(link.get('rtt_ms')))}"
                        " ms RTT", cuts.get(h, "none"),
                     _kib(cost.get("up_bytes")), number(cost.get("up_ms")),
                     _kib(cost.get("down_bytes")), number(cost.get("down_ms")),
                     ", ".join(names[:6]) + (f" (+{len(names) - 6})" if len(names) > 6 else "")
                     or "nothing"])
    sec.add_table(["hop", "link", "codec", "up KiB", "up ms", "down KiB", "down ms",
                   "tensors crossing"], rows,
                  caption=f"compute {fmt(number(pred.get('compute_ms')), 'ms')} + transfer "
                          f"{fmt(number(pred.get('transfer_ms')), 'ms')}")


def _kib(nbytes: Any) -> float | None:
    v = number(nbytes)
    return None if v is None else v / 1024


def _neurosurgeon(sec: Section, p: dict[str, Any]) -> None:
    """Kang et al. (Neurosurgeon, ASPLOS 2017, Fig. 4-6): per-layer latency on each tier over
    output size; a cut pays where the output is small and the layers before it cheap."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    inputs = set(p.get("inputs") or [])
    layers = [n for n in p["nodes"] if isinstance(n, dict) and n.get("name") not in inputs]
    if not layers:
        return
    tiers, tier = p["tiers"], _tier_of(p)
    names = [str(n.get("name")) for n in layers]
    ops = [str(n.get("op", "")) for n in layers]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38],
                        vertical_spacing=0.05)
    for t in tiers:
        ms = [number((n.get("latency_ms") or {}).get(t)) for n in layers]
        fig.add_trace(go.Bar(
            x=names, y=[v if v else None for v in ms], customdata=ops,
            name=f"{t} ({(p.get('tier_nodes') or {}).get(t, t)})",
            marker_color=TIER_COLORS.get(t),
            hovertemplate="%{x} (%{customdata})<br>" + t + ": %{y:.3g} ms<extra></extra>"),
            row=1, col=1)
    kib = [_kib(n.get("out_bytes")) for n in layers]
    placed = [tiers[tier.get(nm, 0)] for nm in names]
    fig.add_trace(go.Scatter(
        x=names, y=[v if v else None for v in kib], mode="lines+markers", name="output size",
        line={"color": "#333", "width": 1},
        marker={"color": [TIER_COLORS.get(t, "#333") for t in placed], "size": 6},
        customdata=placed, hovertemplate="%{x}: %{y:.3g} KiB, runs on %{customdata}"
                                         "<extra></extra>"), row=2, col=1)
    for pos in range(1, len(names)):
        if placed[pos] != placed[pos - 1]:
            fig.add_vline(x=pos - 0.5, line_dash="dash", line_color="red", line_width=1)
    start = 0
    for pos in range(1, len(names) + 1):  # shade each run of layers by the tier it runs on
        if pos == len(names) or placed[pos] != placed[start]:
            fig.add_vrect(x0=start - 0.5, x1=pos - 0.5, line_width=0, opacity=0.08,
                          fillcolor=TIER_COLORS.get(placed[start], "#999"))
            start = pos
    fig.update_yaxes(type="log", dtick=1, title_text="latency per layer (ms)", row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, title_text="output (KiB)", row=2, col=1)
    fig.update_xaxes(showticklabels=len(names) <= 60, tickangle=-60, row=2, col=1)
    fig.update_layout(
        title={"text": f"Per-layer latency on each tier and output size ({len(names)} layers)"
                       "<br><sup>shading: the tier each layer runs on; dashed red: a cut</sup>",
               "y": 0.97, "yanchor": "top"},
        barmode="group", height=600, margin={"t": 110},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0})
    sec.add_heading("Where the time goes, layer by layer")
    sec.add_figure(fig, "Hover a layer for its name, operator and latency; drag to zoom, "
                        "double-click to reset.")


KIND = PlanKind()
