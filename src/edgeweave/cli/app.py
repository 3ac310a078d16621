"""The `edgeweave` command: wires topology -> graph -> profile -> plan; no logic of its own."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from edgeweave.cli import loadgen_cmds, render, report_cmds
from edgeweave.cli.options import SEED_MAX, cache_dir, integer, number, one_of, output_file
from edgeweave.errors import EdgeWeaveError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="EdgeWeave: profile a DNN and plan where each layer runs across device, edge and cloud.",
)
console = Console()


class Objective(StrEnum):
    latency = "latency"
    energy = "energy"
    throughput = "throughput"


class LatencySource(StrEnum):
    regression = "regression"
    measured = "measured"


FLEET_HELP = "Fleet YAML file or built-in fleet name (see `edgeweave fleets`)."
MBPS = number(gt=0, le=1e6)
MBPS_HELP = "Override the first hop's bandwidth (Mbit/s)."
FALLBACK_HELP = ("Run locally when the edge cannot be used at all: unreachable, refusing the "
                 "token or the TLS handshake (default: exit with an error naming the cause).")


def _profile(model: str, fleet: str | None, device: str | None, weights: Path | None,
             warmup: int, repeats: int, source: LatencySource):
    from edgeweave.graph import capture_spec
    from edgeweave.profile import profile_graph
    from edgeweave.topology import DEFAULT_FLEET, load_fleet

    fl = load_fleet(fleet or DEFAULT_FLEET)
    fl.tier_path(device)  # an unknown --device fails here, before the model is even built
    with console.status(f"capturing {model}"):
        graph = capture_spec(model, None if weights is None else str(weights))
    if graph.fallback_reason:
        console.print(f"[yellow]note:[/] {graph.fallback_reason}")
    with console.status(f"measuring {len(graph.nodes)} nodes of {model} on this host"):
        return profile_graph(graph, fl, device, warmup, repeats, source.value)


@app.command()
def profile(
    model: str = typer.Argument(
        ..., help="Model: torchvision name, digits-cnn, or file.py:factory."
    ),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    device: str = typer.Option(None, "--device", help="Device node of the fleet (default: first)."),
    weights: Path = typer.Option(None, "--weights", help="State-dict file to load into the model."),
    warmup: int = typer.Option(3, callback=integer(ge=0), help="Untimed runs before measuring."),
    repeats: int = typer.Option(10, callback=integer(ge=1),
                                help="Timed runs; each node's median is kept."),
    latency_source: LatencySource = typer.Option(
        LatencySource.regression, help="Scale the regression's prediction or the raw measurement."
    ),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the profile JSON here."),
    top: int = typer.Option(15, callback=integer(ge=1),
                            help="Rows of the per-node table (slowest on the device first)."),
) -> None:
    """Measure every layer on this host and predict its latency and energy on each tier."""
    from edgeweave.cli.options import writing

    prof = _profile(model, fleet, device, weights, warmup, repeats, latency_source)
    render.profile_table(console, prof, top)
    if json_out:
        with writing("--json", json_out):
            prof.save(json_out)
        console.print(f"profile written to {json_out}")


@app.command()
def plan(
    model: str = typer.Argument(None, help="Model to profile and plan (omit with --profile)."),
    profile_file: Path = typer.Option(None, "--profile", help="Plan from a saved profile JSON."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    device: str = typer.Option(None, "--device", help="Device node of the fleet (default: first)."),
    objective: Objective = typer.Option(Objective.latency, help="What to minimise."),
    slo_ms: float = typer.Option(None, "--slo-ms", callback=number(gt=0),
                                 help="Latency service-level objective (ms)."),
    device_mem_mb: float = typer.Option(
        None, "--device-mem-mb", callback=number(gt=0),
        help="Most parameter memory the device may hold (MiB)."
    ),
    mbps: float = typer.Option(
        None, "--mbps", callback=number(gt=0),
        help="Override the first hop's bandwidth (Mbit/s), e.g. for a sweep."
    ),
    weights: Path = typer.Option(None, "--weights", help="State-dict file to load into the model."),
    warmup: int = typer.Option(3, callback=integer(ge=0), help="Untimed runs before measuring."),
    repeats: int = typer.Option(10, callback=integer(ge=1),
                                help="Timed runs; each node's median is kept."),
    codec: str = typer.Option("none", help="Candidate activation codecs per cut, comma-"
                              "separated (none, fp16, int8, zstd, int8+zstd, ...) or auto."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the plan JSON here."),
    plot: Path = typer.Option(None, "--plot", callback=output_file,
                              help="Write the per-layer latency/size PNG here."),
) -> None:
    """Choose where each layer runs and compare with every inference mode."""
    from edgeweave.cli.options import OptionError, write_output, writing
    from edgeweave.cli.runtime_cmds import codec_candidates
    from edgeweave.plan import plan as make_plan
    from edgeweave.plan import plot_plan
    from edgeweave.profile import load_profile, retarget
    from edgeweave.topology import load_fleet

    if (model is None) == (profile_file is None):
        raise EdgeWeaveError("give either a MODEL to profile or --profile FILE, not both/neither")
    try:
        codecs = codec_candidates(codec)  # before profiling: a typo costs nothing
    except EdgeWeaveError as e:
        raise OptionError(f"--codec: {str(e).removeprefix('codec: ')}") from None
    if profile_file is not None:
        prof = load_profile(profile_file)
        if fleet or device:
            fl = load_fleet(fleet) if fleet else None
            if fl is None:
                raise EdgeWeaveError("--device with --profile needs --fleet too")
            prof = retarget(prof, fl.tier_path(device), fl.name)
    else:
        prof = _profile(model, fleet, device, weights, warmup, repeats, LatencySource.regression)
    if mbps is not None:
        prof = prof.with_link(prof.hop_names()[0], mbps=mbps)
    result = make_plan(prof, objective.value, slo_ms, device_mem_mb, codecs)
    render.plan_table(console, result)
    if json_out:
        write_output("--json", json_out, __import__("json").dumps(result.to_json(), indent=1))
        console.print(f"plan written to {json_out}")
    if plot:
        with writing("--plot", plot):
            plot_plan(result, plot)
        console.print(f"figure written to {plot}")


@app.command()
def fleets() -> None:
    """List the built-in fleets."""
    from edgeweave.topology import list_builtin_fleets, load_fleet

    render.fleets_table(console, [load_fleet(n) for n in list_builtin_fleets()])


@app.command()
def models() -> None:
    """List the built-in model specifiers."""
    from edgeweave.graph import list_models

    render.models_table(console, list_models())


@app.command()
def serve(
    role: str = typer.Option(..., "--role", help="edge or cloud."),
    listen: str = typer.Option("127.0.0.1:50051", "--listen", help="host:port to serve on."),
    next_target: str = typer.Option(None, "--next", help="host:port of the next tier's node."),
    name: str = typer.Option(None, "--name", help="Node name (default: the role)."),
    token_file: Path = typer.Option(None, "--token-file", help="Bearer token file."),
    cert_dir: Path = typer.Option(None, "--cert-dir", help="mTLS: the fleet dir from `edgeweave "
                                  "certs`, or this node's own folder from it."),
    metrics_port: int = typer.Option(None, "--metrics-port", min=1, max=65535,
                                     help="Prometheus /metrics port."),
    max_concurrency: int = typer.Option(4, min=1, max=1024, help="Batches computing at once."),
    max_queue: int = typer.Option(16, min=0, max=4096,
                                  help="Requests waiting; beyond: RESOURCE_EXHAUSTED."),
    max_batch: int = typer.Option(8, min=1, max=1024, help="Largest batch a deployed model may "
                                  "ask for (1: no batching)."),
    policy: str = typer.Option("edf", help="edf: earliest deadline first, refusing what cannot "
                               "be served in time; fifo: arrival order (the node as it was)."),
    summary_s: float = typer.Option(10.0, "--summary-s", callback=number(ge=0.0, le=86400.0),
                                    help="Print a live serving summary this often (s; 0: "
                                    "never)."),
    max_message_mb: float = typer.Option(64.0, callback=number(gt=0, le=2047),
                                         help="Largest message accepted (MiB, at most 2047)."),
    dilation: float = typer.Option(1.0, callback=number(ge=1.0, le=10000.0),
                                   help="Stretch compute to emulate slower hw (1-10000)."),
    max_link_s: float = typer.Option(120.0, callback=number(ge=0.0, le=86400.0),
                                     help="Longest a request may spend on one emulated link "
                                     "(its rate and stamp come from the sender)."),
    max_arrival_wait_s: float = typer.Option(
        30.0, callback=number(ge=0.0, le=86400.0), help="Longest an arrival stamp may hold an "
        "admitted request (the stamp is the sender's word)."),
    max_decoded_mb: float = typer.Option(
        128.0, callback=number(gt=0, le=1 << 20), help="Decoded MiB a request's tensors "
        "may declare when no deployed stage says their shape."),
    grace_s: float = typer.Option(5.0, "--grace-s", callback=number(ge=0.0, le=600.0),
                                  help="On SIGTERM, how long in-flight requests may finish."),
    model: list[str] = typer.Option([], "--model", help="Install a model file devices may "
                                    "deploy stages of (path/to/net.py:factory; repeatable); "
                                    "devices name it net:factory. Built-ins need no flag."),
    stage_budget_mb: float = typer.Option(1024.0, callback=number(ge=1.0, le=1 << 24),
                                          help="Weights of deployed stages kept (MiB); least "
                                          "recently used are evicted."),
    max_stage_mb: float = typer.Option(2048.0, callback=number(ge=1.0, le=1 << 24),
                                       help="Largest stage (weights, MiB) one Deploy may "
                                       "upload."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Where uploads are staged on disk "
                                   "(default: a fresh temp dir)."),
) -> None:
    """Run an edge or cloud node server until SIGTERM/SIGINT. Nodes never run code a device
    sends: they build stages from their own models and receive only weights."""
    from edgeweave.runtime.node import ServeOptions, log_to_stderr, serve_forever
    from edgeweave.runtime.server import NodeConfig
    from edgeweave.security import load_token

    if role not in ("edge", "cloud"):
        raise EdgeWeaveError(f"--role: expected edge or cloud, got {role!r}")
    log_to_stderr()
    token = load_token(token_file) if token_file else None
    if cache_dir is not None and not cache_dir.is_dir():
        raise EdgeWeaveError(f"--cache-dir {cache_dir}: not a directory")
    if policy not in ("edf", "fifo"):
        raise EdgeWeaveError(f"--policy: expected edf or fifo, got {policy!r}")
    config = NodeConfig(role=role, name=name or role, next_target=next_target,
                        max_concurrency=max_concurrency, max_queue=max_queue,
                        max_batch=max_batch, policy=policy, dilation=dilation,
                        max_link_s=max_link_s, max_arrival_wait_s=max_arrival_wait_s,
                        max_decoded_mb=max_decoded_mb, models=tuple(model),
                        stage_budget_mb=stage_budget_mb, max_stage_mb=max_stage_mb,
                        cache_dir=None if cache_dir is None else str(cache_dir))
    serve_forever(config, ServeOptions(listen, token, cert_dir, metrics_port, max_message_mb,
                                       grace_s, summary_s))


@app.command()
def certs(
    out_dir: Path = typer.Argument(..., help="Fleet directory: ca/ (the CA, stays here) and "
                                   "one folder per node (copy it to that node)."),
    nodes: list[str] = typer.Option(["device", "edge", "cloud"], "--node", help="Node names."),
    host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host", help="SANs."),
) -> None:
    """Make a private CA and one certificate per node for mutual TLS."""
    from edgeweave.security import make_fleet_certs

    made = make_fleet_certs(out_dir, nodes, host)
    ca = made.pop("ca")
    console.print(f"CA: {ca.cert} and its private key {ca.key}: keep the key here, never copy "
                  f"it to a node (whoever holds it can mint any identity in the fleet)")
    for node, pair in made.items():
        folder = pair.cert.parent
        console.print(f"{node}: copy the folder {folder}/ (ca.pem, {pair.cert.name}, "
                      f"{pair.key.name}) to the {node} and give it there as --cert-dir")


@app.command()
def infer(
    model: str = typer.Argument(..., help="Model specifier (see `edgeweave models`)."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    edge: list[str] = typer.Option([], "--edge", help="host:port of the edge node server "
                                   "(repeat for several: each request goes to the one expected "
                                   "to answer soonest, failing over when one dies)."),
    slo_ms: float = typer.Option(None, "--slo-ms", callback=number(gt=0, le=3.6e6),
                                 help="Each request's deadline: edges refuse what they cannot "
                                 "answer in time, and the device answers it itself."),
    plan_file: Path = typer.Option(None, "--plan", help="Use this plan JSON instead of planning."),
    input_file: Path = typer.Option(None, "--input", help="Image (png/jpg) or .npy input."),
    repeat: int = typer.Option(10, min=1, max=1_000_000, help="Requests to send."),
    objective: Objective = typer.Option(Objective.latency, help="What the plan minimises."),
    codec: str = typer.Option("none", help="Candidate activation codecs, comma-separated "
                              "(none, fp16, int8, zstd, fp16+zstd, int8+zstd, ...) or auto; the "
                              "plan picks one per cut."),
    mbps: float = typer.Option(None, "--mbps", callback=MBPS, help=MBPS_HELP),
    token_file: Path = typer.Option(None, "--token-file", help="Bearer token file."),
    cert_dir: Path = typer.Option(None, "--cert-dir", help="mTLS: the fleet dir from `edgeweave "
                                  "certs`, or the device's own folder from it."),
    adapt: bool = typer.Option(False, help="Re-plan when measured bandwidth changes the optimum."),
    shaping: str = typer.Option("app", help="app: shape links in this process and the servers; "
                                "kernel: netlab's tc already shapes them (add RTT only)."),
    fallback_local: bool = typer.Option(False, "--fallback-local", help=FALLBACK_HELP),
    json_out: Path = typer.Option(None, "--json", help="Write per-request results here."),
) -> None:
    """Run a plan across real processes: device head here, the rest on --edge (and beyond)."""
    from edgeweave.cli import runtime_cmds

    if shaping not in ("app", "kernel"):
        raise EdgeWeaveError(f"--shaping: expected app or kernel, got {shaping!r}")
    runtime_cmds.infer(console, model, fleet, edge, plan_file, input_file, repeat,
                       objective.value, codec, mbps, token_file, cert_dir, adapt, json_out,
                       shape_bandwidth=shaping == "app", fallback_local=fallback_local,
                       slo_ms=slo_ms)


@app.command()
def lab(
    model: str = typer.Argument("resnet18", help="Model to run across the local fleet."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    repeat: int = typer.Option(10, min=1, max=1_000_000, help="Requests to send."),
    codec: str = typer.Option("none", help="Activation codec at each cut."),
    mbps: float = typer.Option(None, "--mbps", callback=MBPS, help=MBPS_HELP),
    fallback_local: bool = typer.Option(False, "--fallback-local", help=FALLBACK_HELP),
    json_out: Path = typer.Option(None, "--json", help="Write per-request results here."),
) -> None:
    """Start edge and cloud servers as local processes and run a model across them."""
    from edgeweave.cli import runtime_cmds

    runtime_cmds.lab(console, model, fleet, repeat, codec, mbps, json_out,
                     fallback_local=fallback_local)


@app.command()
def netlab(
    model: str = typer.Argument("resnet18", help="Model to run across the namespaced fleet."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    repeat: int = typer.Option(10, min=1, max=1_000_000, help="Requests to send."),
    codec: str = typer.Option("none", help="Activation codec at each cut."),
    mbps: float = typer.Option(None, "--mbps", callback=MBPS, help=MBPS_HELP),
    json_out: Path = typer.Option(None, "--json", help="Write per-request results here."),
) -> None:
    """Device, edge and cloud in network namespaces joined by tc-shaped veth pairs (root)."""
    from edgeweave.cli import runtime_cmds

    runtime_cmds.netlab(console, model, fleet, repeat, codec, mbps, json_out)


@app.command()
def edgent(
    slo_ms: float = typer.Option(..., "--slo-ms", callback=number(gt=0),
                                 help="Latency requirement per inference (ms)."),
    mbps: float = typer.Option(None, "--mbps", callback=number(gt=0),
                               help="First hop's bandwidth (default: fleet's)."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    device: str = typer.Option(None, "--device", help="Device node of the fleet (default: first)."),
    cache: Path = typer.Option(None, "--cache", callback=cache_dir,
                               help="Directory keeping the trained net and its profile, one "
                               "entry per --side/--width/--epochs/--seed; an entry is reused "
                               "when present (then nothing is re-trained)."),
    side: int = typer.Option(32, callback=integer(ge=8, le=128, multiple_of=8),
                             help="Digit image side (8x8 upsampled; a multiple of 8, <= 128)."),
    width: int = typer.Option(32, callback=integer(ge=1, le=128),
                              help="Channels of the first conv stage (<= 128)."),
    epochs: int = typer.Option(6, callback=integer(ge=1),
                               help="Joint training epochs (real sklearn digits)."),
    seed: int = typer.Option(0, callback=integer(ge=0, le=SEED_MAX),
                             help="Seed of the data split and training."),
    trace: Path = typer.Option(None, "--trace", help="Bandwidth trace CSV (t_seconds,mbps): "
                               "also print the dynamic mode's configuration map."),
    states: int = typer.Option(4, callback=integer(ge=1, le=64),
                               help="Bandwidth states of the configuration map (<= 64)."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write every (exit, cut) and the choice."),
    plot: Path = typer.Option(None, "--plot", callback=output_file,
                              help="Write accuracy vs latency of each option."),
) -> None:
    """Edgent: choose exit point and device/edge cut of a branchy digits CNN jointly."""
    from edgeweave.cli import edgent_cmds

    edgent_cmds.edgent(console, slo_ms=slo_ms, mbps=mbps, fleet_spec=fleet, device=device,
                       cache=cache, side=side, width=width, epochs=epochs, seed=seed,
                       trace=trace, states=states, json_out=json_out, plot=plot)


@app.command()
def exits(
    model: str = typer.Argument("digits-cnn", help="nn.Sequential model taking 1x8x8 digits."),
    epochs: int = typer.Option(20, callback=integer(ge=1),
                               help="Joint training epochs (real sklearn digits)."),
    target: float = typer.Option(0.97, callback=number(ge=0.0, le=1.0),
                                 help="Validation accuracy to keep."),
    mode: str = typer.Option("entropy", callback=one_of("entropy", "confidence"),
                             help="entropy or confidence thresholds."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the exit report here."),
) -> None:
    """Attach BranchyNet exits, train them jointly, calibrate thresholds, report per exit."""
    from edgeweave.cli import adapt_cmds

    adapt_cmds.exits(console, model, epochs, target, mode, json_out)


@app.command()
def compress(
    model: str = typer.Argument("digits-cnn", help="nn.Sequential model taking 1x8x8 digits."),
    epochs: int = typer.Option(30, callback=integer(ge=1),
                               help="Baseline training epochs (real sklearn digits)."),
    sparsity: float = typer.Option(0.85, callback=number(ge=0.0, le=0.99),
                                   help="Magnitude-pruning sparsity."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the variant table here."),
) -> None:
    """Derive int8, pruned, low-rank and distilled variants; size, FLOPs and accuracy each."""
    from edgeweave.cli import adapt_cmds

    adapt_cmds.compress(console, model, epochs, sparsity, json_out)


@app.command()
def select(
    model: str = typer.Argument("digits-cnn", help="nn.Sequential model taking 1x8x8 digits."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    device: str = typer.Option(None, "--device", help="Device node of the fleet (default: first)."),
    objective: str = typer.Option("latency", help="latency or energy: what to minimise."),
    slo_ms: float = typer.Option(None, "--slo-ms", callback=number(gt=0),
                                 help="Latency SLO per inference (ms)."),
    energy_mj: float = typer.Option(None, "--energy-mj", callback=number(gt=0),
                                    help="Device energy budget (mJ/inf)."),
    device_mem_mb: float = typer.Option(None, "--device-mem-mb", callback=number(gt=0),
                                        help="Device parameter MiB."),
    min_acc: float = typer.Option(None, "--min-acc", callback=number(ge=0.0, le=1.0),
                                  help="Minimum validation accuracy (0-1); then the objective is "
                                  "minimised instead of max accuracy."),
    slo_stat: str = typer.Option("mean", help="mean or worst: what the SLO bounds for big/little."),
    epochs: int = typer.Option(15, callback=integer(ge=1),
                               help="Training epochs (real sklearn digits)."),
    mbps: float = typer.Option(None, "--mbps", callback=number(gt=0),
                               help="Override the first hop's bandwidth."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the selection record here."),
) -> None:
    """Choose among compression variants and a big/little pair, and where each runs."""
    from edgeweave.cli import select_cmds

    select_cmds.select(console, model, fleet, device, objective, slo_ms, energy_mj,
                       device_mem_mb, min_acc, slo_stat, epochs, mbps, json_out)


# The control algorithms' flags (edgeweave.train.control_config), shared by train, fl-server and
# fl-edge; each sets one field of a YAML section (cli/train_cmds.py: CONTROL_FLAGS).
FLEET_OPT = typer.Option(None, "--fleet", help="Fleet file or built-in name the clients run on "
                         "(client i on device node i mod D): their speeds, and their edges.")
FEDCS_OPT = typer.Option(None, "--fedcs-deadline", callback=number(gt=0),
                         help="FedCS selection: the most clients that train and upload within "
                         "this many seconds (needs --fleet or speeds).")
BUDGET_OPT = typer.Option(None, "--adaptive-budget", callback=number(gt=0),
                          help="Adaptive local steps (Wang et al.) under this resource budget.")
STEP_COST_OPT = typer.Option(None, "--step-cost", callback=number(gt=0),
                             help="Adaptive: cost of one local step [1].")
AGG_COST_OPT = typer.Option(None, "--agg-cost", callback=number(ge=0),
                            help="Adaptive: cost of one aggregation [1].")
EDGE_ROUNDS_OPT = typer.Option(None, "--edge-rounds", callback=integer(ge=1),
                               help="Hierarchical FL: edge rounds per cloud round (needs "
                               "--fleet: its devices' edges).")


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML (examples/fl/)."),
    rounds: int = typer.Option(None, min=1, help="Override the config's rounds."),
    out_dir: Path = typer.Option(None, "--out", help="Override the config's out_dir."),
    backend: str = typer.Option(None, help="Override the backend (sequential, vectorized, ray)."),
    ray_address: str = typer.Option(None, "--ray-address",
                                     help="Backend ray: join this Ray cluster (auto, HOST:6379)."),
    fleet: str = FLEET_OPT, fedcs_deadline: float = FEDCS_OPT,
    adaptive_budget: float = BUDGET_OPT, step_cost: float = STEP_COST_OPT,
    agg_cost: float = AGG_COST_OPT, edge_rounds: int = EDGE_ROUNDS_OPT,
) -> None:
    """Simulated federated training: progress bar, final table, metrics.jsonl, checkpoint, plot."""
    from edgeweave.cli import train_cmds

    train_cmds.train(console, config, rounds, out_dir, backend, ray_address, fleet=fleet,
                     fedcs_deadline=fedcs_deadline, adaptive_budget=adaptive_budget,
                     step_cost=step_cost, agg_cost=agg_cost, edge_rounds=edge_rounds)


@app.command("fl-server")
def fl_server(
    config: Path = typer.Option(None, "--config", help="Experiment YAML (as `train`; grpc)."),
    listen: str = typer.Option("127.0.0.1:50061", help="host:port the FL server listens on."),
    token_file: Path = typer.Option(..., "--token-file", help="Bearer token (edgeweave fl-token)."),
    test_data: Path = typer.Option(None, "--test-data", help="Held-out .npz (x, y) to evaluate."),
    min_clients: int = typer.Option(None, "--min-clients", min=1, help="Devices to wait for."),
    round_timeout: float = typer.Option(60.0, "--round-timeout", callback=number(gt=0),
                                        help="Seconds per round; also the longest wait for a "
                                        "device that went missing during training."),
    wait_clients: float = typer.Option(None, "--wait-clients", callback=number(gt=0),
                                       help="Before the first round: give up waiting for "
                                       "--min-clients devices after this long (s)."),
    lease: float = typer.Option(None, "--lease", callback=number(gt=0),
                                help="A device's registration lapses this long (s) after its "
                                "last activity [60]."),
    max_client_examples: int = typer.Option(
        None, "--max-client-examples", min=1,
        help="Without --config: most examples one device's update counts for [1000000]."),
    model: str = typer.Option(None, help="Without --config: model spec [mlp:64,64,10]."),
    rounds: int = typer.Option(None, min=1, help="Without --config: rounds [10]."),
    strategy: str = typer.Option(None, help="Without --config: strategy [fedavg]."),
    fraction: float = typer.Option(None, help="Without --config: devices per round [1.0]."),
    lr: float = typer.Option(None, callback=number(gt=0)),
    batch_size: int = typer.Option(None, "--batch-size"),
    epochs: int = typer.Option(None), seed: int = typer.Option(None),
    out: Path = typer.Option(None, "--out", help="Metrics JSONL + checkpoint (resumes)."),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="Serve TLS: PEM certificate."),
    tls_key: Path = typer.Option(None, "--tls-key", help="Serve TLS: PEM private key."),
    metrics_port: int = typer.Option(None, "--metrics-port", callback=integer(ge=1, le=65535),
                                     help="Prometheus /metrics on 127.0.0.1:PORT."),
    fleet: str = FLEET_OPT, fedcs_deadline: float = FEDCS_OPT,
    adaptive_budget: float = BUDGET_OPT, step_cost: float = STEP_COST_OPT,
    agg_cost: float = AGG_COST_OPT, edge_rounds: int = EDGE_ROUNDS_OPT,
) -> None:
    """Run federated training over gRPC: devices dial in with `edgeweave fl-client` (with a
    hierarchy: edge aggregators dial in with `edgeweave fl-edge`)."""
    from edgeweave.cli import fl_cmds

    fl_cmds.fl_server(console, config=config, listen=listen, token_file=token_file,
                      test_data=test_data, min_clients=min_clients, round_timeout=round_timeout,
                      wait_clients=wait_clients, tls_cert=tls_cert, tls_key=tls_key, lease=lease,
                      metrics_port=metrics_port, model=model, rounds=rounds, strategy=strategy,
                      fraction=fraction, lr=lr, batch_size=batch_size, epochs=epochs, seed=seed,
                      out=out, max_client_examples=max_client_examples, fleet=fleet,
                      fedcs_deadline=fedcs_deadline, adaptive_budget=adaptive_budget,
                      step_cost=step_cost, agg_cost=agg_cost, edge_rounds=edge_rounds)


@app.command("fl-edge")
def fl_edge(
    edge: str = typer.Option(..., "--edge", help="This edge's node name in the fleet."),
    config: Path = typer.Option(None, "--config", help="The cloud's experiment YAML (with "
                                "`hierarchy` and `fleet`)."),
    cloud: str = typer.Option("127.0.0.1:50061", help="host:port of the cloud's fl-server."),
    listen: str = typer.Option("127.0.0.1:50071", help="host:port the devices dial."),
    token_file: Path = typer.Option(..., "--token-file", help="Bearer token of the devices."),
    cloud_token_file: Path = typer.Option(None, "--cloud-token-file",
                                          help="Bearer token of the cloud [--token-file]."),
    min_clients: int = typer.Option(None, "--min-clients", callback=integer(ge=1),
                                    help="Devices to wait for [all the fleet puts here]."),
    round_timeout: float = typer.Option(60.0, "--round-timeout", callback=number(gt=0),
                                        help="Seconds per edge round for the devices."),
    wait_clients: float = typer.Option(None, "--wait-clients", callback=number(gt=0),
                                       help="Give up waiting for the devices after (s)."),
    lease: float = typer.Option(None, "--lease", callback=number(gt=0),
                                help="A device's registration lapses after (s) [60]."),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="Serve TLS to devices: PEM cert."),
    tls_key: Path = typer.Option(None, "--tls-key", help="Serve TLS to devices: PEM key."),
    cloud_tls_ca: Path = typer.Option(None, "--cloud-tls-ca", help="TLS to the cloud: its CA."),
    out: Path = typer.Option(None, "--out", help="Edge metrics + checkpoint [out_dir/edge-NAME]."),
    metrics_port: int = typer.Option(None, "--metrics-port", callback=integer(ge=1, le=65535),
                                     help="Prometheus /metrics on 127.0.0.1:PORT."),
    give_up: float = typer.Option(None, "--give-up", callback=number(gt=0),
                                  help="Exit if the cloud is unreachable this long (s)."),
    retry_max: float = typer.Option(5.0, "--retry-max", callback=number(gt=0),
                                    help="Longest reconnect back-off to the cloud (s)."),
    model: str = typer.Option(None, help="Without --config: model spec [mlp:64,64,10]."),
    strategy: str = typer.Option(None, help="Without --config: strategy at the edge [fedavg]."),
    fraction: float = typer.Option(None, callback=number(gt=0, le=1),
                                   help="Without --config: devices per edge round [1.0]."),
    lr: float = typer.Option(None, callback=number(gt=0)),
    batch_size: int = typer.Option(None, "--batch-size", callback=integer(ge=1)),
    epochs: int = typer.Option(None, callback=integer(ge=1)),
    seed: int = typer.Option(None),
    fleet: str = FLEET_OPT, fedcs_deadline: float = FEDCS_OPT,
    edge_rounds: int = EDGE_ROUNDS_OPT,
) -> None:
    """An edge aggregator of hierarchical FL: a client of the cloud's fl-server, a server to
    the devices the fleet puts under this edge (they dial in with `edgeweave fl-client`)."""
    from edgeweave.cli import fl_cmds

    fl_cmds.fl_edge(console, config=config, edge=edge, cloud=cloud, listen=listen,
                    token_file=token_file, cloud_token_file=cloud_token_file,
                    min_clients=min_clients, round_timeout=round_timeout,
                    wait_clients=wait_clients, lease=lease, tls_cert=tls_cert, tls_key=tls_key,
                    cloud_tls_ca=cloud_tls_ca, out=out, metrics_port=metrics_port,
                    give_up=give_up, retry_max=retry_max, model=model, strategy=strategy,
                    fraction=fraction, lr=lr, batch_size=batch_size, epochs=epochs, seed=seed,
                    fleet=fleet, fedcs_deadline=fedcs_deadline, edge_rounds=edge_rounds)


@app.command("fl-client")
def fl_client(
    server: str = typer.Option("127.0.0.1:50061", help="host:port of the FL server."),
    data: Path = typer.Option(..., help="This device's .npz with keys x and y."),
    token_file: Path = typer.Option(..., "--token-file", help="Bearer token file."),
    client_id: int = typer.Option(None, "--client-id", min=0,
                                  help="Default: digits in the file name."),
    give_up: float = typer.Option(None, "--give-up", callback=number(gt=0),
                                  help="Exit if unreachable this long (s)."),
    threads: int = typer.Option(1, min=1, help="Torch threads for local training."),
    retry_max: float = typer.Option(5.0, "--retry-max", callback=number(gt=0),
                                    help="Longest reconnect back-off (s)."),
    tls_ca: Path = typer.Option(None, "--tls-ca", help="TLS: CA (PEM) of the server's cert."),
    max_message_mb: float = typer.Option(None, "--max-message-mb", callback=number(gt=0),
                                         help="Largest message taken from the server (MiB) "
                                         "[129]."),
) -> None:
    """One federated device: trains on its own data each round until the server finishes."""
    from edgeweave.cli import fl_cmds

    fl_cmds.fl_client(console, server=server, data=data, token_file=token_file,
                      client_id=client_id, give_up=give_up, threads=threads,
                      retry_max=retry_max, tls_ca=tls_ca, max_message_mb=max_message_mb)


@app.command("fl-split")
def fl_split(
    dataset: str = typer.Argument("digits", help="digits, synthetic:A,B, npz:PATH, ..."),
    clients: int = typer.Option(3, min=1),
    partition: str = typer.Option("iid", help="iid, dirichlet:ALPHA, shards, unbalanced:SIGMA."),
    model: str = typer.Option("mlp:64,64,10", help="Shapes x for this model spec."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(..., "--out", help="Directory for client<i>.npz and test.npz."),
    config: Path = typer.Option(None, "--config", help="Split as this experiment YAML says."),
) -> None:
    """Split a dataset into one .npz per device plus the server's test.npz (for a demo)."""
    from edgeweave.cli import fl_cmds

    fl_cmds.fl_split(console, dataset, clients, partition, model, seed, out, config)


@app.command("fl-token")
def fl_token(
    path: Path = typer.Argument(..., help="File to write (mode 0600)."),
    force: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    """Write a fresh bearer token for fl-server and fl-client."""
    from edgeweave.cli import fl_cmds

    fl_cmds.fl_token(console, path, force)


@app.command()
def decentral(
    method: list[str] = typer.Option(["gosgd", "dpsgd", "allreduce-sgd", "param-server", "ssp-sa"],
                                     "--method", "-m", help="Methods to compare (repeat)."),
    nodes: int = typer.Option(16, min=2, help="Simulated nodes (or peer processes)."),
    graph: str = typer.Option("ring", help="Peer graph: ring, torus, complete, regular:K, "
                                            "erdos:P, star."),
    rounds: int = typer.Option(60, min=1, help="Rounds (one local step per node each)."),
    lr: float = typer.Option(0.4, callback=number(gt=0), help="Learning rate."),
    model: str = typer.Option("mlp:64,64,10", help="Model spec."),
    partition: str = typer.Option("iid", help="How digits are split across nodes."),
    seed: int = typer.Option(0),
    processes: bool = typer.Option(
        False, "--processes", help="Run the methods that have a real-process version (gosgd, "
        "allreduce-sgd, param-server, ssp, ssp-sa) as processes over gRPC on loopback instead."),
) -> None:
    """Decentralized training without a server (gossip) vs with one, on simulated nodes."""
    from edgeweave.cli import decentral_cmds

    decentral_cmds.decentral(console, methods=method, nodes=nodes, graph=graph, rounds=rounds,
                             lr=lr, model=model, partition=partition, seed=seed,
                             processes=processes)


app.command()(report_cmds.report)
app.command()(loadgen_cmds.loadgen)
app.command("simulate")(__import__("edgeweave.cli.sim_cmds", fromlist=["simulate"]).simulate)

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True,
                "help_option_names": []}


@app.command("split-learn", context_settings=_PASSTHROUGH, add_help_option=False)
def split_learn(ctx: typer.Context) -> None:
    """Split learning: `split-learn edge --listen ...` serves the edge part; `split-learn device
    [--edge host:port]` trains the device part (in process without --edge). `split-learn -h`
    lists the options."""
    from edgeweave.train.split.__main__ import main as split_main

    raise typer.Exit(split_main(list(ctx.args) or ["--help"]))


def main() -> None:
    try:
        app()
    except EdgeWeaveError as e:
        # soft_wrap: the error stays one line however narrow the terminal (a grep finds it)
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
