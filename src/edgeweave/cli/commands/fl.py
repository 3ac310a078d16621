"""`edgeweave fl run|server|client|split|token`: federated training, simulated (`run`) or as
real processes over gRPC. The options; the wiring is edgeweave.cli.train_cmds and fl_cmds."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeweave.cli.common import console
from edgeweave.cli.options import number
from edgeweave.cli.reporting import report_option

app = typer.Typer(
    name="fl", no_args_is_help=True,
    help="Federated training: `run` simulates the clients in this process (one YAML is the "
         "experiment); `server`, `client`, `split` and `token` run it as real processes over "
         "gRPC.")


@app.command("run")
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML (examples/fl/)."),
    rounds: int = typer.Option(None, min=1, help="Override the config's rounds."),
    out_dir: Path = typer.Option(None, "--out", help="Override the config's out_dir."),
    backend: str = typer.Option(None, help="Override the backend (sequential, vectorized)."),
    report: Path = report_option(),
) -> None:
    """Simulated federated training: progress bar, final table, metrics.jsonl, checkpoint, plot."""
    from edgeweave.cli import train_cmds

    train_cmds.train(console, config, rounds, out_dir, backend, report=report)


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
    report: Path = report_option(),
) -> None:
    """Run federated training over gRPC: devices dial in with `edgeweave fl client`."""
    from edgeweave.cli import fl_cmds

    fl_cmds.fl_server(console, config=config, listen=listen, token_file=token_file, report=report,
                      test_data=test_data, min_clients=min_clients, round_timeout=round_timeout,
                      wait_clients=wait_clients, tls_cert=tls_cert, tls_key=tls_key, lease=lease,
                      model=model, rounds=rounds, strategy=strategy, fraction=fraction, lr=lr,
                      batch_size=batch_size, epochs=epochs, seed=seed, out=out,
                      max_client_examples=max_client_examples)


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
