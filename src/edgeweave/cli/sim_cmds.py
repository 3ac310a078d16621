"""`edgeweave simulate`: wiring only (scenario -> edgeweave.sim run or sweep -> tables, JSON,
plots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeweave.errors import SimError


def _ints(flag: str, text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SimError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise SimError(f"{flag}: expected at least one integer")
    return values


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def simulate(console: Console, scenario: Path, *, policy: str | None, devices: str | None,
             seed: str | None, duration_s: float | None, sweep: bool, policies: str | None,
             address: str | None, serial: bool, no_training: bool, json_out: Path | None,
             records: Path | None, plots: Path | None, report: Path | None = None) -> None:
    from edgeweave.sim.scenario import load_scenario

    scn = load_scenario(scenario)
    if duration_s is not None:
        if duration_s <= 0:
            raise SimError(f"--duration-s: must be > 0, got {duration_s}")
        scn = scn.model_copy(update={"duration_s": float(duration_s)})
    counts, seeds = _ints("--devices", devices), _ints("--seed", seed)
    if sweep:
        tables = _sweep(console, scn, counts, seeds, policies, address, serial,
                        not no_training, json_out, plots)
        _page(console, report, "edgeweave simulate --sweep", tables, scn)
        return
    if policies or address or serial:
        raise SimError("--policies, --address and --serial go with --sweep")
    if (counts is not None and len(counts) > 1) or (seeds is not None and len(seeds) > 1):
        raise SimError("several --devices or --seed values need --sweep")
    if counts is not None:
        scn = scn.with_devices(counts[0])
    if seeds is not None:
        scn = scn.model_copy(update={"seed": seeds[0]})
    tables = _single(console, scn, policy, not no_training, json_out, records, plots)
    _page(console, report, "edgeweave simulate", tables, scn)


def _page(console: Console, report: Path | None, command: str, tables: list[Table],
          scn: Any) -> None:
    """`--report`: the tables printed, as a page (edgeweave.cli.reporting)."""
    if report is not None:
        from edgeweave.cli import reporting

        reporting.write_tables(console, report, command, tables, scenario=scn.name,
                               source=str(scn.source), duration_s=scn.duration_s)


def _single(console: Console, scn: Any, policy: str | None, training: bool,
            json_out: Path | None, records: Path | None, plots: Path | None) -> list[Table]:
    from edgeweave.sim.run import simulate as run_scenario
    from edgeweave.sim.summary import write_records

    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed:.0f}/{task.total:.0f} simulated s"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"{scn.name}: {scn.devices} devices", total=scn.duration_s)
        run = run_scenario(scn, policy=policy, training=training,
                           progress=lambda now, _end: bar.update(task, completed=now))
    tables = [summary_table(console, scn, run.summary, run.wall_s)]
    if run.training is not None:
        tables.append(training_table(console, run.training))
    doc = run.to_json()
    if json_out:
        json_out.write_text(json.dumps(doc, indent=1, default=float))
        console.print(f"results written to {json_out}")
    if records:
        write_records(records, run.sim, run.outcome)
        console.print(f"{run.summary['requests']} request records written to {records}")
    if plots and run.training is not None:
        from edgeweave.sim.plots import plot_training

        plots.mkdir(parents=True, exist_ok=True)
        path = plot_training({run.training["experiment"]: run.training["rounds"]},
                             plots / "training.png",
                             run.training["time_to_accuracy"]["target"])
        console.print(f"figure written to {path}")
    elif plots:
        console.print("[yellow]note:[/] --plots: a single run draws only its training's "
                      "accuracy, and this one trains nothing; service time and failure rate "
                      "against the number of devices come from --sweep")
    return tables


def summary_table(console: Console, scn: Any, s: dict[str, Any], wall_s: float) -> Table:
    table = Table(title=f"{scn.name}: {s['devices']} devices, {scn.duration_s:g} s simulated, "
                        f"policy {s['policy']}")
    for col in ("", "mean", "p50", "p95", "p99"):
        table.add_column(col, justify="left" if not col else "right")
    for label, key in (("service time ms", "service_ms"), ("  network ms", "network_ms"),
                       ("  server ms", "server_ms"), ("  device ms", "device_ms")):
        st = s[key]
        table.add_row(label, _ms(st["mean"]), _ms(st["p50"]), _ms(st["p95"]), _ms(st["p99"]))
    console.print(table)
    f = s["failures"]
    console.print(f"{s['requests']} requests, {s['served']} answered; failed "
                  f"{100 * s['failure_rate']:.2f}% (mobility {f['mobility']}, network "
                  f"{f['network']}, capacity {f['capacity']}, deadline {f['deadline']})")
    modes = ", ".join(f"{m} {n}" for m, n in sorted(s["modes"].items(), key=lambda x: -x[1]))
    console.print(f"placements: {modes or '-'}; re-plan checks {s['replans']}, switches "
                  f"{s['switches']}")
    busy = ", ".join(f"{n} {100 * v['utilisation']:.0f}%" for n, v in s["servers"].items())
    console.print(f"server utilisation: {busy}")
    console.print(f"{s['events']} events in {wall_s:.1f} s wall "
                  f"({s['events'] / max(wall_s, 1e-9):,.0f} events/s)")
    for note in s["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    return table


def training_table(console: Console, tr: dict[str, Any]) -> Table:
    kind = (f"hierarchical, {tr['edge_rounds']} edge rounds per cloud round"
            if tr["hierarchical"] else "flat")
    table = Table(title=f"training {tr['experiment']} ({tr['model']}, {tr['clients']} clients, "
                        f"{kind}) on the fleet")
    for col in ("round", "sim start s", "round s", "available", "trained", "moved away",
                "late", "test acc"):
        table.add_column(col, justify="right")
    rounds = tr["rounds"]
    step = max(1, len(rounds) // 10)
    for r in rounds:
        if r["round"] % step and r is not rounds[-1] and r["round"] != 1:
            continue
        acc = r.get("test_acc")
        table.add_row(str(r["round"]), f"{r['sim_start_s']:.1f}", f"{r['sim_round_s']:.1f}",
                      str(r["available"]), str(r["clients"]), str(r["dropped_mobility"]),
                      str(r["late"]), "-" if acc is None or acc != acc else f"{acc:.3f}")
    console.print(table)
    tta = tr["time_to_accuracy"]
    reached = (f"reached {tta['target']:g} at round {tta['round']} ({tta['sim_s']:.1f} s "
               "simulated)" if tta["round"] else f"did not reach {tta['target']:g}")
    console.print(f"test accuracy {reached}")
    return table


def _sweep(console: Console, scn: Any, counts: list[int] | None, seeds: list[int] | None,
           policies: str | None, address: str | None, serial: bool, training: bool,
           json_out: Path | None, plots: Path | None) -> list[Table]:
    from edgeweave.sim.plots import plot_sweep
    from edgeweave.sim.policies import list_policies
    from edgeweave.sim.summary import document
    from edgeweave.sim.sweep import sweep

    names = [p.strip() for p in policies.split(",") if p.strip()] if policies else \
        list_policies()
    counts = counts or [scn.devices]
    seeds = seeds or [scn.seed]
    total = len(counts) * len(names) * len(seeds)
    where = "in this process" if serial else (f"on Ray at {address}" if address else
                                              "on a local Ray")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} runs"), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task(f"sweep {where}", total=total)
        rows = sweep(scn, counts, names, seeds, ray=not serial, address=address,
                     training=training, progress=lambda k, _n: bar.update(task, completed=k))
    table = Table(title=f"{scn.name}: {scn.duration_s:g} s simulated per run, "
                        f"mean over {len(seeds)} seed(s)")
    for col in ("devices", "policy", "requests", "mean ms", "p95 ms", "net ms", "srv ms",
                "failed %", "mob/net/cap/dl"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for n in counts:
        for p in names:
            rs = [r for r in rows if r["devices"] == n and r["policy"] == p]
            mean = _mean_of(rs)
            causes = "/".join(f"{mean('failures', c) or 0:.0f}" for c in
                              ("mobility", "network", "capacity", "deadline"))
            table.add_row(str(n), p, f"{mean('requests') or 0:.0f}",
                          _ms(mean("service_ms", "mean")), _ms(mean("service_ms", "p95")),
                          _ms(mean("network_ms", "mean")), _ms(mean("server_ms", "mean")),
                          f"{100 * (mean('failure_rate') or 0):.2f}", causes)
    console.print(table)
    doc = document("edgeweave.sim.sweep", {"scenario": scn.name, "source": scn.source,
                                           "duration_s": scn.duration_s, "devices": counts,
                                           "policies": names, "seeds": seeds, "rows": rows})
    if json_out:
        json_out.write_text(json.dumps(doc, indent=1, default=float))
        console.print(f"results written to {json_out}")
    if plots:
        plots.mkdir(parents=True, exist_ok=True)
        path = plot_sweep(rows, plots / "sweep.png", f"{scn.name} ({scn.duration_s:g} s)")
        console.print(f"figure written to {path}")
    return [table]


def _mean_of(rows: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    def mean(*keys: str) -> float | None:
        vals = []
        for r in rows:
            v: Any = r
            for k in keys:
                v = v[k]
            if v is not None:
                vals.append(float(v))
        return sum(vals) / len(vals) if vals else None
    return mean
