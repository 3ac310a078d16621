"""A runtime run (`edgeweave infer|lab|netlab --json`): measured against predicted, per
segment of the data path and per request, with the fallbacks and the re-plans (adaptation).

Read from the run JSON (edgeweave.runtime.session.RunSummary.to_json). Files written before
`predicted_segments` was recorded show the measured segments only.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from edgeweave import formats
from edgeweave.errors import ReportError
from edgeweave.report.markup import PALETTE, fmt, number
from edgeweave.report.section import Problem, Section, SectionKind


class RuntimeRunKind(SectionKind):
    name = "runtime run"
    order = 20
    format_version = formats.RUNTIME_RUN

    def claims_file(self, path: Path, doc: dict[str, Any] | None) -> bool:
        return doc is not None and {"median_segments", "per_request_ms"} <= doc.keys()

    def build(self, source: Path, doc: dict[str, Any] | None,
              problems: list[Problem]) -> Section:
        assert doc is not None
        for key, kind in (("median_segments", dict), ("per_request_ms", list)):
            if not isinstance(doc.get(key), kind):
                raise ReportError(f"{source}: {key}: expected a {kind.__name__} (is this the "
                                  "--json of infer, lab or netlab?)")
        measured, predicted = number(doc.get("median_ms")), number(doc.get("predicted_ms"))
        error = (measured - predicted) / predicted * 100 if measured and predicted else None
        switches = [s for s in doc.get("switches") or [] if isinstance(s, dict)]
        replans = sum(1 for s in switches if s.get("switched"))
        requests = doc.get("requests", len(doc["per_request_ms"]))
        modes = list(dict.fromkeys(doc.get("per_request_mode") or [doc.get("mode", "?")]))
        mode = " → ".join(map(str, modes))
        sec = Section(
            "runtime run", f"Runtime run: {doc.get('model', '?')} on {doc.get('fleet', '?')}",
            source,
            summary=(f"{mode}, {fmt(requests)} requests: median {fmt(measured, 'ms')} "
                     f"measured vs {fmt(predicted, 'ms')} predicted"))
        sec.numbers = [
            ("mode", mode), ("median measured", fmt(measured, "ms")),
            ("predicted", fmt(predicted, "ms")),
            ("measured vs predicted", f"{error:+.0f}%" if error is not None else "–"),
            ("predicted online", fmt(number(doc.get("predicted_online_ms")), "ms")),
            ("fallbacks", f"{fmt(doc.get('fallbacks', 0))} of {fmt(requests)}"),
            ("re-plans", fmt(replans))]
        dilation = number(doc.get("device_dilation"))
        if dilation:
            sec.add_note(f"The device's compute is emulated on this host by time dilation "
                         f"x{dilation:.1f}; edge and cloud run at this host's speed. "
                         "\"Predicted online\" applies the tiers' measured load factors.")
        if len(modes) > 1:
            sec.add_note(f"The run re-planned ({mode}): the predictions are the last plan's "
                         f"({modes[-1]}), the measured medians are over every request.")
        _segments(sec, doc)
        _requests(sec, doc)
        _adaptation(sec, doc, switches)
        return sec


def _hop_chain(keys: set[str]) -> list[str]:
    """Tiers in data-path order, from the hop names in the segment keys (device-edge, ...)."""
    hops = [k.rsplit("_", 1)[0].split("-") for k in keys if k.endswith(("_uplink", "_downlink"))]
    succ = {h[0]: h[1] for h in hops if len(h) == 2}
    chain = [t for t in succ if t not in succ.values()][:1] or ["device"]
    while chain[-1] in succ and succ[chain[-1]] not in chain:
        chain.append(succ[chain[-1]])
    return chain


def _path_order(keys: set[str]) -> list[str]:
    """Segments in the order a request meets them: compute and encode on the device, then up
    each hop and through each tier, then the answer back down."""
    chain = _hop_chain(keys)
    want = [f"{chain[0]}_compute", "encode"]
    hops = list(itertools.pairwise(chain))
    for a, b in hops:
        want += [f"{a}-{b}_uplink", f"{b}_overhead", f"{b}_compute"]
    want += [f"{a}-{b}_downlink" for a, b in reversed(hops)]
    return [k for k in want if k in keys] + sorted(keys - set(want))


def _segments(sec: Section, doc: dict[str, Any]) -> None:
    measured = {k: number(v) for k, v in doc["median_segments"].items()}
    predicted = {k: number(v) for k, v in (doc.get("predicted_segments") or {}).items()}
    keys = {k for k in measured.keys() | predicted.keys()
            if k in measured or (predicted.get(k) or 0) > 0}
    order = _path_order(keys)
    rows = []
    for k in order:
        m, p = measured.get(k), predicted.get(k)
        rows.append([k, p, m, m - p if m is not None and p is not None else None])
    rows.append(["end to end", number(doc.get("predicted_ms")), number(doc.get("median_ms")),
                 None])
    sec.add_heading("Predicted vs measured, per segment (median)")
    if not predicted:
        sec.add_note("This file records no per-segment prediction (written before EdgeWeave "
                     "recorded it); measured segments only.")
    sec.add_table(["segment", "predicted ms", "measured ms", "measured - predicted ms"], rows,
                  highlight={len(rows) - 1})
    if not order:
        return
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, values, color in (("predicted", predicted, "#b8c0cc"),
                                 ("measured", measured, PALETTE[0])):
        if values:
            fig.add_trace(go.Bar(y=order, x=[values.get(k) for k in order], name=label,
                                 orientation="h", marker_color=color,
                                 hovertemplate="%{y}: %{x:.3g} ms<extra>" + label + "</extra>"))
    fig.update_layout(title="Where a request's time goes: predicted vs measured (median)",
                      barmode="group", height=140 + 46 * len(order), xaxis_title="ms",
                      yaxis={"autorange": "reversed"})
    sec.add_figure(fig)


def _requests(sec: Section, doc: dict[str, Any]) -> None:
    import plotly.graph_objects as go

    ms = [number(v) for v in doc["per_request_ms"]]
    if not ms:
        return
    n = list(range(1, len(ms) + 1))
    modes = doc.get("per_request_mode") or [doc.get("mode", "")] * len(ms)
    fell = doc.get("per_request_fallback") or [False] * len(ms)
    fig = go.Figure(go.Scatter(
        x=n, y=ms, mode="lines+markers", name="measured", line={"color": PALETTE[0]},
        customdata=[[m, "fell back to the device" if f else ""] for m, f in
                    zip(modes, fell, strict=False)],
        marker={"color": ["#b3261e" if f else PALETTE[0] for f in fell], "size": 7},
        hovertemplate="request %{x}: %{y:.2f} ms<br>%{customdata[0]} %{customdata[1]}"
                      "<extra></extra>"))
    for key, label, dash, where in (("predicted_ms", "predicted", "dash", "top left"),
                                    ("predicted_online_ms", "predicted online", "dot",
                                     "bottom right")):
        v = number(doc.get(key))
        if v is not None:
            fig.add_hline(y=v, line_dash=dash, line_color="#5b6475",
                          annotation_text=f"{label} {v:.1f} ms", annotation_position=where)
    for i in range(1, min(len(modes), len(ms))):
        if modes[i] != modes[i - 1]:
            fig.add_vline(x=i + 0.5, line_dash="dash", line_color=PALETTE[2],
                          annotation_text=f"re-planned: {modes[i]}")
    fig.update_layout(title="Latency of each request (red: fell back to the device)",
                      height=340, xaxis_title="request", yaxis_title="ms", showlegend=False)
    sec.add_heading("Each request")
    sec.add_figure(fig)
    notes = doc.get("fallback_notes") or []
    if doc.get("fallbacks"):
        sec.add_note(f"{doc['fallbacks']} request(s) fell back to running on the device"
                     + (": " + ", ".join(f"“{n}”" for n in notes) if notes else "."))


def _adaptation(sec: Section, doc: dict[str, Any], switches: list[dict[str, Any]]) -> None:
    if not switches:
        return
    rows = [[k, number(s.get("estimate_mbps")),
             ", ".join(f"{t} x{fmt(number(f))}" for t, f in (s.get("load_factors") or {}).items())
             or "–", s.get("old_mode"), s.get("new_mode"), number(s.get("predicted_old")),
             number(s.get("predicted_new")), bool(s.get("switched"))]
            for k, s in enumerate(switches, start=1)]
    sec.add_heading("Adaptation events")
    sec.add_note("Each time the measured bandwidth or the tiers' load moved, the runtime "
                 "re-priced the plan; it switched when the best plan was enough faster.")
    sec.add_table(["check", "estimated Mbit/s", "load factors", "plan in force", "best plan",
                   "predicted ms (in force)", "predicted ms (best)", "switched"], rows,
                  highlight={i for i, r in enumerate(rows) if r[-1]})


KIND = RuntimeRunKind()
