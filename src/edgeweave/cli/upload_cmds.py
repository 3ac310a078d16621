"""`infer|lab|netlab --upload`: whole stages before the first offload, or IONN's incremental
upload while the device answers queries (wiring and printing only)."""

from __future__ import annotations

import json
from itertools import groupby

from rich.console import Console
from rich.table import Table

from edgeweave.errors import EdgeWeaveError

UPLOADS = ("auto", "whole", "incremental")
#: `--upload auto` uploads incrementally when the plan's stages would take longer than this
#: to upload whole (at the first hop's planned rate): seconds of queries the device would
#: otherwise answer with no edge at all.
AUTO_INCREMENTAL_S = 10.0


def choose(upload: str, chosen, plan_file, adapt: bool) -> str:
    """The upload strategy `--upload` asks for (``auto``: by the plan's upload time)."""
    if upload not in UPLOADS:
        raise EdgeWeaveError(f"--upload: expected one of {', '.join(UPLOADS)}, got {upload!r}")
    if upload == "incremental" and (plan_file is not None or adapt):
        flag = "--plan" if plan_file is not None else "--adapt"
        raise EdgeWeaveError(f"--upload incremental plans its own partitions as they land; "
                             f"it does not take {flag} (use --upload whole)")
    if upload != "auto":
        return upload
    if plan_file is not None or adapt or not chosen.hop_names():
        return "whole"
    remote = sum(n.param_bytes for n in chosen.nodes
                 if chosen.placement[n.name] != chosen.tiers[0])
    seconds = remote * 8 / (chosen.links[chosen.hop_names()[0]].mbps * 1e6)
    return "incremental" if seconds > AUTO_INCREMENTAL_S else "whole"


def run(console: Console, model: str, graph, fleet, prof, dilation: float, edge: str,
        x, repeat: int, codecs: tuple[str, ...], upload_codec: str, token, tls,
        shape_bandwidth: bool, fallback_local: bool, json_out) -> None:
    from edgeweave.runtime.client import ClientOptions
    from edgeweave.runtime.incremental_session import (
        choose_weight_codec,
        run_incremental,
        schedule_for,
    )

    if upload_codec == "auto":
        with console.status("choosing how the weights travel (measuring top-1 agreement)"):
            choice = choose_weight_codec(graph, prof, codecs)
        schedule = choice.schedule
        console.print(f"--upload-codec auto: {choice.codec} ({choice.why})")
    else:
        schedule = schedule_for(prof, "incremental", codecs, graph, upload_codec)
    link = prof.links[prof.hop_names()[0]]
    _print_schedule(console, schedule, link.mbps)
    console.print(
        f"EMULATED: the device's uplink is {link.mbps:g} Mbit/s by shaping "
        + ("in this process and the servers (a token bucket, shared by queries and upload)"
           if shape_bandwidth else "in the kernel (tc tbf between network namespaces)")
        + f", RTT {link.rtt_ms:g} ms added by the runtime; the device's compute is this "
        f"host's dilated x{dilation:.1f}")
    with console.status(f"{repeat} queries while the upload runs"):
        summary = run_incremental(graph, schedule, edge, [x] * repeat,
                                  link=(link.mbps, link.rtt_ms), dilation=dilation,
                                  fleet=fleet.name, token=token, tls=tls,
                                  options=ClientOptions(shape_bandwidth=shape_bandwidth,
                                                        fallback_local=fallback_local))
    _print_timeline(console, summary, dilation)
    from edgeweave.runtime.inputs import top_classes

    top = top_classes(summary.results[-1].output, model)
    console.print("top-5: " + ", ".join(f"{name} {p:.2f}" for name, p in top)
                  + "  (random weights unless the model was given --weights)")
    if json_out:
        json_out.write_text(json.dumps(summary.to_json(), indent=1))
        console.print(f"results written to {json_out}")


def _print_schedule(console: Console, schedule, mbps: float) -> None:
    table = Table(title=f"{schedule.model}: upload order (IONN, benefit per byte), weights as "
                        f"{schedule.weight_codec}, predicted at {mbps:g} Mbit/s with the link "
                        f"to itself")
    for col in ("partition", "layers", "MB", "lands at (s)", "plan after", "codec",
                "ms/query"):
        table.add_column(col, justify="left" if col in ("layers", "plan after") else "right")
    table.add_row("0", "-", "0", "0", schedule.initial.mode, "-",
                  f"{schedule.initial.total_ms:.1f}")
    at = 0.0
    for k, step in enumerate(schedule.steps, start=1):
        at += step.upload_s
        layers = ", ".join(step.nodes[:4]) + (f" +{len(step.nodes) - 4}"
                                              if len(step.nodes) > 4 else "")
        table.add_row(str(k), layers, f"{step.nbytes / 1e6:.1f}", f"{at:.1f}",
                      step.plan.mode, step.plan.codec, f"{step.plan.total_ms:.1f}")
    console.print(table)
    if not schedule.steps:
        console.print("no upload lowers the latency at this bandwidth: the device runs the "
                      "model itself")


def _print_timeline(console: Console, summary, dilation: float) -> None:
    queries = summary.run.queries
    table = Table(title=f"{len(queries)} queries (device compute dilated x{dilation:.1f}; "
                        "edge at this host's speed)")
    for col in ("from (s)", "queries", "partitions", "plan", "median ms", "predicted ms",
                "fallbacks"):
        table.add_column(col, justify="left" if col == "plan" else "right")
    for (landed, mode), group in groupby(queries, key=lambda q: (q.landed, q.mode)):
        qs = list(group)
        ms = sorted(q.ms for q in qs)
        table.add_row(f"{qs[0].t_s:.1f}", str(len(qs)), str(landed), mode,
                      f"{ms[len(ms) // 2]:.1f}", f"{qs[0].predicted_ms:.1f}",
                      str(sum(q.fallback for q in qs)))
    console.print(table)
    for e in summary.run.events:
        if e["event"] == "landed":
            console.print(f"  {e['t_s']:7.1f} s  partition {e['partition']} landed "
                          f"({e['bytes'] / 1e6:.1f} MB)")
        elif e["event"] == "upload_failed":
            console.print(f"[yellow]  {e['t_s']:7.1f} s  upload stopped: {e['error']}[/]")
    first = summary.first_benefit_s()
    stats = summary.stats
    landed = sum(e["event"] == "landed" for e in summary.run.events)
    console.print(
        f"first benefit: {'none during the run' if first is None else f'{first:.1f} s'}; "
        f"{landed} of {len(summary.schedule.steps)} partitions landed, "
        f"{stats.bytes_sent / 1e6:.1f} MB sent ({stats.chunks_held} chunks already on the "
        f"edge, {stats.refused} re-sent as damaged)"
        + ("" if landed == len(summary.schedule.steps)
           else "; the rest stays for a later run to resume"))
