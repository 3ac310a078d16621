"""Split learning against a hostile peer: declared tensor shapes are checked against the model
before any payload is decoded, on the edge and on the device; and the edge serves TLS."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
import torch

from edgeweave.codec import Encoded, get_codec
from edgeweave.security import make_fleet_certs, write_token
from edgeweave.train.split import SplitConfig, SplitTrainer
from edgeweave.train.split import parts as split_parts
from edgeweave.train.split.__main__ import main as split_main
from edgeweave.train.split.grpc_edge import GrpcLink, SplitEdgeServer
from edgeweave.train.split.messages import encoded_to_msg
from edgeweave.train.types import TrainError
from edgeweave.train.wire import split_pb2, split_pb2_grpc

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = "mlp:64,32,32,10"
# 54 bytes of zstd that inflate to 1 MiB of zeros; declared as far more than that below
BOMB = get_codec("zstd").encode(torch.zeros(2**18))


def bomb(*shape: int, dtype: str = "float32") -> Encoded:
    return Encoded(BOMB.codec, dtype, shape, BOMB.payload)


@pytest.fixture
def decoded(monkeypatch):
    """The shapes the split code actually decodes (every decode goes through this one call)."""
    seen: list[tuple[int, ...]] = []
    real = split_parts.decode_encoded

    def spy(e: Encoded) -> torch.Tensor:
        seen.append(tuple(e.shape))
        return real(e)

    monkeypatch.setattr(split_parts, "decode_encoded", spy)
    return seen


def test_declared_shapes_are_refused_before_decoding_and_the_edge_keeps_serving(tmp_path,
                                                                                decoded):
    token = write_token(tmp_path / "tok")
    md = (("authorization", "Bearer " + token),)
    none = get_codec("none")
    act, labels = none.encode(torch.ones(4, 32)), none.encode(torch.arange(4))
    huge = [(4096, 2**20), (2**20, 32), (4, 32, 2**20)]
    with SplitEdgeServer(SplitConfig(MLP, cut=2), token) as vanilla, \
            SplitEdgeServer(SplitConfig(MLP, cut=2, head=4), token) as ushape:
        ch = grpc.insecure_channel(vanilla.address)
        stub = split_pb2_grpc.SplitLearningStub(ch)
        words = {(4096, 2**20): "do not fit the edge layers, which take [4096, 32]",
                 (2**20, 32): "a batch of 1048576 samples; expected 1..4096",
                 (4, 32, 2**20): "do not fit the edge layers, which take [4, 32]"}
        for shape in huge:
            with pytest.raises(grpc.RpcError) as e:
                stub.Forward(split_pb2.ForwardRequest(activations=encoded_to_msg(bomb(*shape)),
                                                      labels=encoded_to_msg(labels), train=True),
                             metadata=md, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words[shape] in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Forward(split_pb2.ForwardRequest(activations=encoded_to_msg(act), train=True,
                                                  labels=encoded_to_msg(bomb(2**30,
                                                                             dtype="int64"))),
                         metadata=md, timeout=10)
        assert "labels: declared shape [1073741824], expected [4]" in e.value.details()
        assert stub.Forward(split_pb2.ForwardRequest(activations=encoded_to_msg(act),
                                                     labels=encoded_to_msg(labels), train=True),
                            metadata=md, timeout=10).loss > 0  # still serving
        ch.close()
        # the U-shape's second trip: the feature gradient must match the pending forward
        ch = grpc.insecure_channel(ushape.address)
        stub = split_pb2_grpc.SplitLearningStub(ch)
        stub.MiddleForward(split_pb2.MiddleRequest(client_id=1, step=0, train=True,
                                                   activations=encoded_to_msg(act)),
                           metadata=md, timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            stub.MiddleBackward(split_pb2.MiddleBackwardRequest(
                client_id=1, step=0, gradient=encoded_to_msg(bomb(4, 2**20))),
                metadata=md, timeout=10)
        assert "feature gradient: declared shape [4, 1048576], expected [4, 32]" \
            in e.value.details()
        stub.MiddleBackward(split_pb2.MiddleBackwardRequest(
            client_id=1, step=0, gradient=encoded_to_msg(act)), metadata=md, timeout=10)
        ch.close()
    # the device side: a hostile edge's gradient or features
    trainer = SplitTrainer(SplitConfig(MLP, cut=2, head=4))
    trainer.device.forward(torch.ones(4, 64))
    with pytest.raises(TrainError, match=r"gradient from the edge: declared shape \[4, 1048576\], "
                                         r"expected \[4, 32\]"):
        trainer.device.backward(bomb(4, 2**20))
    with pytest.raises(TrainError, match=r"features from the edge: declared shape \[4096, 32\], "
                                         r"expected \[4, 32\]"):
        trainer.device.head_step(bomb(4096, 32), torch.arange(4))
    assert (4, 32) in decoded  # the spy sees the tensors that were accepted...
    assert [s for s in decoded if s[0] > 4 or len(s) > 2 or max(s) > 32] == []  # ...only those


@pytest.mark.slow  # the edge is a fresh Python importing torch
def test_split_learn_runs_over_tls_between_processes(tmp_path, capsys):
    pki = make_fleet_certs(tmp_path, ["split-edge"])
    tok = tmp_path / "tok"
    write_token(tok)
    model = ["--model", MLP, "--cut", "2", "--lr", "0.1", "--token-file", str(tok)]
    edge = subprocess.Popen(
        [sys.executable, "-m", "edgeweave.train.split", "edge", "--listen", "127.0.0.1:0",
         "--tls-cert", str(pki["split-edge"].cert), "--tls-key",
         str(pki["split-edge"].key), "--max-message-mb", "8", *model],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = edge.stdout.readline().split()
        assert line[:1] == ["listening"], edge.stderr.read()
        address = line[1]
        run = ["device", "--clients", "2", "--epochs", "1", *model]
        code = split_main([*run, "--edge", address, "--tls-ca", str(pki["ca"].cert),
                           "--max-message-mb", "8"])
        remote = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
        assert code == 0 and remote[-1]["done"]
        assert split_main(run) == 0  # the same run against an in-process edge
        local = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
        for k in ("test_acc", "bytes_up", "bytes_down", "steps"):
            assert remote[0][k] == pytest.approx(local[0][k]), k
        plain = GrpcLink(address, tok.read_text().strip(), timeout_s=1)
        none = get_codec("none")
        with pytest.raises(TrainError, match=r"UNAVAILABLE|DEADLINE_EXCEEDED"):
            plain.forward(0, 0, none.encode(torch.ones(4, 32)), none.encode(torch.arange(4)),
                          True)
        plain.close()
    finally:
        edge.kill()
        edge.wait(10)
        edge.stdout.close()
        edge.stderr.close()
    # the TLS flags are checked by name
    assert split_main(["device", "--tls-ca", str(pki["ca"].cert), *model]) == 2
    assert "--tls-ca and --tls-server-name need --edge" in capsys.readouterr().err
