"""Front stages on a served model (issue 18): the operator's `serve --front` puts a semantic
cache, an input filter and Precog's push in front of a model devices deploy whole; a repeated
input is answered from the cache in the computed reply's shape, a frame with nothing new is
answered by the filter, each counted in the node's metrics; a device keeps a pushed entry and
answers from it, and refuses entries a hostile edge pushes."""

import grpc
import numpy as np
import pytest
import torch
from runtime_helpers import TOKEN
from test_runtime_server import stub

from edgeweave.errors import EdgeWeaveError, ServeError
from edgeweave.graph import capture_spec
from edgeweave.runtime import tensors
from edgeweave.runtime.front_client import DEVICE_CACHE, CachedDevice
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.server import NodeConfig
from edgeweave.runtime.summary import LiveSummary
from edgeweave.runtime.whole_model import whole_model
from edgeweave.serve.cache.config import CacheConfig
from edgeweave.serve.cache.embed import make_embedder
from edgeweave.serve.cache.semantic import SemanticCache
from edgeweave.serve.front_config import front_flag

SHAPE = (1, 1, 8, 8)
DARK, BRIGHT = 0, 1


@pytest.fixture(scope="module")
def bright():
    """digits-cnn with weights set so it answers BRIGHT (confidently) for a frame holding a
    bright square and DARK otherwise: the test knows every label the node computes."""
    g = capture_spec("digits-cnn")
    sd = {k: torch.zeros_like(v) for k, v in g.module.state_dict().items()}
    sd["0.weight"][0, 0, 1, 1] = 1.0  # conv: channel 0 is the frame
    sd["2.weight"][0, 0, 1, 1] = 1.0  # conv: channel 0 is the frame again, then max-pooled
    sd["6.weight"][0, :16] = 1.0 / 16  # hidden 0: the pooled frame's mean
    sd["8.weight"][BRIGHT, 0] = 40.0  # logit BRIGHT: 40 * (mean - 0.3)
    sd["8.bias"][BRIGHT] = -12.0
    sd["8.bias"][DARK] = 0.5
    g.module.load_state_dict(sd)
    return whole_model("digits-cnn", graph=g)


def frame(kind, seed, noise=0.003):
    """The scene (a lighting gradient), with a bright square for BRIGHT, and camera noise."""
    g = torch.Generator().manual_seed(seed)
    x = (0.1 + 0.2 * torch.arange(8.0) / 7).expand(SHAPE).clone()
    if kind == BRIGHT:
        x[..., 2:6, 2:6] = 1.0
    return (x + noise * torch.randn(SHAPE, generator=g)).clamp(0, 1)


def node(front):
    model, config = front_flag(front)
    server, svc, port = start_node(NodeConfig("edge", "edge", fronts={model: config}),
                                   ServeOptions("127.0.0.1:0", token=TOKEN))
    return server, svc, stub(f"127.0.0.1:{port}")


def ask(s, model, x, device="cam", prefetch=0):
    req = model.request(model.encode(x))
    req.device, req.prefetch = device, prefetch
    return s.Infer(req, timeout=30)


def front_counts(svc):
    snap = svc.metrics.snapshot()
    return {k.split("result=")[1].rstrip("}"): v for k, v in snap.items()
            if k.startswith("edgeweave_serve_front_total")}


def device_cache(name="device-cache"):
    cfg = CacheConfig(threshold=0.6, k=1, radius=0.2)
    return SemanticCache(make_embedder("pixels", None, SHAPE), SHAPE, 10, cfg, name=name)


def test_a_repeated_input_is_answered_by_the_cache_and_pushed_to_other_devices(bright):
    """The node computes a new input and answers its repeat from the cache, in the same reply
    shape; hits and misses are counted and summarised. Device d1's classes teach the edge
    that BRIGHT follows DARK, so d2's first (DARK) request brings BRIGHT's entry with it and
    d2 answers its BRIGHT frame itself, never sending it."""
    server, svc, s = node("digits-cnn={cache: {threshold: 0.6, k: 1, radius: 0.2}, "
                          "prefetch: {budget: 4}}")
    try:
        s.Deploy(bright.deploy_stream(pb.ServingConfig()), timeout=60)
        summary = LiveSummary(svc.metrics.registry, "edge", 1.0, lambda line: None)
        computed = ask(s, bright, frame(DARK, 0), "d1")
        cached = ask(s, bright, frame(DARK, 1), "d1")  # the same scene, other camera noise
        assert (computed.answered_by, cached.answered_by) == ("model", "cache")
        out = [tensors.decode(r.tensors)[bright.outputs[0]] for r in (computed, cached)]
        assert out[0].shape == out[1].shape == (1, 10) and out[1].dtype == out[0].dtype
        assert int(out[0].argmax()) == int(out[1].argmax()) == DARK
        for i, kind in enumerate([BRIGHT, DARK, BRIGHT]):
            assert int(tensors.decode(ask(s, bright, frame(kind, 10 + i), "d1").tensors)[
                bright.outputs[0]].argmax()) == kind
        counts = front_counts(svc)
        assert counts["cache_hit"] == 3 and counts["cache_miss"] == 2  # 2 computed: one each
        assert "cache 60% hit" in summary.line()

        d2 = CachedDevice(bright, s, "d2", device_cache(), prefetch=4)
        first = d2.infer(frame(DARK, 20))
        assert first.label == DARK and first.answered_by == "cache", first
        assert first.pushed >= 1, (d2.refused, d2.last_refusal, front_counts(svc))
        again = d2.infer(frame(BRIGHT, 21))
        assert (again.label, again.answered_by) == (BRIGHT, DEVICE_CACHE)
        assert front_counts(svc)["pushed"] == first.pushed and d2.refused == 0
        assert f"pushed {first.pushed}" in summary.line()
    finally:
        server.stop(0)
        svc.close()


def test_a_frame_with_nothing_new_is_answered_by_the_filter(bright):
    """After learning a camera's stream from its first frames, the node's filter answers the
    empty scene (no outputs: the device keeps its answer; the reply names the cascade's step)
    and lets a frame with the object through to the model; every filtered frame is counted,
    and each reply says whether the stream's filter is learning or active."""
    server, svc, s = node("digits-cnn={filter: {positive: [1], learn_frames: 24, epochs: 4}}")
    try:
        s.Deploy(bright.deploy_stream(pb.ServingConfig()), timeout=60)
        for i in range(24):  # learning: every frame reaches the model, and the reply says so
            r = ask(s, bright, frame(BRIGHT if i % 4 == 0 else DARK, i))
            assert (r.answered_by, r.filter_state, r.filter_step) == ("model", "learning", "")
        learner = next(iter(svc.fronts.served.values())).filter
        learner.join(60)
        assert "device:cam" in learner.tuned, learner.failed
        summary = LiveSummary(svc.metrics.registry, "edge", 1.0, lambda line: None)
        replies = [(kind, ask(s, bright, frame(kind, 100 + i))) for i, kind in
                   enumerate([DARK, DARK, BRIGHT, DARK, DARK, BRIGHT])]
        for kind, reply in replies:
            if kind == BRIGHT:  # the filter never drops a frame the query wants
                assert reply.answered_by == "model", [(k, r.answered_by) for k, r in replies]
                assert int(tensors.decode(reply.tensors)[bright.outputs[0]].argmax()) == BRIGHT
            elif reply.answered_by == "filter":
                assert not reply.tensors and reply.note == "skipped by filter"
                assert reply.filter_step in ("difference", "specialised"), reply
            assert reply.filter_state == "active"  # the stream's filter runs (replies say)
        filtered = sum(r.answered_by == "filter" for _, r in replies)
        assert filtered >= 2 and front_counts(svc)["filtered"] == filtered
        assert f"filtered {filtered}" in summary.line()
        other = ask(s, bright, frame(DARK, 200), device="other")  # its own stream: learning
        assert (other.answered_by, other.filter_state) == ("model", "learning")
    finally:
        server.stop(0)
        svc.close()


def test_a_device_refuses_what_a_hostile_edge_pushes():
    d = CachedDevice(None, None, "d", device_cache(), prefetch=2)
    key = np.zeros(64, dtype=np.float32)
    key[0] = 1.0

    def reply(*entries, embed="pixels"):
        return pb.InferReply(prefetched=list(entries), prefetch_embed=embed)

    good = pb.CacheEntry(uid="e:1", label=3, key=key.tolist())
    assert d.admit(reply(good)) == 1 and d.cache.holds("e:1")
    assert d.admit(reply(good, good, good)) == 0 and "asked for at most 2" in d.last_refusal
    assert d.admit(reply(pb.CacheEntry(uid="e:2", label=3, key=[1.0] * 65))) == 0
    assert "65 values" in d.last_refusal
    for bad, why in ((pb.CacheEntry(uid="e:3", label=10, key=key.tolist()), "label 10"),
                     (pb.CacheEntry(uid="e:4", label=1, key=(key * 3).tolist()), "unit length"),
                     (pb.CacheEntry(uid="e:5", label=1, key=[float("nan")] * 64), "NaN"),
                     (pb.CacheEntry(uid="", label=1, key=key.tolist()), "uid")):
        assert d.admit(reply(bad)) == 0 and why in d.last_refusal
    assert d.admit(reply(good, embed="prefix:relu")) == 0 and "keyed by" in d.last_refusal
    assert d.refused == 3 + 1 + 4 + 1 and len(d.cache) == 1


@pytest.mark.parametrize("flag, words", [
    ("digits-cnn={cache: {threshold: 1.5}}", "cache.threshold must be in [0, 1]"),
    ("digits-cnn={cache: {thresold: 0.5}}", "unknown field(s) thresold"),
    ("digits-cnn={filter: {positive: []}}", "filter.positive is empty"),
    ("digits-cnn={prefetch: {budget: 4}}", "prefetch needs a cache section"),
    ("digits-cnn=/no/such/front.yaml", "cannot read the front-stage file"),
    ("digits-cnn", "expected MODEL=FILE.yaml"),
])
def test_bad_front_settings_are_named(flag, words):
    with pytest.raises(ServeError) as err:
        front_flag(flag)
    assert words in str(err.value) and "--front" in str(err.value)


@pytest.mark.parametrize("flag, words", [
    ("no-such-net={cache: {}}", "--front no-such-net: this node has no model"),
    ("digits-cnn={cache: {embed: 'prefix:nope'}}", "--front digits-cnn: cache.embed names "
                                                   "node 'nope'"),
    ("digits-cnn={filter: {positive: [12]}}", "--front digits-cnn: filter.positive names "
                                              "class(es) [12]"),
])
def test_a_front_the_model_cannot_take_stops_the_node_at_start(flag, words):
    model, config = front_flag(flag)
    with pytest.raises(EdgeWeaveError) as err:
        start_node(NodeConfig("edge", "edge", fronts={model: config}),
                   ServeOptions("127.0.0.1:0", token=TOKEN))
    assert words in str(err.value)


def test_a_hostile_device_id_is_only_a_bounded_stream_key(bright):
    """A device names itself; the node keeps a bounded, printable prefix of the name as the
    request's stream key and answers as usual. (The cache keys on the model's first layers,
    read from the node's own copy of digits-cnn with the deployed weights.)"""
    server, svc, s = node("digits-cnn={cache: {embed: 'prefix:1', radius: 0.2}, "
                          "prefetch: {max_sources: 2}}")
    try:
        s.Deploy(bright.deploy_stream(pb.ServingConfig()), timeout=60)
        by = []
        for i in range(4):
            reply = ask(s, bright, frame(DARK, i), device="\x00evil" * 100 + str(i),
                        prefetch=10_000)
            assert reply.tensors and len(reply.prefetched) <= 16
            by.append(reply.answered_by)
        front = next(iter(svc.fronts.served.values()))
        assert front.embed == "prefix:1" and by == ["model", "cache", "cache", "cache"]
        prefetcher = front.prefetcher
        assert len(prefetcher.predictor.current) <= 2
        assert all(len(k) <= 7 + 64 and k.isprintable() for k in prefetcher.predictor.current)
    except grpc.RpcError as e:
        pytest.fail(f"the node refused: {e.details()}")
    finally:
        server.stop(0)
        svc.close()
