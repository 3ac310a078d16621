"""`edgeweave adapt edgent`: wiring only (digits branchy net + profile + plan.edgent + tables).

Training and profiling take tens of seconds while a decision takes milliseconds, so ``--cache
DIR`` keeps the trained net, its exit accuracies and its profile (:mod:`edgent_cache`), and
later calls (another ``--slo-ms``, ``--mbps`` or fleet) only re-plan.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _branches(console: Console, fleet, device: str | None, cache: Path | None, side: int,
              width: int, epochs: int, seed: int):
    """Exit branches of the digits branchy net on ``fleet``: from the ``cache`` entry for these
    options when there is a sound one (retargeted to the fleet, nothing re-measured), else
    trained, profiled and cached."""
    from edgeweave.cli import edgent_cache
    from edgeweave.cli.entry_cache import make_dir
    from edgeweave.plan.branchy import digits_branchy, profile_branchy
    from edgeweave.plan.edgent import branches_from_profile
    from edgeweave.profile import retarget

    path = fleet.tier_path(device)  # an unknown --device fails here, before any training
    key = edgent_cache.CacheKey(side, width, epochs, seed)
    entry = None
    if cache is not None:
        make_dir(cache)
        entry = edgent_cache.load(cache, key, console)
    if entry is not None:
        meta = entry.meta
        console.print(f"using the net and profile cached in {cache} (trained {meta['epochs']} "
                      f"epochs at {meta['side']}x{meta['side']}, width {meta['width']}, seed "
                      f"{meta['seed']})")
        return branches_from_profile(retarget(entry.profile, path, fleet.name),
                                     meta["accuracies"]), meta
    import torch

    torch.set_num_threads(1)
    with console.status(f"training the digits branchy CNN ({epochs} epochs, real digits)"):
        tb = digits_branchy(side=side, width=width, epochs=epochs, seed=seed)
    with console.status("profiling it once (regression latency predictions)"):
        bp = profile_branchy(tb.net, fleet, tb.accuracies, tb.input_shape, device=device)
    net_meta = {"accuracies": tb.accuracies, "exit_points": tb.net.exit_points}
    if cache is not None:
        edgent_cache.store(cache, key, tb.net.state_dict(), bp.profile, net_meta)
    return bp.branches, {"side": side, "width": width, "epochs": epochs, "seed": seed,
                         **net_meta}


def _options_table(choice) -> Table:
    table = Table(title=f"Edgent: every (exit, cut) at {choice.mbps:g} Mbit/s, RTT "
                        f"{choice.rtt_ms:g} ms; requirement {choice.slo_ms:g} ms (predicted)")
    for col in ("exit", "cut", "where", "dev ms", "net ms", "edge ms", "total ms", "acc %",
                "meets"):
        table.add_column(col, justify="right", no_wrap=col == "where")
    chosen = choice.chosen.key
    for o in choice.options:
        style = "bold green" if o.key == chosen else None
        ok = o.latency_ms <= choice.slo_ms * (1 + 1e-9)
        where = o.where.replace("split after ", "after ")
        table.add_row(str(o.exit), f"{o.cut}/{o.n_ops}", where, f"{o.device_ms:.2f}",
                      f"{o.transfer_ms:.2f}", f"{o.edge_ms:.2f}", f"{o.latency_ms:.2f}",
                      f"{100 * o.accuracy:.1f}", "chosen" if o.key == chosen else
                      ("yes" if ok else "no"), style=style)
    return table


def _map_table(cmap) -> Table:
    table = Table(title=f"dynamic mode: configuration map for {cmap.slo_ms:g} ms (each state "
                        "planned at its lowest bandwidth)")
    for col in ("state", "Mbit/s", "planned at", "exit", "cut", "where", "pred ms", "acc %",
                "meets"):
        table.add_column(col, justify="right", no_wrap=col in ("Mbit/s", "where"))
    for e in cmap.entries:
        o = e.option
        table.add_row(str(e.state.index), e.state.label().removesuffix(" Mbit/s"),
                      f"{e.state.plan_mbps:.3g}", str(o.exit), f"{o.cut}/{o.n_ops}",
                      o.where.replace("split after ", "after "), f"{o.latency_ms:.2f}",
                      f"{100 * o.accuracy:.1f}", "yes" if e.feasible else "NO (fastest)")
    return table


def plot_choice(choice, path: Path) -> None:
    """Accuracy vs predicted latency of every option, the requirement and the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k in sorted({o.exit for o in choice.options}):
        opts = [o for o in choice.options if o.exit == k]
        ax.scatter([o.latency_ms for o in opts], [100 * o.accuracy for o in opts], s=22,
                   label=f"exit {k} (each cut)")
    c = choice.chosen
    ax.scatter([c.latency_ms], [100 * c.accuracy], marker="*", s=220, c="black",
               label=f"chosen: {c.label()}")
    ax.axvline(choice.slo_ms, color="red", ls="--", lw=1, label=f"requirement {choice.slo_ms:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("predicted latency (ms, log)")
    ax.set_ylabel("exit accuracy on digits test split (%)")
    ax.set_title(f"Edgent at {choice.mbps:g} Mbit/s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def edgent(console: Console, *, slo_ms: float, mbps: float | None, fleet_spec: str | None,
           device: str | None, cache: Path | None, side: int, width: int, epochs: int,
           seed: int, trace: Path | None, states: int, json_out: Path | None,
           plot: Path | None, page: Path | None = None) -> None:
    from edgeweave.cli.options import write_output, writing
    from edgeweave.plan.edgent import plan_edgent
    from edgeweave.plan.edgent_dynamic import bandwidth_states, build_config_map
    from edgeweave.topology import DEFAULT_FLEET, load_fleet, load_trace

    fleet = load_fleet(fleet_spec or DEFAULT_FLEET)
    samples = None if trace is None else load_trace(trace).mbps  # a bad file fails before training
    branches, meta = _branches(console, fleet, device, cache, side, width, epochs, seed)
    choice = plan_edgent(branches, slo_ms, mbps)
    tables = [_options_table(choice)]
    console.print(tables[0])
    c = choice.chosen
    console.print(f"choice: {c.label()}: predicted {c.latency_ms:.2f} ms <= {slo_ms:g} ms, "
                  f"accuracy {100 * c.accuracy:.1f}% (exit accuracies on the digits test split: "
                  + ", ".join(f"{100 * a:.1f}%" for a in meta["accuracies"]) + ")")
    doc = {"fleet": fleet.name, "net": meta, **choice.to_json()}
    if samples is not None:
        cmap = build_config_map(branches, bandwidth_states(samples, states), slo_ms)
        tables.append(_map_table(cmap))
        console.print(tables[-1])
        doc["config_map"] = cmap.to_json()
    if json_out:
        write_output("--json", json_out, json.dumps(doc, indent=1))
        console.print(f"record written to {json_out}")
    if plot:
        with writing("--plot", plot):
            plot_choice(choice, plot)
        console.print(f"figure written to {plot}")
    if page:
        from edgeweave.cli import reporting

        reporting.write_tables(console, page, "edgeweave adapt edgent", tables,
                               fleet=fleet.name, slo_ms=slo_ms, mbps=choice.mbps,
                               chosen=c.label(), predicted_ms=c.latency_ms, accuracy=c.accuracy)
