"""`infer` and `lab`: wiring only (graph + fleet + profile + plan + runtime session)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgeweave.errors import EdgeWeaveError


def codec_candidates(spec: str) -> tuple[str, ...]:
    """`--codec none`, `--codec fp16,int8+zstd` or `--codec auto` (every cut codec)."""
    from edgeweave.profile.activations import CUT_CODECS
    from edgeweave.runtime.tensors import activation_codec

    names = CUT_CODECS if spec == "auto" else tuple(c.strip() for c in spec.split(",") if c)
    for name in names:
        activation_codec(name)  # a CodecError names the bad one
    return names or ("none",)


def _prepare(console: Console, model: str, fleet_spec: str | None, plan_file: Path | None,
             objective: str, mbps: float | None, codecs: tuple[str, ...] = ("none",),
             on_graph=None):
    from edgeweave.graph import capture_spec
    from edgeweave.plan import load_plan
    from edgeweave.profile import profile_graph
    from edgeweave.runtime.session import device_dilation, plan_for
    from edgeweave.topology import DEFAULT_FLEET, load_fleet

    fleet = load_fleet(fleet_spec or DEFAULT_FLEET)
    graph = capture_spec(model)
    if on_graph is not None:
        on_graph(graph)
    with console.status(f"profiling {model} on this host"):
        measured = profile_graph(graph, fleet, warmup=2, repeats=5)
    prof, chosen = plan_for(measured, fleet, objective, mbps, codecs=codecs)
    if plan_file is not None:
        chosen = load_plan(plan_file)
        if set(chosen.placement) != {n.name for n in graph.nodes}:
            raise EdgeWeaveError(f"--plan {plan_file}: its nodes do not match {model}'s graph")
    return graph, fleet, prof, chosen, device_dilation(measured, fleet)


def infer(console: Console, model, fleet_spec, edge, plan_file, input_file, repeat, objective,
          codec, mbps, token_file, cert_dir, adapt, json_out, token=None,
          shape_bandwidth=True, fallback_local=False, upload="auto", slo_ms=None,
          upload_codec="auto", throttle_k=0.0) -> None:
    from edgeweave.cli import upload_cmds
    from edgeweave.runtime.client import ClientOptions
    from edgeweave.runtime.inputs import load_input
    from edgeweave.runtime.session import run
    from edgeweave.security import ClientTLS, load_token

    if upload != "auto":  # a conflicting flag fails before any work
        upload_cmds.choose(upload, None, plan_file, adapt)
    token = token or (load_token(token_file) if token_file else None)
    tls = ClientTLS.for_node(cert_dir, "device") if cert_dir else None
    edges = [edge] if isinstance(edge, str) else list(edge or ())
    if len(edges) == 1:
        _check_edge(console, edges[0], token, tls, fallback_local)
    elif edges:
        _check_edges(console, edges, token, tls, fallback_local)
    codecs = codec_candidates(codec or "none")

    def warm(graph) -> None:  # an incremental upload's edge captures the model meanwhile
        if len(edges) == 1 and upload != "whole" and plan_file is None and not adapt:
            from edgeweave.runtime.upload import warm_edge

            warm_edge(edges[0], model, graph.input_shape, token=token, tls=tls)

    graph, fleet, prof, chosen, dilation = _prepare(console, model, fleet_spec, plan_file,
                                                    objective, mbps, codecs, warm)
    if len(edges) > 1 and upload == "incremental":
        raise EdgeWeaveError("--upload incremental uploads to one edge: give one --edge "
                             "(or --upload whole)")
    if len(edges) == 1 and upload_cmds.choose(upload, chosen, plan_file, adapt) == "incremental":
        console.print(f"--upload {upload}: uploading {model} incrementally (IONN); the device "
                      f"answers every query meanwhile")
        return upload_cmds.run(console, model, graph, fleet, prof, dilation, edges[0],
                               load_input(input_file, graph.input_shape), repeat,
                               codec_candidates(codec or "auto"), upload_codec,
                               token, tls, shape_bandwidth, fallback_local, json_out)
    first_link = fleet.tier_path().links[0] if fleet.tier_path().links else None
    trace = first_link.trace if first_link is not None and mbps is None else None
    if first_link is not None and trace is not None and shape_bandwidth:
        console.print(f"replaying the {first_link.src}-{first_link.dst} bandwidth trace "
                      f"({trace.period_s:g} s, mean {trace.mean_mbps:.2f} Mbit/s)")
    x = load_input(input_file, graph.input_shape)
    summary = run(graph, chosen, edges or None, [x] * repeat, dilation=dilation, token=token,
                  tls=tls, options=ClientOptions(adapt=adapt, shape_bandwidth=shape_bandwidth,
                                                 fallback_local=fallback_local, slo_ms=slo_ms,
                                                 throttle_k=throttle_k),
                  profile=prof,
                  trace=trace if shape_bandwidth else None)
    _report(console, summary, model)
    if json_out:
        json_out.write_text(json.dumps(summary.to_json(), indent=1))
        console.print(f"results written to {json_out}")


def _check_edge(console: Console, edge, token, tls, fallback_local) -> None:
    """Before any work: an edge that cannot be used at all (unreachable, refusing our token or
    certificate) means a misconfigured command, an error unless --fallback-local says to run
    on the device instead."""
    from edgeweave.runtime.edge_probe import probe_edge

    try:
        probe_edge(edge, token, tls)
    except EdgeWeaveError as e:
        if not fallback_local:
            raise EdgeWeaveError(f"{e} (--fallback-local runs the model on this device "
                                 f"instead)") from None
        console.print(f"[yellow]{e}; running on this device (--fallback-local)[/]",
                      highlight=False)


def _check_edges(console: Console, edges, token, tls, fallback_local) -> None:
    """Several edges: one that cannot be used is a warning (requests fail over to the others);
    none usable is as one unusable edge."""
    from edgeweave.runtime.edge_probe import probe_edge

    bad = []
    for target in edges:
        try:
            probe_edge(target, token, tls)
        except EdgeWeaveError as e:
            bad.append(str(e))
            console.print(f"[yellow]{e}; requests go to the other edges[/]", highlight=False)
    if len(bad) == len(edges):
        _check_edge(console, edges[0], token, tls, fallback_local)


def installs(model: str) -> tuple[str, ...]:
    """The `serve --model` a lab's nodes need to build stages of `model`: a model file is
    installed by its operator (here, the lab), a built-in needs nothing."""
    from edgeweave.graph import names_a_file

    return (model,) if names_a_file(model) else ()


def lab(console: Console, model, fleet_spec, repeat, codec, mbps, json_out,
        fallback_local=False, upload="auto", upload_codec="auto") -> None:
    from edgeweave.runtime.lab import LocalLab

    with console.status("starting edge and cloud servers"), \
            LocalLab(models=installs(model)) as fleet_lab:
        pass_token = fleet_lab.token
        console.print(f"lab: edge {fleet_lab.edge_target}, "
                      f"cloud {fleet_lab.nodes['cloud'].target}")
        infer(console, model, fleet_spec, fleet_lab.edge_target, None, None, repeat, "latency",
              codec, mbps, None, None, False, json_out, token=pass_token,
              fallback_local=fallback_local, upload=upload, upload_codec=upload_codec)


def _report(console: Console, summary, model: str) -> None:
    plan = summary.plan
    cuts = ", ".join(f"{h}: {c}" for h, c in plan.cuts.items())
    console.print(f"[bold]{model}[/]: {plan.mode} on {plan.fleet} (cut codecs {cuts}); "
                  f"device compute emulated by "
                  f"time dilation x{summary.dilation:.1f}; edge/cloud run at this host's speed")
    table = Table(title=f"median of {len(summary.results)} requests (ms)")
    table.add_column("segment")
    table.add_column("predicted", justify="right")
    table.add_column("measured", justify="right")
    measured = summary.median_segments()
    predicted = summary.results[-1].predicted
    for key in sorted(set(measured) | set(predicted) - {"total_ms"}):
        table.add_row(key, f"{predicted[key]:.1f}" if key in predicted else "-",
                      f"{measured[key]:.1f}" if key in measured else "-")
    table.add_row("[bold]end to end[/]", f"{predicted['total_ms']:.1f}",
                  f"{summary.median_ms:.1f}")
    table.add_row("end to end, online (load factors)", f"{summary.median_predicted_now_ms:.1f}",
                  f"{summary.median_ms:.1f}")
    console.print(table)
    for sw in summary.switches:
        if sw["switched"]:
            load = ", ".join(f"{t} x{k:.2f}" for t, k in sw.get("load_factors", {}).items())
            console.print(f"re-planned at an estimated {sw['estimate_mbps']:.2f} Mbit/s"
                          f"{f' (load {load})' if load else ''}: "
                          f"{sw['old_mode']} -> {sw['new_mode']}, predicted "
                          f"{sw['predicted_old']:.1f} -> {sw['predicted_new']:.1f}")
    fallbacks = sum(r.fallback for r in summary.results)
    if fallbacks:
        console.print(f"[yellow]{fallbacks} request(s) fell back:[/] {summary.results[-1].note}")
    from edgeweave.runtime.inputs import top_classes

    top = top_classes(summary.results[-1].output, model)
    console.print("top-5: " + ", ".join(f"{name} {p:.2f}" for name, p in top)
                  + "  (random weights unless the model was given --weights)")


def netlab_cleanup(console: Console, prefix: str) -> None:
    """`netlab --cleanup`: delete what a crashed lab left (namespaces PREFIX-*)."""
    from edgeweave.runtime.netlab import cleanup

    gone = cleanup(prefix)
    console.print(f"deleted {', '.join(gone)}" if gone else
                  f"no network namespaces named {prefix}-* to delete")


def netlab(console: Console, model, fleet_spec, repeat, codec, mbps, json_out,
           prefix: str = "ew", upload: str = "auto", upload_codec: str = "auto") -> None:
    """Device, edge and cloud in their own network namespaces, links shaped by the kernel."""
    import subprocess
    import sys
    import tempfile

    from edgeweave.runtime.netlab import NetLab, netns_available
    from edgeweave.security import generate_token, write_token
    from edgeweave.topology import DEFAULT_FLEET, load_fleet

    ok, why = netns_available()
    if not ok:
        console.print(f"[yellow]network namespaces unavailable ({why}); falling back to the "
                      "in-process token-bucket shaper[/]")
        return lab(console, model, fleet_spec, repeat, codec, mbps, json_out, upload=upload,
                   upload_codec=upload_codec)
    fleet = load_fleet(fleet_spec or DEFAULT_FLEET)
    path = fleet.tier_path()
    hops = [(lk.mbps, lk.rtt_ms) for lk in path.links]
    if mbps is not None:
        hops[0] = (mbps, hops[0][1])
    tiers = [n.tier for n in path.nodes]
    with tempfile.TemporaryDirectory(prefix="edgeweave-netlab-") as tmp, \
            NetLab(tiers, hops, prefix=prefix) as net:
        token_file = Path(tmp) / "token"
        write_token(token_file, generate_token())
        serve = [sys.executable, "-m", "edgeweave", "serve", "--token-file", str(token_file),
                 *(a for m in installs(model) for a in ("--model", m))]
        procs, upstream = [], None
        for level in range(len(tiers) - 1, 0, -1):
            tier = tiers[level]
            host = net.address(tier, from_node=tiers[level - 1])
            args = [*serve, "--role", tier, "--listen", f"{host}:50051"]
            if upstream:
                args += ["--next", upstream]
            procs.append(net.popen(tier, args, stdout=subprocess.PIPE, text=True))
            assert procs[-1].stdout is not None  # stdout=PIPE
            first = procs[-1].stdout.readline()
            console.print(f"{tier} namespace: {first.strip()}")
            upstream = f"{host}:50051"
        replays = [net.replay(k, lk.trace) for k, lk in enumerate(path.links)
                   if lk.trace is not None and not (k == 0 and mbps is not None)]
        console.print(f"kernel shaping: {', '.join(f'{a:g} Mbit/s' for a, _ in hops)} "
                      f"(tbf); RTT added in the runtime's link layer (no netem here)"
                      + (f"; replaying {len(replays)} bandwidth trace(s)" if replays else ""))
        argv = [sys.executable, "-m", "edgeweave", "infer", model, "--edge", upstream,
                "--token-file", str(token_file), "--repeat", str(repeat),
                *(["--codec", codec] if codec else []),
                "--shaping", "kernel", "--upload", upload, "--upload-codec", upload_codec,
                *(["--fleet", fleet_spec] if fleet_spec else []),
                *(["--mbps", str(mbps)] if mbps is not None else []),
                *(["--json", str(json_out)] if json_out else [])]
        try:
            device = net.popen(tiers[0], argv)
            if device.wait() != 0:
                raise EdgeWeaveError(f"netlab: the device's `edgeweave infer` failed (exit "
                                     f"{device.returncode}; its error is above)")
        finally:
            for r in replays:
                r.stop()
            for p in procs:
                p.terminate()
                p.wait(timeout=10)
