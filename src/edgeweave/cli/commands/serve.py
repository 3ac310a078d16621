"""`edgeweave serve` (an edge or cloud node), `loadgen` (many devices against serving nodes) and
`certs` (mutual TLS for a fleet): the options; the node itself is edgeweave.runtime.node, the
load generator edgeweave.serve.loadgen (its command in edgeweave.cli.loadgen_cmds)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeweave.cli import loadgen_cmds
from edgeweave.cli.common import console
from edgeweave.cli.options import number
from edgeweave.errors import EdgeWeaveError

app = typer.Typer()
app.command()(loadgen_cmds.loadgen)


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
    chunk_budget_mb: float = typer.Option(2048.0, callback=number(ge=1.0, le=1 << 24),
                                          help="Weight chunks of incremental uploads kept on "
                                          "disk in --cache-dir (MiB); least recently used go."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Where uploads are staged on disk "
                                   "(default: a fresh temp dir)."),
    front: list[str] = typer.Option([], "--front", help="Stages in front of a model devices "
                                    "deploy whole: MODEL=FILE.yaml with cache:, filter: and "
                                    "prefetch: sections, or MODEL={cache: {threshold: 0.9}} "
                                    "inline (repeatable; see `edgeweave front`)."),
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
    fronts = _fronts(front)
    config = NodeConfig(role=role, name=name or role, next_target=next_target,
                        max_concurrency=max_concurrency, max_queue=max_queue,
                        max_batch=max_batch, policy=policy, dilation=dilation,
                        max_link_s=max_link_s, max_arrival_wait_s=max_arrival_wait_s,
                        max_decoded_mb=max_decoded_mb, models=tuple(model),
                        stage_budget_mb=stage_budget_mb, max_stage_mb=max_stage_mb,
                        chunk_budget_mb=chunk_budget_mb,
                        cache_dir=None if cache_dir is None else str(cache_dir),
                        fronts=fronts)
    serve_forever(config, ServeOptions(listen, token, cert_dir, metrics_port, max_message_mb,
                                       grace_s, summary_s))


def _fronts(flags: list[str]) -> dict:
    """``--front MODEL=...`` flags as the node's front settings per model."""
    from edgeweave.serve.front_config import front_flag

    out: dict = {}
    for text in flags:
        model, config = front_flag(text)
        if model in out:
            raise EdgeWeaveError(f"--front {model}: given twice; one --front per model")
        out[model] = config
    return out


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
