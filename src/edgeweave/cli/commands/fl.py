"""`edgeweave fl run|server|edge|client|split|token`: federated training, simulated (`run`) or
as real processes over gRPC. The options; the wiring is edgeweave.cli.train_cmds and fl_cmds."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeweave.cli.common import console
from edgeweave.cli.options import integer, number
from edgeweave.cli.reporting import report_option

app = typer.Typer(
    name="fl", no_args_is_help=True,
    help="Federated training: `run` simulates the clients in this process (one YAML is the "
         "experiment); `server`, `edge`, `client`, `split` and `token` run it as real processes "
         "over gRPC.")

# The control algorithms' flags (edgeweave.train.control_config), shared by `fl run`, `fl server`
# and `fl edge`; each sets one field of a YAML section (cli/train_cmds.py: CONTROL_FLAGS).
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


@app.command("run")
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
    report: Path = report_option(),
) -> None:
    """Simulated federated training: progress bar, final table, metrics.jsonl, checkpoint, plot."""
    from edgeweave.cli import train_cmds

    train_cmds.train(console, config, rounds, out_dir, backend, ray_address, report=report,
                     fleet=fleet, fedcs_deadline=fedcs_deadline, adaptive_budget=adaptive_budget,
                     step_cost=step_cost, agg_cost=agg_cost, edge_rounds=edge_rounds)


@app.command("server")
def fl_server(
    config: Path = typer.Option(None, "--config", help="Experiment YAML (as `fl run`; grpc)."),
    listen: str = typer.Option("127.0.0.1:50061", help="host:port the FL server listens on."),
    token_file: Path = typer.Option(..., "--token-file", help="Bearer token (edgeweave fl token)."),
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
    report: Path = report_option(),
) -> None:
    """Run federated training over gRPC: devices dial in with `edgeweave fl client` (with a
    hierarchy: edge aggregators dial in with `edgeweave fl edge`)."""
    from edgeweave.cli import fl_cmds

    fl_cmds.fl_server(console, config=config, listen=listen, token_file=token_file, report=report,
                      test_data=test_data, min_clients=min_clients, round_timeout=round_timeout,
                      wait_clients=wait_clients, tls_cert=tls_cert, tls_key=tls_key, lease=lease,
                      metrics_port=metrics_port, model=model, rounds=rounds, strategy=strategy,
                      fraction=fraction, lr=lr, batch_size=batch_size, epochs=epochs, seed=seed,
                      out=out, max_client_examples=max_client_examples, fleet=fleet,
                      fedcs_deadline=fedcs_deadline, adaptive_budget=adaptive_budget,
                      step_cost=step_cost, agg_cost=agg_cost, edge_rounds=edge_rounds)


@app.command("edge")
def fl_edge(
    edge: str = typer.Option(..., "--edge", help="This edge's node name in the fleet."),
    config: Path = typer.Option(None, "--config", help="The cloud's experiment YAML (with "
                                "`hierarchy` and `fleet`)."),
    cloud: str = typer.Option("127.0.0.1:50061", help="host:port of the cloud's `fl server`."),
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
    edge_rounds: int = EDGE_ROUNDS_OPT, report: Path = report_option(),
) -> None:
    """An edge aggregator of hierarchical FL: a client of the cloud's `fl server`, a server to
    the devices the fleet puts under this edge (they dial in with `edgeweave fl client`)."""
    from edgeweave.cli import fl_cmds

    fl_cmds.fl_edge(console, config=config, edge=edge, cloud=cloud, listen=listen,
                    token_file=token_file, cloud_token_file=cloud_token_file,
                    min_clients=min_clients, round_timeout=round_timeout,
                    wait_clients=wait_clients, lease=lease, tls_cert=tls_cert, tls_key=tls_key,
                    cloud_tls_ca=cloud_tls_ca, out=out, metrics_port=metrics_port,
                    give_up=give_up, retry_max=retry_max, model=model, strategy=strategy,
                    fraction=fraction, lr=lr, batch_size=batch_size, epochs=epochs, seed=seed,
                    fleet=fleet, fedcs_deadline=fedcs_deadline, edge_rounds=edge_rounds,
                    report=report)


@app.command("client")
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


@app.command("split")
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


@app.command("token")
def fl_token(
    path: Path = typer.Argument(..., help="File to write (mode 0600)."),
    force: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    """Write a fresh bearer token for `fl server` and `fl client`."""
    from edgeweave.cli import fl_cmds

    fl_cmds.fl_token(console, path, force)
