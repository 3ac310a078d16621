"""Deploy under hostile input (issue 12): nodes never run code a device sent, check every weight
against their own model, stream uploads to disk, admit and evict under their bounds."""

import dataclasses
import hashlib
import io
import threading
import time
import warnings

import grpc
import pytest
import torch
from runtime_helpers import TOKEN, local_output, three_tier_plan
from torch import nn

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import capture, capture_spec, split
from edgeweave.graph.digits import DigitsCNN
from edgeweave.plan.branchy import branchy_net, branchy_spec
from edgeweave.runtime.client import CoInferenceClient
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.recipe import deploy_stream, package, package_stage
from edgeweave.runtime.server import NodeConfig
from edgeweave.security import authed_channel

INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION


def _stub(target):
    return pb_grpc.NodeStub(authed_channel(target, token=TOKEN))


def _code(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


@pytest.fixture
def node(tmp_path):
    """One edge node with a known cache dir; yields (target, service, start) where start(**cfg)
    starts more nodes like it."""
    servers = []

    def start(**cfg):
        cache = tmp_path / f"cache{len(servers)}"
        cache.mkdir()
        server, svc, port = start_node(NodeConfig("edge", "edge", cache_dir=str(cache), **cfg),
                                       ServeOptions("127.0.0.1:0", token=TOKEN))
        servers.append(server)
        return f"127.0.0.1:{port}", svc

    target, svc = start()
    yield target, svc, start
    for s in servers:
        s.stop(0)


def _cache_files(svc):
    """Files a Deploy left in the cache dir (the chunk store's own folder is not one)."""
    return [p for p in svc.deployer.cache_dir.iterdir() if p.is_file()]


def _plan(graph, fractions=(0.3, 2.0)):
    return three_tier_plan(graph, fractions=fractions)[1]


def _edge_package(graph, fractions=(0.3, 2.0)):
    """The edge stage of a device/edge plan, packaged as the client packages it."""
    chosen = _plan(graph, fractions)
    stages = {s.key: s for s in split(graph, chosen.placement, chosen.tiers)}
    env = {graph.placeholders[0]: torch.randn(graph.input_shape)}
    dev = stages["device"]
    with torch.no_grad():
        env.update(zip(dev.outputs, dev.module(*(env[n] for n in dev.inputs)), strict=True))
    edge = stages["edge"]
    return package_stage(graph, edge, [env[n] for n in edge.inputs])


# ---- the exploit: a TorchScript program reading, overwriting or creating a file -----------


class _ReadFile(nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, shared=False, size=8, dtype=torch.uint8)
        return x + data.float()


class _WriteFile(nn.Module):
    """Overwrites the file, or creates it: shared=True maps it read-write."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, shared=True, size=8, dtype=torch.uint8)
        data.fill_(65)
        return x + data.float()


def _program(cls, path) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(cls(str(path))), buf)
    return buf.getvalue()


def _run_program(data: bytes) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(io.BytesIO(data))(torch.zeros(8))


def _bytes_field(number: int, payload: bytes) -> bytes:
    out, n = bytes([number << 3 | 2]), len(payload)
    while n > 0x7F:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n]) + payload


def _v1_deploy(program: bytes, hops_ahead: int) -> bytes:
    """A Deploy message exactly as a v1 client encoded it (digest=1, program=2, inputs=3,
    outputs=4, name=5, hops_ahead=6)."""
    digest = hashlib.sha256(program).hexdigest().encode()
    return (_bytes_field(1, digest) + _bytes_field(2, program) + _bytes_field(3, b"x")
            + _bytes_field(4, b"output") + _bytes_field(5, b"evil:edge")
            + bytes([6 << 3, hops_ahead]))


@pytest.mark.parametrize("hops_ahead", [0, 1], ids=["to-edge", "via-edge-to-cloud"])
@pytest.mark.parametrize("attack", ["read", "overwrite", "create"])
def test_a_program_is_refused_and_the_file_untouched(nodes, digits_graph, tmp_path, attack,
                                                     hops_ahead):
    edge_target, _, _, (edge_svc, cloud_svc) = nodes
    target, decoy = tmp_path / "target", tmp_path / "decoy"
    if attack != "create":
        target.write_bytes(b"secret-key-material")
        decoy.write_bytes(b"secret-key-material")
    cls = _ReadFile if attack == "read" else _WriteFile
    # the program does what it says when a node loads and runs it (on a decoy here) ...
    out = _run_program(_program(cls, decoy))
    if attack == "read":
        assert out[0].item() == ord("s")
    else:
        assert decoy.read_bytes()[:8] == b"A" * 8
    # ... and a node refuses it, whether it arrives as v1 sent it or inside a current stream
    raw = authed_channel(edge_target, token=TOKEN).stream_unary(
        "/edgeweave.v1.Node/Deploy", request_serializer=lambda b: b,
        response_deserializer=pb.DeployReply.FromString)
    program = _program(cls, target)
    code, details = _code(lambda: raw(iter([_v1_deploy(program, hops_ahead)]), timeout=10))
    assert code == INVALID and "no longer accepts stage programs" in details
    pkg = _edge_package(digits_graph)
    stream = [*deploy_stream(pkg, "x", hops_ahead), pb.DeployRequest(program=program)]
    code, details = _code(lambda: _stub(edge_target).Deploy(iter(stream), timeout=10))
    assert code == INVALID and "no longer accepts stage programs" in details
    if attack == "create":
        assert not target.exists()
    else:
        assert target.read_bytes() == b"secret-key-material"
    assert len(edge_svc.stages) == 0 and len(cloud_svc.stages) == 0
    # both nodes keep serving
    chosen = _plan(digits_graph, (0.3, 0.7))
    client = CoInferenceClient(digits_graph, chosen, edge_target, token=TOKEN)
    x = torch.randn(digits_graph.input_shape)
    client.deploy(x)
    result = client.infer(x)
    assert not result.fallback and torch.allclose(result.output, local_output(digits_graph, x),
                                                  atol=1e-5)


def test_v1_encoding_helper_round_trips():
    msg = pb.DeployRequest.FromString(_v1_deploy(b"prog", 1))
    assert msg.program == b"prog" and msg.hops_ahead == 1 and msg.name == "evil:edge"


# ---- recipes: only models the node trusts -------------------------------------------------


@pytest.mark.parametrize("hops_ahead", [0, 1])
def test_a_model_file_the_device_names_is_never_imported(nodes, digits_graph, tmp_path,
                                                         hops_ahead):
    edge_target, _, _, (edge_svc, cloud_svc) = nodes
    marker = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                    "def factory():\n    raise SystemExit\n")
    pkg = _edge_package(digits_graph)
    for spec in (f"{evil}:factory", "evil.py:factory", "../evil.py:factory"):
        forged = package(dataclasses.replace(pkg.recipe, model=spec), pkg.weights)
        code, details = _code(lambda f=forged: _stub(edge_target).Deploy(
            deploy_stream(f, "x", hops_ahead), timeout=10))
        assert code == INVALID, details
        assert "looks like a file path" in details and "serve --model" in details
    assert not marker.exists()
    assert len(edge_svc.stages) == 0 and len(cloud_svc.stages) == 0


@pytest.mark.parametrize(("model", "shape", "code", "words"), [
    ("gpt-17", None, PRECONDITION, "serve --model"),
    ("mynet:factory", None, PRECONDITION, "no model 'mynet:factory'"),
    ("digits-branchy:side=4096,width=8", (1, 1, 4096, 4096), INVALID, "side <= 128"),
    ("digits-cnn", (1, 1, 64, 64), INVALID, "input_shape [1, 1, 64, 64]"),
])
def test_unknown_models_and_oversized_captures_are_refused(node, digits_graph, model, shape,
                                                           code, words):
    target, svc, _ = node
    pkg = _edge_package(digits_graph)
    recipe = dataclasses.replace(pkg.recipe, model=model,
                                 input_shape=shape or pkg.recipe.input_shape)
    got, details = _code(lambda: _stub(target).Deploy(
        deploy_stream(package(recipe, pkg.weights), "x", 0), timeout=30))
    assert got == code and words in details, details
    assert len(svc.stages) == 0


def _nodes_missing(r):
    return dataclasses.replace(r, nodes=(*r.nodes, "no_such_node"))


def _input_computed_inside(r):
    return dataclasses.replace(r, inputs=(*r.inputs, r.nodes[-1]))


def _node_without_its_input(r):
    return dataclasses.replace(r, inputs=())


def _output_outside(r):
    return dataclasses.replace(r, outputs=(*r.outputs, r.inputs[0]))


@pytest.mark.parametrize(("forge", "words"), [
    (_nodes_missing, "no node named 'no_such_node'"),
    (_input_computed_inside, "computed by the stage itself"),
    (_node_without_its_input, "neither one of its nodes nor one of its inputs"),
    (_output_outside, "is not one of its nodes"),
])
def test_a_recipe_the_graph_does_not_support_names_the_node(node, digits_graph, forge, words):
    target, svc, _ = node
    pkg = _edge_package(digits_graph)
    forged = package(forge(pkg.recipe), pkg.weights)
    code, details = _code(lambda: _stub(target).Deploy(deploy_stream(forged, "x", 0),
                                                      timeout=10))
    assert code == INVALID and words in details, details
    assert len(svc.stages) == 0


def test_a_graph_captured_from_memory_says_how_to_make_it_deployable(node, digits_graph):
    target, *_ = node
    graph = capture(DigitsCNN(), DigitsCNN.input_shape)  # the same nodes as digits_graph
    chosen = _plan(digits_graph)
    client = CoInferenceClient(graph, chosen, target, token=TOKEN)
    with pytest.raises(EdgeWeaveError, match=r"in-memory module.*serve --model"):
        client.deploy(torch.randn(graph.input_shape))


def test_the_branchy_net_is_built_from_its_specifier_with_the_devices_weights(node):
    target, svc, _ = node
    net = branchy_net(16, 8)  # the node builds its own, randomly initialised: weights must move
    graph = capture(net, (1, 1, 16, 16), name="branchy", spec=branchy_spec(16, 8))
    names = [n.name for n in graph.nodes]
    placement = {n: "device" if i < len(names) // 3 else "edge" for i, n in enumerate(names)}
    device, edge = split(graph, placement, ("device", "edge"))
    env = {graph.placeholders[0]: torch.randn(1, 1, 16, 16)}
    with torch.no_grad():
        env.update(zip(device.outputs, device.module(env[graph.placeholders[0]]), strict=True))
        args = [env[n] for n in edge.inputs]
        pkg = package_stage(graph, edge, args)
        reply = _stub(target).Deploy(deploy_stream(pkg, "branchy:edge", 0), timeout=30)
        assert reply.digest == pkg.digest and not reply.cached
        torch.testing.assert_close(svc.stages[pkg.digest].module(*args), edge.module(*args))


INSTALLED_NET = """from torch import nn
def factory():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5)), (1, 3, 8, 8)
"""


def test_a_model_the_operator_installed_is_built_from_its_file(node, tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(INSTALLED_NET)
    _, _, start = node
    target, svc = start(models=(f"{path}:factory",))
    graph = capture_spec(f"{path}:factory")
    assert graph.spec == "mynet:factory"
    _, chosen = three_tier_plan(graph, fractions=(0.3, 2.0))
    client = CoInferenceClient(graph, chosen, target, token=TOKEN)
    x = torch.randn(graph.input_shape)
    client.deploy(x)
    result = client.infer(x)
    assert not result.fallback, result.note
    assert torch.allclose(result.output, local_output(graph, x), atol=1e-5)
    stage = svc.stages[client.deployment.route[0].stage]  # the seam for request checks
    assert set(stage.specs) == {*stage.inputs, *stage.outputs}
    assert stage.specs[graph.outputs[0]] == ("float32", (1, 5))
    with pytest.raises(EdgeWeaveError, match="--model"):
        start(models=(f"{tmp_path}/missing.py:factory",))


@pytest.mark.slow
def test_serve_processes_build_an_installed_model_across_two_hops(tmp_path):
    """`serve --model` on real edge and cloud processes (as `lab` starts them for a model
    file): the edge forwards the recipe and weights, the cloud rebuilds from its own file."""
    path = tmp_path / "twohop.py"
    path.write_text(INSTALLED_NET)
    graph = capture_spec(f"{path}:factory")
    _, chosen = three_tier_plan(graph)
    x = torch.randn(graph.input_shape)
    with LocalLab(models=(f"{path}:factory",)) as lab:
        client = CoInferenceClient(graph, chosen, lab.edge_target, token=lab.token)
        client.deploy(x)
        result = client.infer(x)
    assert not result.fallback, result.note
    assert result.segments["cloud_compute"] > 0
    assert torch.allclose(result.output, local_output(graph, x), atol=1e-5)


# ---- weights: exactly the node's architecture, checked before the bytes ---------------------


def _rename(pkg):
    (spec, t), *rest = pkg.weights
    return package(pkg.recipe, [(dataclasses.replace(spec, name="evil." + spec.name), t), *rest])


def _retype(pkg):
    (spec, t), *rest = pkg.weights
    return package(pkg.recipe, [(dataclasses.replace(spec, dtype="float64"), t.double()), *rest])


def _reshape(pkg):
    (spec, t), *rest = pkg.weights
    row = t.reshape(1, -1)
    return package(pkg.recipe, [(dataclasses.replace(spec, shape=tuple(row.shape)), row),
                                *rest])


def _stream(pkg):
    return list(deploy_stream(pkg, "x", 0, slice_bytes=4096))


def _extra_bytes(pkg):
    msgs = _stream(pkg)
    msgs[-1].weights[-1].data += b"\0\0\0\0"
    return msgs


def _missing_bytes(pkg):
    msgs = _stream(pkg)
    msgs[-1].weights[-1].data = msgs[-1].weights[-1].data[:-4]
    return msgs


def _extra_weight(pkg):
    msgs = _stream(pkg)
    msgs[-1].weights.append(pb.WeightSlice(name="zz.extra", dtype="float32", shape=[1],
                                           data=b"\0" * 4))
    return msgs


def _flipped_byte(pkg):
    msgs = _stream(pkg)
    data = bytearray(msgs[1].weights[0].data)
    data[0] ^= 1
    msgs[1].weights[0].data = bytes(data)
    return msgs


def _wrong_digest(pkg):
    msgs = _stream(pkg)
    msgs[0].stage_digest = "0" * 64
    return msgs


@pytest.mark.parametrize(("forge", "words"), [
    (_rename, "expected weight"),
    (_retype, "declares float64"),
    (_reshape, "this node's model has float32"),
    (_extra_bytes, "more than the"),
    (_missing_bytes, "stream ended at weight"),
    (_extra_weight, "more than the stage's"),
    (_flipped_byte, "digest mismatch"),
    (_wrong_digest, "digest mismatch"),
])
def test_weights_that_do_not_match_the_nodes_model_are_refused(node, digits_graph, forge,
                                                                words):
    target, svc, _ = node
    forged = forge(_edge_package(digits_graph))
    msgs = forged if isinstance(forged, list) else _stream(forged)
    code, details = _code(lambda: _stub(target).Deploy(iter(msgs), timeout=10))
    assert code == INVALID and words in details, details
    assert len(svc.stages) == 0 and not _cache_files(svc)


def test_malformed_streams_are_refused(node):
    target, *_ = node
    for msgs, words in (([], "empty Deploy stream"),
                        ([pb.DeployRequest(stage_digest="0" * 64)], "no recipe"),
                        ([pb.DeployRequest(stage_digest="not-hex")], "64 lowercase hex")):
        code, details = _code(lambda m=msgs: _stub(target).Deploy(iter(m), timeout=10))
        assert code == INVALID and words in details
    assert _stub(target).Health(pb.HealthRequest(), timeout=5).status == "serving"


def test_a_stream_broken_off_leaves_nothing_behind(node, digits_graph):
    target, svc, _ = node
    msgs = _stream(_edge_package(digits_graph))
    release = threading.Event()

    def half_then_stall():
        yield from msgs[: len(msgs) // 2]
        release.wait(10)

    call = _stub(target).Deploy.future(half_then_stall(), timeout=30)
    deadline = time.monotonic() + 10
    while not _cache_files(svc) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _cache_files(svc), "the upload never reached the disk"
    call.cancel()
    release.set()
    deadline = time.monotonic() + 10
    while (_cache_files(svc) or svc.admission.running) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _cache_files(svc) and len(svc.stages) == 0
    assert svc.admission.running == 0


# ---- bounds: admission, budget, eviction ---------------------------------------------------


def test_deploys_beyond_the_admission_limit_are_refused(node, digits_graph):
    _, _, start = node
    target, svc = start(max_concurrency=1)
    msgs = _stream(_edge_package(digits_graph))
    release = threading.Event()

    def stalled():
        yield msgs[0]
        release.wait(10)
        yield from msgs[1:]

    first = _stub(target).Deploy.future(stalled(), timeout=30)
    deadline = time.monotonic() + 10
    while svc.admission.running == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    code, details = _code(lambda: _stub(target).Deploy(iter(msgs), timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at capacity" in details
    release.set()
    assert first.result().cached is False
    assert svc.metrics.snapshot()["edgeweave_rejected_total{reason=overloaded}"] >= 1


def test_stages_are_evicted_under_the_budget_and_redeployed_transparently(node, digits_graph):
    _, _, start = node
    one = _edge_package(digits_graph, (0.3, 2.0))
    other = _edge_package(digits_graph, (0.6, 2.0))
    assert one.digest != other.digest
    budget_mb = max(one.nbytes, other.nbytes) * 1.2 / (1 << 20)
    assert one.nbytes + other.nbytes > budget_mb * (1 << 20)
    target, svc = start(stage_budget_mb=budget_mb)
    x = torch.randn(digits_graph.input_shape)
    clients = []
    for fractions in ((0.3, 2.0), (0.6, 2.0)):
        clients.append(CoInferenceClient(digits_graph, _plan(digits_graph, fractions), target,
                                         token=TOKEN))
        clients[-1].deploy(x)
    assert len(svc.stages) == 1 and svc.stages.evicted == 1
    assert svc.stages.nbytes <= budget_mb * (1 << 20)
    result = clients[0].infer(x)  # its stage was evicted: FAILED_PRECONDITION, re-deploy, retry
    assert not result.fallback, result.note
    assert torch.allclose(result.output, local_output(digits_graph, x), atol=1e-5)
    assert svc.stages.evicted == 2


def test_a_stage_larger_than_the_limits_is_refused_before_any_byte(node, digits_graph):
    _, _, start = node
    pkg = _edge_package(digits_graph)
    for cfg, flag in (({"stage_budget_mb": 0.01}, "--stage-budget-mb"),
                      ({"max_stage_mb": 0.01}, "--max-stage-mb")):
        target, svc = start(**cfg)
        head = next(iter(_stream(pkg)))
        del head.weights[:]  # the refusal needs only the recipe
        code, details = _code(lambda t=target, h=head: _stub(t).Deploy(iter([h]), timeout=10))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and flag in details
        assert not _cache_files(svc)
