"""The real servers the fuzz test attacks, each started in process on loopback with a token,
plus what the fuzz needs from each: valid messages to mutate (seeds, by message type) and a
probe, a valid request that must still succeed after every fuzzed call."""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import torch
from google.protobuf.message import Message

TOKEN = "fuzz-token-0123456789abcdef0123456789"
MD = (("authorization", "Bearer " + TOKEN),)
PROBE_S = 30.0  # generous: the box may be busy; a server that answers at all passes


@dataclass
class Target:
    """One running server: its address, seeds by message full name, a probe and a stop."""

    service: str
    address: str
    seeds: dict[str, Callable[[], Sequence[Message]]]
    probe: Callable[[grpc.Channel], None]
    stop: Callable[[], None]
    notes: dict[str, object] = field(default_factory=dict)


# -- runtime node ---------------------------------------------------------------------------------

def runtime_node() -> Target:
    """An edge node forwarding to a cloud node with digits-cnn's two remote stages deployed
    (recipe + weights, as devices deploy them): the edge runs the first half of the model, the
    cloud the rest (the cloud's stage is on both, as a forwarded Deploy leaves it). The edge
    stage's weights are on the edge as chunks too (incremental upload), and built from them."""
    from edgeweave.codec import get_codec
    from edgeweave.graph import capture_spec, split
    from edgeweave.runtime.node import ServeOptions, start_node
    from edgeweave.runtime.proto import edgeweave_pb2 as pb
    from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
    from edgeweave.runtime.recipe import deploy_stream, package_stage
    from edgeweave.runtime.server import NodeConfig

    cloud, _, cport = start_node(NodeConfig("cloud", "cloud"),
                                 ServeOptions("127.0.0.1:0", token=TOKEN))
    edge, _, eport = start_node(NodeConfig("edge", "edge", next_target=f"127.0.0.1:{cport}"),
                                ServeOptions("127.0.0.1:0", token=TOKEN))
    address = f"127.0.0.1:{eport}"
    graph = capture_spec("digits-cnn")
    half = len(graph.nodes) // 2
    placement = {n.name: "edge" if i < half else "cloud" for i, n in enumerate(graph.nodes)}
    stages = {s.key: s for s in split(graph, placement)}
    x_value = torch.randn(graph.input_shape)
    env = {graph.placeholders[0]: x_value}
    packages = {}
    for key in ("edge", "cloud"):
        stage = stages[key]
        args = [env[n] for n in stage.inputs]
        packages[key] = package_stage(graph, stage, args)
        with torch.no_grad():
            env.update(zip(stage.outputs, stage.module(*args), strict=True))
    deploys = [list(deploy_stream(packages["edge"], "edge", 0)),
               list(deploy_stream(packages["cloud"], "cloud", 1))]
    # incremental upload: the edge stage's weights as chunks, and a build from them
    from edgeweave.runtime.chunks import chunk_data, weight_chunks

    weights = dict(packages["edge"].weights)
    refs = [r for spec in weights for r in weight_chunks(spec, weights[spec])]
    by_name = {spec.name: t for spec, t in weights.items()}
    put = [pb.PutChunksRequest(model=graph.spec, input_shape=list(graph.input_shape)),
           *(pb.PutChunksRequest(chunks=[pb.WeightChunk(
               weight=r.weight, offset=r.offset, digest=r.digest,
               data=chunk_data(by_name[r.weight], r.offset))]) for r in refs)]
    have = pb.HaveChunksRequest(digests=[r.digest for r in refs])
    from_chunks = pb.DeployFromChunksRequest(
        stage_digest=packages["edge"].digest, recipe=packages["edge"].recipe.to_proto(),
        name="edge", chunks=[r.digest for r in refs])
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.NodeStub(ch)
        for chunks in deploys:
            stub.Deploy(iter(chunks), metadata=MD, timeout=PROBE_S)
        stub.PutChunks(iter(put), metadata=MD, timeout=PROBE_S)
        stub.DeployFromChunks(from_chunks, metadata=MD, timeout=PROBE_S)
    e = get_codec("none").encode(x_value)
    x = pb.Tensor(name=graph.placeholders[0], codec=e.codec, dtype=e.dtype,
                  shape=list(e.shape), payload=e.payload)
    out = graph.outputs[0]
    route = [pb.Hop(stage=packages["edge"].digest, needs=[x.name], codec="none"),
             pb.Hop(stage=packages["cloud"].digest, needs=list(stages["cloud"].inputs),
                    codec="none")]
    valid = pb.InferRequest(request_id="probe", tensors=[x], route=route, want=[out])

    def probe(ch: grpc.Channel) -> None:
        stub = pb_grpc.NodeStub(ch)
        assert stub.Health(pb.HealthRequest(), metadata=MD, timeout=PROBE_S).status == "serving"
        reply = stub.Infer(valid, metadata=MD, timeout=PROBE_S)
        assert [t.name for t in reply.tensors] == [out]

    def stop() -> None:
        edge.stop(0)
        cloud.stop(0)

    return Target("edgeweave.v1.Node", address, {
        "edgeweave.v1.InferRequest": lambda: [valid],
        "edgeweave.v1.Tensor": lambda: [x],
        "edgeweave.v1.Hop": lambda: route,
        "edgeweave.v1.DeployRequest": lambda: [*deploys[0], *deploys[1]],
        "edgeweave.v1.PutChunksRequest": lambda: put,
        "edgeweave.v1.WeightChunk": lambda: [c for m in put[1:] for c in m.chunks],
        "edgeweave.v1.HaveChunksRequest": lambda: [have],
        "edgeweave.v1.DeployFromChunksRequest": lambda: [from_chunks],
    }, probe, stop)


# -- federated learning ---------------------------------------------------------------------------

FL_SPEC = "mlp:4,3"
FL_DEVICE = 424_242  # the fuzz's own device; no boundary value or seed names it
FL_PROBE = 99


def fl_server() -> Target:
    """An FL server with one device (this process) in a round at all times: a driver thread
    runs rounds back to back, a reader thread follows the device's Tasks stream, so a seeded
    Update names a task that is open right now and reaches the update checks. The device
    registers again whenever its stream is gone (a keepalive missed on a busy box)."""
    from edgeweave.train.backends.grpc_backend import GrpcBackend
    from edgeweave.train.models import build_model
    from edgeweave.train.types import FitConfig
    from edgeweave.train.wire import fl_pb2, fl_pb2_grpc
    from edgeweave.train.wire.messages import params_to_msgs

    backend = GrpcBackend("127.0.0.1:0", TOKEN, round_timeout_s=2.0, model_spec=FL_SPEC,
                          max_update_bytes=2**22, heartbeat_s=0.2)
    params = OrderedDict((k, v.detach().clone())
                         for k, v in build_model(FL_SPEC).state_dict().items())
    msgs = params_to_msgs(params)
    state: dict = {"device": "", "task": "", "round": 0, "probe": "", "stream": None}
    ch = grpc.insecure_channel(backend.address)
    stub = fl_pb2_grpc.FederatedLearningStub(ch)
    stopping = threading.Event()

    def follow(tasks) -> None:
        try:
            for t in tasks:
                if t.kind == fl_pb2.Task.FIT:
                    state["task"], state["round"] = t.task_id, t.round
        except grpc.RpcError:
            pass  # cancelled, or the connection dropped: drive() connects again

    def connect() -> None:
        state["device"] = stub.Register(fl_pb2.RegisterRequest(
            client_id=FL_DEVICE, num_examples=5), metadata=MD, timeout=PROBE_S).session
        state["stream"] = stub.Tasks(fl_pb2.TasksRequest(session=state["device"]), metadata=MD)
        threading.Thread(target=follow, args=(state["stream"],), daemon=True).start()
        end = time.monotonic() + PROBE_S
        while FL_DEVICE not in backend.connected() and time.monotonic() < end:
            time.sleep(0.01)

    def drive() -> None:
        for r in itertools.count(1):
            if stopping.is_set():
                return
            if FL_DEVICE not in backend.connected():
                connect()
            backend.fit(r, params, [FL_DEVICE], FitConfig())

    connect()
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()

    def probe(c: grpc.Channel) -> None:
        s = fl_pb2_grpc.FederatedLearningStub(c)
        state["probe"] = s.Register(fl_pb2.RegisterRequest(client_id=FL_PROBE, num_examples=1),
                                    metadata=MD, timeout=PROBE_S).session

    def update() -> list[Message]:
        return [fl_pb2.Update(session=state["device"], task_id=state["task"],
                              round=state["round"], params=msgs, num_examples=5, train_loss=0.5)]

    def stop() -> None:
        stopping.set()
        backend.close()
        state["stream"].cancel()
        ch.close()
        driver.join(10)

    return Target("edgeweave.fl.v1.FederatedLearning", backend.address, {
        "edgeweave.fl.v1.RegisterRequest": lambda: [fl_pb2.RegisterRequest(
            client_id=FL_PROBE, num_examples=5, model_specs=[FL_SPEC], device="fuzz")],
        "edgeweave.fl.v1.TasksRequest": lambda: [fl_pb2.TasksRequest(session=state["probe"])],
        "edgeweave.fl.v1.Update": update,
        "edgeweave.fl.v1.Tensor": lambda: msgs,
        "edgeweave.fl.v1.SecAggMessage": lambda: [fl_pb2.SecAggMessage(
            session=state["device"], task_id=state["task"], round=state["round"])],
    }, probe, stop)


# -- decentralized training -----------------------------------------------------------------------

def _peer_cfg():
    from edgeweave.train.decentral.peer import PeerRunConfig

    # timeout_s bounds how long a handler waits for other workers: short, so a valid gradient
    # that must wait for a second one costs the fuzz half a second, not two minutes
    return PeerRunConfig(n=2, problem="convex", seed=1, timeout_s=0.5)


def _pull_probe(c: grpc.Channel) -> None:
    from edgeweave.train.wire import peer_pb2, peer_pb2_grpc

    peer_pb2_grpc.PeerStub(c).Pull(peer_pb2.PullRequest(sender=-1), metadata=MD,
                                   timeout=PROBE_S)


def gossip_peer() -> Target:
    from edgeweave.train.decentral.peer import PeerNode
    from edgeweave.train.wire import peer_pb2
    from edgeweave.train.wire.messages import params_to_msgs

    node = PeerNode(0, _peer_cfg(), TOKEN)
    msgs = params_to_msgs(node.template)
    return Target("edgeweave.peer.v1.Peer", f"127.0.0.1:{node.port}", {
        "edgeweave.peer.v1.PushRequest": lambda: [peer_pb2.PushRequest(
            sender=1, weight=0.5, params=msgs, step=1)],
        "edgeweave.peer.v1.PullRequest": lambda: [peer_pb2.PullRequest(sender=-1)],
        "edgeweave.fl.v1.Tensor": lambda: msgs,
    }, _pull_probe, lambda: node.server.stop(0))


def ring_worker() -> Target:
    from edgeweave.train.decentral.real import RingWorker
    from edgeweave.train.wire import peer_pb2
    from edgeweave.train.wire.messages import params_to_msgs

    worker = RingWorker(1, _peer_cfg(), TOKEN)
    lo, hi = worker.bounds[0]
    part = params_to_msgs(OrderedDict(chunk=torch.zeros(hi - lo)))[0]
    rounds = itertools.count(1)
    return Target("edgeweave.peer.v1.Peer", f"127.0.0.1:{worker.port}", {
        "edgeweave.peer.v1.ChunkRequest": lambda: [peer_pb2.ChunkRequest(
            sender=0, round=next(rounds), hop=0, chunk=0, part=part)],
        "edgeweave.peer.v1.PullRequest": lambda: [peer_pb2.PullRequest(sender=-1)],
        "edgeweave.fl.v1.Tensor": lambda: [part],
    }, _pull_probe, lambda: worker.server.stop(0), notes={"worker": worker})


def param_server(staleness: float | None) -> Callable[[], Target]:
    def start() -> Target:
        from edgeweave.train.decentral.real import ParamServerNode
        from edgeweave.train.wire import peer_pb2, peer_pb2_grpc
        from edgeweave.train.wire.messages import params_to_msgs

        ps = ParamServerNode(_peer_cfg(), TOKEN, staleness=staleness)
        msgs = params_to_msgs(ps.template)

        def slowest() -> int:
            return int(ps.clock.argmin())

        def probe(c: grpc.Channel) -> None:
            w = slowest()
            peer_pb2_grpc.ParamServerStub(c).PullModel(
                peer_pb2.ModelRequest(worker=w, clock=int(ps.clock[w])), metadata=MD,
                timeout=PROBE_S)

        return Target("edgeweave.peer.v1.ParamServer", f"127.0.0.1:{ps.port}", {
            "edgeweave.peer.v1.GradRequest": lambda: [peer_pb2.GradRequest(
                worker=w, read_version=ps.version, grad=msgs) for w in (0, 1)],
            "edgeweave.peer.v1.ModelRequest": lambda: [peer_pb2.ModelRequest(
                worker=w, clock=int(ps.clock[w])) for w in (0, 1)],
            "edgeweave.fl.v1.Tensor": lambda: msgs,
        }, probe, lambda: ps.server.stop(0))

    return start


# -- split learning -------------------------------------------------------------------------------

SPLIT_MLP = "mlp:64,32,32,10"


def split_edge(head: int | None) -> Callable[[], Target]:
    def start() -> Target:
        from edgeweave.codec import get_codec
        from edgeweave.train.split.grpc_edge import SplitEdgeServer
        from edgeweave.train.split.learning import SplitConfig
        from edgeweave.train.split.messages import encoded_to_msg, params_to_msgs
        from edgeweave.train.wire import split_pb2, split_pb2_grpc

        server = SplitEdgeServer(SplitConfig(SPLIT_MLP, cut=2, head=head), TOKEN)
        none = get_codec("none")
        act = encoded_to_msg(none.encode(torch.ones(4, 32)))
        labels = encoded_to_msg(none.encode(torch.arange(4)))
        feats = encoded_to_msg(none.encode(torch.ones(4, 32)))
        weights = params_to_msgs(server.edge.device_like or OrderedDict())
        steps = itertools.count(1)

        def probe(c: grpc.Channel) -> None:
            s = split_pb2_grpc.SplitLearningStub(c)
            if head is None:
                s.Forward(split_pb2.ForwardRequest(activations=act, labels=labels, train=False),
                          metadata=MD, timeout=PROBE_S)
            else:
                s.MiddleForward(split_pb2.MiddleRequest(activations=act, train=False),
                                metadata=MD, timeout=PROBE_S)

        def pending_backward() -> list[Message]:
            """A MiddleForward (train) of a fresh step, so the seeded backward can match it."""
            step = next(steps)
            with grpc.insecure_channel(server.address) as c:
                split_pb2_grpc.SplitLearningStub(c).MiddleForward(
                    split_pb2.MiddleRequest(client_id=1, step=step, activations=act,
                                            train=True), metadata=MD, timeout=PROBE_S)
            return [split_pb2.MiddleBackwardRequest(client_id=1, step=step, gradient=feats)]

        seeds: dict[str, Callable[[], Sequence[Message]]] = {
            "edgeweave.split.v1.ForwardRequest": lambda: [split_pb2.ForwardRequest(
                client_id=1, step=1, activations=act, labels=labels, train=True)],
            "edgeweave.split.v1.Tensor": lambda: [act, labels, *weights],
            "edgeweave.split.v1.DeviceWeights": lambda: [split_pb2.DeviceWeights(
                client_id=1, params=weights, codec="none")],
            "edgeweave.split.v1.MiddleRequest": lambda: [split_pb2.MiddleRequest(
                client_id=1, step=1, activations=act, train=True)],
        }
        if head is not None:
            seeds["edgeweave.split.v1.MiddleBackwardRequest"] = pending_backward
        return Target("edgeweave.split.v1.SplitLearning", server.address, seeds, probe,
                      server.stop)

    return start


def channel(address: str) -> grpc.Channel:
    """A plaintext channel with no client-side size limits: the server's limits are tested."""
    return grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1),
                                                   ("grpc.max_receive_message_length", -1)])


#: Every server under fuzz, by name; each serves the service its Target names.
SERVERS: dict[str, Callable[[], Target]] = {
    "node": runtime_node,
    "fl": fl_server,
    "gossip-peer": gossip_peer,
    "ring-worker": ring_worker,
    "param-server-sync": param_server(None),
    "param-server-ssp": param_server(1),
    "split-edge": split_edge(None),
    "split-edge-u": split_edge(4),
}

#: The service each server above serves (known before starting it, for test collection).
SERVICE_OF = {
    "node": "edgeweave.v1.Node",
    "fl": "edgeweave.fl.v1.FederatedLearning",
    "gossip-peer": "edgeweave.peer.v1.Peer",
    "ring-worker": "edgeweave.peer.v1.Peer",
    "param-server-sync": "edgeweave.peer.v1.ParamServer",
    "param-server-ssp": "edgeweave.peer.v1.ParamServer",
    "split-edge": "edgeweave.split.v1.SplitLearning",
    "split-edge-u": "edgeweave.split.v1.SplitLearning",
}
