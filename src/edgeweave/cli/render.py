"""Rich tables for the CLI: presentation only, every number comes from the parts below."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # annotations only: listing fleets or models need not import torch
    from edgeweave.plan.record import Plan
    from edgeweave.profile.schema import Profile


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def plan_table(console: Console, plan: Plan) -> None:
    links = ", ".join(
        f"{h} {lk.mbps:g} Mbit/s rtt {lk.rtt_ms:g} ms" for h, lk in plan.links.items()
    )
    console.print(
        f"[bold]{plan.model}[/] on [bold]{plan.fleet}[/] "
        f"({', '.join(f'{t}={n}' for t, n in plan.tier_nodes.items())}; {links})"
    )
    table = Table(title=f"inference modes, objective: {plan.objective}")
    for col in ("mode", "latency ms", "device J", "fps", "vs device", "note"):
        table.add_column(col, justify="left" if col in ("mode", "note") else "right",
                         no_wrap=col != "note")
    device = plan.alternative("device-only")
    for alt in plan.alternatives:
        if not alt.available:
            table.add_row(alt.mode, "-", "-", "-", "-", alt.note or "n/a")
            continue
        speed = (device.total_ms or 0) / alt.total_ms if alt.total_ms else None
        note = "" if alt.meets_constraints in (None, True) else "breaks a constraint"
        table.add_row(alt.mode, _fmt(alt.total_ms), _fmt(alt.energy_j, ".3f"),
                      _fmt(alt.throughput_fps), _fmt(speed, ".2f") + "x", note)
    p = plan.predicted
    speed = (device.total_ms or 0) / p["total_ms"] if p["total_ms"] else None
    table.add_row(
        f"[bold green]chosen: {plan.mode}[/]", f"[bold]{p['total_ms']:.1f}[/]",
        f"[bold]{p['energy_j']:.3f}[/]", f"{p['throughput_fps']:.1f}",
        _fmt(speed, ".2f") + "x", "exact" if plan.exact else "best found",
    )
    console.print(table)
    cuts = ", ".join(f"{h}: {c}" for h, c in plan.cuts.items())
    console.print(f"algorithm: {plan.algorithm}; cut codecs: {cuts}")
    counts: dict[str, int] = {}
    for tier in plan.placement.values():
        counts[tier] = counts.get(tier, 0) + 1
    hops = ", ".join(
        f"{h}: up {v['up_bytes'] / 1024:.1f} KiB ({v['up_ms']:.1f} ms), "
        f"down {v['down_bytes'] / 1024:.1f} KiB ({v['down_ms']:.1f} ms)"
        for h, v in p["hops"].items()
    )
    console.print(
        f"placement: {', '.join(f'{n} nodes on {t}' for t, n in counts.items())}; "
        f"compute {p['compute_ms']:.1f} ms + transfer {p['transfer_ms']:.1f} ms; {hops}"
    )


def profile_table(console: Console, prof: Profile, top: int) -> Table:
    extra = prof.model_extra or {}
    host, reg = extra.get("host", {}), extra.get("regression", {})
    console.print(
        f"[bold]{prof.model}[/]: {len(prof.nodes)} nodes, "
        f"{sum(n.flops for n in prof.nodes) / 1e9:.2f} GFLOPs, "
        f"{sum(n.param_bytes for n in prof.nodes) / 2**20:.1f} MiB params; "
        f"host {host.get('gflops', 0):.1f} GFLOP/s on {host.get('torch_threads')} threads"
    )
    table = Table(title=f"slowest {top} layers on the device (ms)")
    table.add_column("node")
    table.add_column("op")
    table.add_column("MFLOPs", justify="right")
    table.add_column("out KiB", justify="right")
    table.add_column("host measured", justify="right")
    for t in prof.tiers:
        table.add_column(t, justify="right")
    rows = sorted(prof.nodes, key=lambda n: -n.latency_ms[prof.tiers[0]])[:top]
    for n in rows:
        table.add_row(n.name, n.op, f"{n.flops / 1e6:.1f}", f"{n.out_bytes / 1024:.1f}",
                      _fmt((n.model_extra or {}).get("host_ms"), ".3f"),
                      *(f"{n.latency_ms[t]:.3f}" for t in prof.tiers))
    console.print(table)
    totals = ", ".join(f"{t} {sum(n.latency_ms[t] for n in prof.nodes):.1f} ms" for t in prof.tiers)
    console.print(f"whole model: {totals}")
    if reg:
        console.print(
            f"latency regression: {reg['heldout_mape_pct']:.1f}% mean error per held-out layer, "
            f"{reg['heldout_total_error_pct']:.1f}% on their sum "
            f"({reg['heldout_layers']} held-out layers, {reg['calibration_layers']} calibration)"
        )
    return table


def fleets_table(console: Console, fleets: list) -> None:
    table = Table(title="built-in fleets")
    for col in ("name", "nodes", "links"):
        table.add_column(col)
    for fl in fleets:
        nodes = ", ".join(f"{n.name} ({n.tier}, {n.hardware.name})" for n in fl.nodes)
        links = ", ".join(f"{lk.src}-{lk.dst} {lk.mbps:g} Mbit/s {lk.rtt_ms:g} ms"
                          + (" +trace" if lk.trace else "") for lk in fl.links)
        table.add_row(fl.name, nodes, links)
    console.print(table)


def models_table(console: Console, models: list[tuple[str, str]]) -> None:
    table = Table(title="built-in models (or give path/to/file.py:factory)")
    table.add_column("name")
    table.add_column("description")
    for name, desc in models:
        table.add_row(name, desc)
    console.print(table)
