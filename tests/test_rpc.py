"""edgeweave.rpc: every gRPC server in the package refuses a busy port (no SO_REUSEPORT), binds
with one clear error, and logs rejections without flooding."""

import logging
from concurrent import futures

import grpc
import pytest

from edgeweave.errors import EdgeWeaveError
from edgeweave.rpc import RateLimitedLog, bind, is_loopback, server_options, split_address

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def taken_port():
    """A port held by a gRPC server with gRPC's defaults (port sharing on): whether a second
    server can bind it then depends only on the second server's own options."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def test_with_grpc_defaults_a_second_server_silently_shares_the_port(taken_port):
    second = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    assert second.add_insecure_port(f"127.0.0.1:{taken_port}") == taken_port  # the trap


def test_server_options_always_turn_port_sharing_off():
    opts = server_options([("grpc.max_receive_message_length", 10), ("grpc.so_reuseport", 1)])
    assert opts == [("grpc.max_receive_message_length", 10), ("grpc.so_reuseport", 0)]


def test_bind_refuses_a_busy_port_and_bad_addresses_by_name(taken_port):
    second = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=server_options())
    with pytest.raises(EdgeWeaveError, match=rf"--listen 127.0.0.1:{taken_port}: cannot listen"):
        bind(second, f"127.0.0.1:{taken_port}")
    for bad, words in [("127.0.0.1:99999", "out of range"), ("nohost", "expected host:port"),
                       ("999.1.1.1:1", "cannot listen")]:
        with pytest.raises(EdgeWeaveError, match=words):
            bind(second, bad, flag="--listen")
    assert split_address("[::1]:50051") == ("[::1]", 50051)


def test_train_servers_refuse_a_busy_port_too(taken_port):
    from edgeweave.train.backends.grpc_backend import GrpcBackend
    from edgeweave.train.split.grpc_edge import SplitEdgeServer
    from edgeweave.train.split.learning import SplitConfig
    from edgeweave.train.types import TrainError

    busy = f"127.0.0.1:{taken_port}"
    with pytest.raises(TrainError, match="cannot listen"):
        GrpcBackend(busy, TOKEN, model_spec="mlp:64,10")
    with pytest.raises(TrainError, match="cannot listen"):
        SplitEdgeServer(SplitConfig(model="mlp:64,32,10", cut=1), TOKEN, busy)


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.201.1.2")
    assert not is_loopback("edge.example")


def test_rejection_lines_are_rate_limited_per_reason(caplog):
    clock = [0.0]
    limiter = RateLimitedLog(logging.getLogger("edgeweave.test"), interval_s=10)
    import edgeweave.rpc as rpc

    real = rpc.time.monotonic
    rpc.time.monotonic = lambda: clock[0]
    try:
        with caplog.at_level(logging.INFO, logger="edgeweave.test"):
            logged = [limiter.log(logging.WARNING, "bad_tensor", "refused %d", i)
                      for i in range(5)]
            logged.append(limiter.log(logging.INFO, "overloaded", "busy"))
            clock[0] = 11.0
            logged.append(limiter.log(logging.WARNING, "bad_tensor", "refused %d", 5))
    finally:
        rpc.time.monotonic = real
    assert logged == [True, False, False, False, False, True, True]
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "busy", "refused 5 (and 4 more like it since the last such line)"]
