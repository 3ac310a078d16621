"""Run split learning as real processes: ``python -m edgeweave.train.split edge|device ...``.

    python -m edgeweave.train.split edge --listen 127.0.0.1:50070 --token-file tok \\
        --model cnn:32,64,128 --cut 6 --lr 0.05
    python -m edgeweave.train.split device --edge 127.0.0.1:50070 --token-file tok \\
        --model cnn:32,64,128 --cut 6 --lr 0.05 --clients 10 --epochs 1 --codec int8

The device process plays every client in turn (sequential SplitNN) and prints one JSON line per
epoch, then a summary line; at the end it uploads its final device weights to the edge. Without
``--edge`` the device trains against an in-process edge (same bytes, same model). The
edge prints ``listening <address>`` once it serves. Both sides must agree on model, cut, lr,
grad codec and init seed (they build the same initial model from the spec).

Beyond a lab network, serve TLS as ``edgeweave fl server`` does (``edgeweave certs``): the edge
takes ``--tls-cert``/``--tls-key``, the device ``--tls-ca`` (and ``--tls-server-name`` when the
certificate names another host). ``--max-message-mb`` bounds what either side accepts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.security import load_token
from edgeweave.train.split.learning import SplitConfig


def _config(a: argparse.Namespace) -> SplitConfig:
    return SplitConfig(model=a.model, cut=a.cut, head=a.head, lr=a.lr, batch_size=a.batch_size,
                       epochs=a.epochs, codec=a.codec, grad_codec=a.grad_codec, seed=a.seed,
                       init_seed=a.init_seed)


def _positive(text: str) -> float:
    """argparse type: a finite number > 0 (argparse names the flag in its error)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _count(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _common(p: argparse.ArgumentParser, token_required: bool = True) -> None:
    p.add_argument("--token-file", required=token_required)
    p.add_argument("--model", default="cnn:32,64,128")
    p.add_argument("--cut", type=_count, default=6)
    p.add_argument("--head", type=_count, default=None,
                   help="U-shape: layers [head:] and the labels stay on the device")
    p.add_argument("--lr", type=_positive, default=0.05)
    p.add_argument("--batch-size", type=_count, default=16)
    p.add_argument("--epochs", type=_count, default=1)
    p.add_argument("--codec", default="none")
    p.add_argument("--grad-codec", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-seed", type=int, default=0)
    p.add_argument("--threads", type=_count, default=1)
    p.add_argument("--max-message-mb", type=_positive, default=64,
                   help="largest gRPC message accepted (MiB) [64]")


def main(argv: list[str] | None = None, prog: str = "python -m edgeweave.train.split") -> int:
    ap = argparse.ArgumentParser(prog=prog)
    sub = ap.add_subparsers(dest="role", required=True)
    edge = sub.add_parser("edge", help="serve the edge part")
    edge.add_argument("--listen", default="127.0.0.1:0")
    edge.add_argument("--tls-cert", default=None, help="serve TLS: PEM certificate")
    edge.add_argument("--tls-key", default=None, help="serve TLS: PEM private key")
    _common(edge)
    dev = sub.add_parser("device", help="train the device part against an edge")
    dev.add_argument("--edge", default=None, help="host:port of the edge; none: in process")
    dev.add_argument("--dataset", default="digits")
    dev.add_argument("--partition", default="iid")
    dev.add_argument("--clients", type=_count, default=10)
    dev.add_argument("--tls-ca", default=None, help="TLS: CA (PEM) of the edge's certificate")
    dev.add_argument("--tls-server-name", default=None,
                     help="TLS: the name in the edge's certificate, if not the --edge host")
    dev.add_argument("--privacy", default=None,
                     help="gaussian:CLIP,MULT | laplace:CLIP,MULT | nullify:RATE | "
                          "arden:RATE,CLIP,MULT")
    _common(dev, token_required=False)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        remote = a.role == "edge" or a.edge is not None
        if remote and a.token_file is None:
            raise EdgeWeaveError("--token-file is required to serve or reach an edge")
        token = load_token(a.token_file) if remote else ""
        config = _config(a)
        if a.role == "edge" and (a.tls_cert is None) != (a.tls_key is None):
            raise EdgeWeaveError("--tls-cert and --tls-key go together: give both (the edge's "
                                 "certificate and its key, e.g. from `edgeweave certs`) or "
                                 "neither")
        if a.role == "edge":
            from edgeweave.train.split.grpc_edge import SplitEdgeServer

            server = SplitEdgeServer(config, token, a.listen, tls_cert=a.tls_cert,
                                     tls_key=a.tls_key, max_message_bytes=_bytes(a))
            print(f"listening {server.address}", flush=True)
            server.wait()
            return 0
        from edgeweave.train.data import make_task
        from edgeweave.train.split.grpc_edge import GrpcLink
        from edgeweave.train.split.learning import SplitTrainer
        from edgeweave.train.split.privacy import privacy_from_spec

        task = make_task(a.dataset, a.partition, a.clients, a.model, seed=a.seed)
        assert task.data is not None
        if not remote and (a.tls_ca or a.tls_server_name):
            raise EdgeWeaveError("--tls-ca and --tls-server-name need --edge")
        link = GrpcLink(a.edge, token, tls_ca=a.tls_ca, tls_server_name=a.tls_server_name,
                        max_message_bytes=_bytes(a)) if remote else None
        trainer = SplitTrainer(config, link, privacy_from_spec(a.privacy))
        records = trainer.run(task.data, task.test_x, task.test_y, publish=remote,
                              progress=lambda r: print(json.dumps(r.to_dict()), flush=True))
        if link is not None:
            link.close()
        print(json.dumps({"done": True, "epochs": len(records),
                          "publish_bytes": trainer.publish_bytes}), flush=True)
        return 0
    except EdgeWeaveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _bytes(a: argparse.Namespace) -> int:
    return min(int(a.max_message_mb * 2**20), 2**31 - 1)


if __name__ == "__main__":
    raise SystemExit(main())
