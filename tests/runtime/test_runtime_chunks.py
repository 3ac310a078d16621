"""Incremental upload's chunks (issue 18): a node stores weight chunks by digest as they arrive,
under its budget; a stage is built only from chunks whose bytes hash to their names; a broken
upload resumes without sending again what arrived; a damaged chunk is refused and sent again,
never built into a stage."""

import copy
import hashlib

import grpc
import pytest
import torch
from runtime_helpers import TOKEN, local_output

from edgeweave.codec.weights import roundtrip
from edgeweave.graph import split
from edgeweave.runtime import upload as upload_mod
from edgeweave.runtime.chunk_deploy import MAX_HAVE, MAX_REFUSED
from edgeweave.runtime.chunk_store import ChunkStore
from edgeweave.runtime.chunks import CHUNK_BYTES, chunk_digest
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.recipe import package_stage
from edgeweave.runtime.server import NodeConfig
from edgeweave.runtime.shaper import LinkShaper
from edgeweave.runtime.upload import ChunkUploader
from edgeweave.security import authed_channel

INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def edge(tmp_path):
    """start(**cfg) -> (target, service, server), nodes on loopback with their cache in
    tmp_path."""
    servers = []

    def start(cache=None, **cfg):
        cache = cache or tmp_path / f"cache{len(servers)}"
        cache.mkdir(exist_ok=True)
        server, svc, port = start_node(NodeConfig("edge", "edge", cache_dir=str(cache), **cfg),
                                       ServeOptions("127.0.0.1:0", token=TOKEN))
        servers.append(server)
        return f"127.0.0.1:{port}", svc, server

    yield start
    for s in servers:
        s.stop(0)


def _stub(target):
    return pb_grpc.NodeStub(authed_channel(target, token=TOKEN))


def _uploader(stub, graph, **kw):
    return ChunkUploader(stub, graph.spec, graph.input_shape, graph.module.state_dict(),
                         uplink=LinkShaper(1e6, 0.0), mbps=1e6, backoff_s=(0.01, 0.05), **kw)


def _edge_stage(graph):
    """Everything but the input on the edge, packaged as a device packages it."""
    placement = {n.name: "device" if n.kind == "placeholder" else "edge" for n in graph.nodes}
    stage = split(graph, placement, ["device", "edge"])[-1]
    x = torch.randn(graph.input_shape)
    return package_stage(graph, stage, [x]), stage


def _infer(stub, graph, digest, x):
    out = graph.outputs[0]
    req = pb.InferRequest(request_id="q", route=[pb.Hop(stage=digest, needs=graph.placeholders,
                                                        codec="none")], want=[out])
    from edgeweave.runtime import tensors

    req.tensors.extend(tensors.encode({graph.placeholders[0]: x}, graph.placeholders, "none"))
    reply = stub.Infer(req, timeout=30)
    return tensors.decode(reply.tensors, None, 1 << 30)[out]


def _code(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


def _all_weights(up):
    return up.chunks_of(sorted(up.weights))


def _store_is_sound(svc):
    store = svc.chunk_deployer.chunks
    files = [p for p in store.dir.iterdir() if len(p.name) == 64]
    assert all(chunk_digest(p.read_bytes()) == p.name for p in files)
    return {p.name for p in files}


def test_a_stage_built_from_chunks_answers_as_the_local_model(edge, digits_graph):
    target, _svc, _ = edge()
    stub = _stub(target)
    up = _uploader(stub, digits_graph)
    pkg, _ = _edge_stage(digits_graph)
    refs = up.chunks_of(spec.name for spec, _ in pkg.weights)
    assert len(up.missing(refs)) == len(refs) == 11  # 8 weights, 6.weight 4 chunks of 32 KiB
    up.upload(refs)
    assert up.missing(refs) == []
    reply = up.deploy(pkg, "digits:edge")
    assert reply.digest == pkg.digest and not reply.cached
    x = torch.randn(digits_graph.input_shape)
    assert torch.allclose(_infer(stub, digits_graph, pkg.digest, x),
                          local_output(digits_graph, x), atol=1e-5)
    assert up.deploy(pkg, "digits:edge").cached  # content-addressed: a second build is a hit
    assert up.stats.bytes_sent == sum(r.size for r in refs)


class _Breaks:
    """A stub whose connection drops after ``after`` chunks of its first PutChunks call: those
    reach the node, the call fails UNAVAILABLE, as a dropped link ends it."""

    def __init__(self, stub, after):
        self._stub, self.after, self.broke = stub, after, False

    def __getattr__(self, name):
        return getattr(self._stub, name)

    def PutChunks(self, messages, **kw):
        if self.broke:
            return self._stub.PutChunks(messages, **kw)
        self.broke = True
        head = next(messages)
        sent = [next(messages) for _ in range(self.after)]
        self._stub.PutChunks(iter([head, *sent]), **kw)
        raise _Unavailable()


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection dropped"


def test_a_broken_upload_resumes_without_sending_again_what_arrived(edge, digits_graph):
    target, svc, _ = edge()
    stub = _Breaks(_stub(target), after=4)
    up = _uploader(stub, digits_graph)
    refs = _all_weights(up)
    total = sum(r.size for r in refs)
    up.upload(refs)
    assert stub.broke and up.stats.broken == 1
    assert up.stats.bytes_sent == total  # the 4 chunks that arrived were not sent again
    assert _store_is_sound(svc) == {r.digest for r in refs}


def test_a_restarted_node_keeps_its_chunks_so_the_upload_resumes_there(edge, digits_graph,
                                                                      tmp_path):
    first, _, server = edge(cache=tmp_path / "kept")
    up = _uploader(_stub(first), digits_graph)
    refs = _all_weights(up)
    up.upload(refs[:6])
    server.stop(0)  # the node goes away; its cache dir stays
    second, _, _ = edge(cache=tmp_path / "kept")
    again = _uploader(_stub(second), digits_graph)
    again.upload(again.chunks_of(sorted(again.weights)))
    assert again.stats.chunks_held == 6
    assert again.stats.bytes_sent == sum(r.size for r in refs[6:])
    pkg, _ = _edge_stage(digits_graph)
    assert again.deploy(pkg, "digits:edge").digest == pkg.digest


def test_a_chunk_damaged_on_the_way_is_refused_and_sent_again(edge, digits_graph, monkeypatch):
    target, svc, _ = edge()
    real = upload_mod.chunk_data
    damaged = []

    def flip_once(tensor, offset):
        data = real(tensor, offset)
        if not damaged and len(data) == CHUNK_BYTES:
            damaged.append(hashlib.sha256(data).hexdigest())
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    monkeypatch.setattr(upload_mod, "chunk_data", flip_once)
    stub = _stub(target)
    up = _uploader(stub, digits_graph)
    pkg, _ = _edge_stage(digits_graph)
    refs = up.chunks_of(spec.name for spec, _ in pkg.weights)
    up.upload(refs)
    assert damaged and up.stats.refused == 1
    assert _store_is_sound(svc) == {r.digest for r in refs}  # the bad bytes never stored
    up.deploy(pkg, "digits:edge")
    x = torch.randn(digits_graph.input_shape)
    assert torch.allclose(_infer(stub, digits_graph, pkg.digest, x),
                          local_output(digits_graph, x), atol=1e-5)


class _Flips:
    """A stub that flips one byte of the first full chunk it sends, as a bad link would."""

    def __init__(self, stub):
        self._stub, self.flipped = stub, []

    def __getattr__(self, name):
        return getattr(self._stub, name)

    def PutChunks(self, messages, **kw):
        def damaged():
            for msg in messages:
                for c in msg.chunks:
                    if not self.flipped and len(c.data) == CHUNK_BYTES:
                        self.flipped.append(c.digest)
                        c.data = bytes([c.data[0] ^ 0xFF]) + c.data[1:]
                yield msg

        return self._stub.PutChunks(damaged(), **kw)


def test_int8_weights_travel_as_checked_chunks_and_the_edge_runs_them_dequantized(
        edge, digits_graph):
    """Per-channel int8 chunks are named by their encoded bytes' digest (a damaged one is
    refused and sent again), the node decodes them, and the stage's digest covers the
    dequantized weights: what it builds is the model with the weights as int8 delivers them,
    and the same chunks under the raw stage's digest are refused."""
    target, svc, _ = edge()
    stub = _Flips(_stub(target))
    up = _uploader(stub, digits_graph, codec="int8")
    raw, _ = _edge_stage(digits_graph)
    pkg = up.package(raw)
    refs = up.chunks_of(spec.name for spec, _ in pkg.weights)
    assert {r.codec for r in refs} == {"int8", "none"}  # conv/linear weights; biases raw
    assert sum(r.size for r in refs) < raw.nbytes / 3.5 and pkg.digest != raw.digest
    up.upload(refs)
    assert stub.flipped and up.stats.refused == 1
    assert _store_is_sound(svc) == {r.digest for r in refs}
    wrong = pb.DeployFromChunksRequest(stage_digest=raw.digest, recipe=raw.recipe.to_proto(),
                                       name="digits:edge", chunks=[r.digest for r in refs],
                                       weight_codec="int8")
    code, details = _code(lambda: stub.DeployFromChunks(wrong, timeout=30))
    assert code == INVALID and "digest mismatch" in details
    assert up.deploy(pkg, "digits:edge").digest == pkg.digest
    x = torch.randn(digits_graph.input_shape)
    dequantized = copy.deepcopy(digits_graph.module)
    dequantized.load_state_dict({k: roundtrip("int8", v)
                                 for k, v in digits_graph.module.state_dict().items()})
    with torch.no_grad():
        want = dequantized(x)
    got = _infer(stub, digits_graph, pkg.digest, x)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, local_output(digits_graph, x), atol=1e-7)


def test_a_chunk_damaged_on_disk_is_never_built_into_a_stage(edge, digits_graph):
    target, svc, _ = edge()
    stub = _stub(target)
    up = _uploader(stub, digits_graph)
    pkg, _ = _edge_stage(digits_graph)
    refs = up.chunks_of(spec.name for spec, _ in pkg.weights)
    up.upload(refs)
    victim = svc.chunk_deployer.chunks.dir / refs[2].digest
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x01
    victim.write_bytes(bytes(data))
    req = pb.DeployFromChunksRequest(stage_digest=pkg.digest, recipe=pkg.recipe.to_proto(),
                                     name="digits:edge", chunks=[r.digest for r in refs])
    code, details = _code(lambda: stub.DeployFromChunks(req, timeout=30))
    assert code == PRECONDITION and "not on this node" in details
    assert not victim.exists() and pkg.digest not in svc.stages  # deleted, nothing built
    sent = up.stats.bytes_sent
    up.deploy(pkg, "digits:edge")  # re-sends the one chunk, then builds
    assert up.stats.bytes_sent - sent == refs[2].size
    x = torch.randn(digits_graph.input_shape)
    assert torch.allclose(_infer(stub, digits_graph, pkg.digest, x),
                          local_output(digits_graph, x), atol=1e-5)


def _put(stub, *msgs):
    return stub.PutChunks(iter(msgs), timeout=30)


def _chunk(weight="6.weight", offset=0, data=None, digest=None):
    data = bytes(CHUNK_BYTES) if data is None else data
    return pb.WeightChunk(weight=weight, offset=offset, data=data,
                          digest=digest or chunk_digest(data))


def test_chunk_claims_are_checked_against_the_nodes_own_model(edge, digits_graph):
    target, _, _ = edge()
    stub = _stub(target)
    head = pb.PutChunksRequest(model="digits-cnn", input_shape=list(digits_graph.input_shape))
    cases = [
        ((pb.PutChunksRequest(chunks=[_chunk()]),), INVALID, "names no model"),
        ((pb.PutChunksRequest(model="no-such-net", input_shape=[1, 1, 8, 8]),),
         PRECONDITION, "no model"),
        ((head, pb.PutChunksRequest(chunks=[_chunk(weight="evil.weight")])), INVALID,
         "not one of the model's"),
        ((head, pb.PutChunksRequest(chunks=[_chunk(offset=100)])), INVALID, "no chunk starts"),
        ((head, pb.PutChunksRequest(chunks=[_chunk(offset=4 * CHUNK_BYTES)])), INVALID,
         "no chunk starts"),
        ((head, pb.PutChunksRequest(chunks=[_chunk(data=bytes(10))])), INVALID,
         f"has {CHUNK_BYTES} bytes, got 10"),
        ((head, pb.PutChunksRequest(chunks=[_chunk(digest="A" * 64)])), INVALID,
         "not a chunk digest"),
        ((head, pb.PutChunksRequest(model="digits-cnn")), INVALID, "only the first"),
        ((head, pb.PutChunksRequest(chunks=[pb.WeightChunk(
            weight="6.weight", offset=0, data=bytes(10), digest=chunk_digest(bytes(10)),
            codec="int4")])), INVALID, "not a weight encoding"),
        ((head, pb.PutChunksRequest(chunks=[pb.WeightChunk(
            weight="6.bias", offset=0, data=bytes(10), digest=chunk_digest(bytes(10)),
            codec="int8")])), INVALID, "does not travel as int8"),
    ]
    for msgs, code, words in cases:
        got, details = _code(lambda msgs=msgs: _put(stub, *msgs))
        assert got == code and words in details, (words, got, details)
    bad = [_chunk(data=bytes([k]) * CHUNK_BYTES, digest=chunk_digest(b"%d" % k))
           for k in range(MAX_REFUSED + 1)]
    assert _put(stub, head, pb.PutChunksRequest(chunks=bad[:3])).refused == [
        c.digest for c in bad[:3]]
    got, details = _code(lambda: _put(stub, head, pb.PutChunksRequest(chunks=bad)))
    assert got == INVALID and "did not hash" in details


def test_have_chunks_is_bounded(edge):
    target, _, _ = edge()
    stub = _stub(target)
    code, details = _code(lambda: stub.HaveChunks(pb.HaveChunksRequest(
        digests=["0" * 64] * (MAX_HAVE + 1)), timeout=30))
    assert code == INVALID and str(MAX_HAVE) in details
    code, details = _code(lambda: stub.HaveChunks(pb.HaveChunksRequest(
        digests=["../etc/passwd"]), timeout=30))
    assert code == INVALID and "not a chunk digest" in details


def test_a_peer_cannot_make_the_node_store_more_than_its_chunk_budget(edge, digits_graph):
    target, svc, _ = edge(chunk_budget_mb=0.1)  # 3 chunks of 32 KiB
    stub = _stub(target)
    head = pb.PutChunksRequest(model="digits-cnn", input_shape=list(digits_graph.input_shape))
    chunks = [_chunk(data=bytes([k]) * CHUNK_BYTES) for k in range(10)]
    assert _put(stub, head, pb.PutChunksRequest(chunks=chunks)).stored == 10
    store = svc.chunk_deployer.chunks
    assert store.nbytes <= 0.1 * 2**20 and len(store) == 3 and store.evicted == 7
    assert _store_is_sound(svc) == {c.digest for c in chunks[-3:]}  # least recently used go
    pkg, _ = _edge_stage(digits_graph)  # 150 kB of weights: more than the budget
    up = _uploader(stub, digits_graph)
    refs = up.chunks_of(spec.name for spec, _ in pkg.weights)
    req = pb.DeployFromChunksRequest(stage_digest=pkg.digest, recipe=pkg.recipe.to_proto(),
                                     chunks=[r.digest for r in refs])
    code, details = _code(lambda: stub.DeployFromChunks(req, timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--chunk-budget-mb" in details


def test_deploy_from_chunks_checks_its_chunk_list(edge, digits_graph):
    target, _, _ = edge()
    stub = _stub(target)
    pkg, _ = _edge_stage(digits_graph)
    up = _uploader(stub, digits_graph)
    refs = up.chunks_of(spec.name for spec, _ in pkg.weights)

    def deploy(chunks):
        return stub.DeployFromChunks(pb.DeployFromChunksRequest(
            stage_digest=pkg.digest, recipe=pkg.recipe.to_proto(), chunks=chunks), timeout=30)

    code, details = _code(lambda: deploy([r.digest for r in refs[:-1]]))
    assert code == INVALID and "are 11 chunks; the request lists 10" in details
    code, details = _code(lambda: deploy([r.digest for r in refs]))
    assert code == PRECONDITION and "11 of the 11 chunks" in details
    up.upload(refs)
    swapped = [r.digest for r in refs]
    swapped[0], swapped[1] = swapped[1], swapped[0]  # real chunks, wrong places
    code, details = _code(lambda: deploy(swapped))
    assert code == INVALID
    assert deploy([r.digest for r in refs]).digest == pkg.digest


def test_chunk_store_bounds_bytes_and_files_and_checks_every_read(tmp_path):
    store = ChunkStore(tmp_path / "c", budget_bytes=100, max_chunks=3)
    blobs = [bytes([k]) * 30 for k in range(5)]
    assert not store.put(chunk_digest(b"other"), blobs[0])  # bytes not hashing to the name
    assert len(store) == 0 and not list(store.dir.iterdir())
    for b in blobs[:3]:
        assert store.put(chunk_digest(b), b)
    store.read(chunk_digest(blobs[0]))  # used recently: the next put evicts blobs[1]
    store.put(chunk_digest(blobs[3]), blobs[3])
    assert store.missing(chunk_digest(b) for b in blobs[:4]) == [chunk_digest(blobs[1])]
    assert len(store) == 3 and store.nbytes == 90
    store.put(chunk_digest(blobs[4]), blobs[4])
    assert len(store) == 3 and len(list(store.dir.iterdir())) == 3
    victim = store.dir / chunk_digest(blobs[4])
    victim.write_bytes(b"tampered")
    assert store.read(chunk_digest(blobs[4])) is None and not victim.exists()
    (store.dir / "put-leftover").write_bytes(b"x")
    again = ChunkStore(tmp_path / "c", budget_bytes=100, max_chunks=3)  # a restart
    assert len(again) == 2 and not (store.dir / "put-leftover").exists()
    assert again.read(chunk_digest(blobs[0])) == blobs[0]

