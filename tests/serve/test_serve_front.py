"""Turning the cache and the filter on for a served model (YAML file, flags), building the stages
for any classifier, and the adapters to the serving engine's front-stage protocol."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeweave.errors import ServeError
from edgeweave.serve.cache.config import CacheConfig
from edgeweave.serve.cache.embed import PixelEmbedder
from edgeweave.serve.cache.semantic import SemanticCache
from edgeweave.serve.engine_stages import EngineCache, EngineFilter, for_engine, logits_for
from edgeweave.serve.filter.cascade import DIFFERENCE, SPECIALISED
from edgeweave.serve.filter.config import FilterConfig
from edgeweave.serve.filter.online import LearningFilter
from edgeweave.serve.front_config import (
    FrontConfig,
    build_front,
    front_from_mapping,
    load_front,
    parse_flag,
    with_flags,
)
from edgeweave.serve.stage import MODEL, Verdict

SHAPE = (1, 1, 4, 4)


def test_yaml_file_turns_stages_on_with_their_fields(tmp_path):
    f = tmp_path / "front.yaml"
    f.write_text("filter:\n  positive: [3, 1]\n  max_fn: 0.02\ncache:\n  threshold: 0.7\n  k: 3\n")
    cfg = load_front(f)
    assert cfg.cache == CacheConfig(threshold=0.7, k=3)
    assert cfg.filter is not None and cfg.filter.positive == (1, 3) and cfg.filter.max_fn == 0.02
    assert front_from_mapping({"cache": True}).cache == CacheConfig()
    assert not front_from_mapping({"cache": None, "filter": False}).enabled
    assert not load_front(_write(tmp_path, "empty.yaml", "")).enabled


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(("text", "words"), [
    ("cache:\n  threshold: 1.5\n", r"bad.yaml: cache.threshold must be in \[0, 1\], got 1.5"),
    ("cache:\n  threshold: -0.2\n", r"cache.threshold must be in \[0, 1\]"),
    ("filter:\n  positive: [1]\n  max_fp: 2\n", r"bad.yaml: filter.max_fp must be in \[0, 1\]"),
    ("filter:\n  max_fn: 0.1\n", r"filter.positive is empty"),
    ("filter:\n  positive: 1\n", r"filter.positive must be a list"),
    ("filter:\n  positive: [1]\n  detectors: [sobel]\n", r"filter.detectors must be"),
    ("filter:\n  positive: [1]\n  learn_frames: 5\n", r"filter.learn_frames must be an integer "
                                                      r">= 20"),
    ("cahce:\n  k: 3\n", r"bad.yaml: unknown section\(s\) cahce; known: cache, filter"),
    ("cache:\n  treshold: 0.5\n", r"cache has unknown field\(s\) treshold"),
    ("cache: 3\n", r"cache must be a mapping"),
    ("- 1\n- 2\n", r"expected a mapping"),
    ("cache: [\n", r"bad.yaml: not valid YAML"),
])
def test_bad_files_name_the_file_and_field(tmp_path, text, words):
    with pytest.raises(ServeError, match=words):
        load_front(_write(tmp_path, "bad.yaml", text))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ServeError, match=r"nope.yaml: cannot read"):
        load_front(tmp_path / "nope.yaml")


def test_flags_lay_their_fields_over_the_file():
    base = FrontConfig(cache=CacheConfig(threshold=0.9, k=7))
    cfg = with_flags(base, cache="threshold=0.6", filter="positive=[2,5],max_fn=0.05")
    assert cfg.cache == CacheConfig(threshold=0.6, k=7)
    assert cfg.filter is not None and cfg.filter.positive == (2, 5)
    assert with_flags(FrontConfig(), cache="on").cache == CacheConfig()
    assert parse_flag("k=3, policy=lru", "--cache") == {"k": 3, "policy": "lru"}


@pytest.mark.parametrize(("cache", "filt", "words"), [
    ("threshold=1.2", None, r"--cache: cache.threshold must be in \[0, 1\], got 1.2"),
    ("k", None, r"--cache 'k': expected field=value pairs"),
    ("colour=red", None, r"--cache: cache has unknown field\(s\) colour"),
    (None, "max_fn=0.1", r"--filter: filter.positive is empty"),
    (None, "positive=[1],max_fp=-1", r"--filter: filter.max_fp must be in"),
])
def test_bad_flags_name_the_flag_and_field(cache, filt, words):
    with pytest.raises(ServeError, match=words):
        with_flags(FrontConfig(), cache=cache, filter=filt)


def test_any_classifier_gets_its_stages_in_order_and_bad_classes_are_named():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    cfg = FrontConfig(CacheConfig(radius=0.1, k=1), FilterConfig(positive=(1, 2)))
    stages = build_front(cfg, net, (1, 1, 8, 8), 4)
    assert [type(s) for s in stages] == [LearningFilter, SemanticCache]
    assert [type(s) for s in for_engine(stages)] == [EngineFilter, EngineCache]
    with pytest.raises(ServeError, match=r"filter.positive names class\(es\) \[4\]; the model's "
                                         r"classes are 0..3"):
        build_front(FrontConfig(filter=FilterConfig(positive=(1, 4))), net, (1, 1, 8, 8), 4)
    with pytest.raises(ServeError, match=r"cache.embed must be"):
        build_front(FrontConfig(CacheConfig(embed="colour")), net, SHAPE, 4)


def test_filter_needs_frames_its_specialised_model_can_take():
    for shape in [(1, 16), (1, 3, 16, 24), (1, 3, 12, 12)]:
        with pytest.raises(ServeError, match=r"filter needs square frames \(1, C, S, S\) with S "
                                             r"divisible by 8"):
            LearningFilter(nn.Flatten(), shape, FilterConfig(positive=(1,)))


def test_filter_learning_frames_are_bounded():
    with pytest.raises(ServeError, match=r"filter.learn_frames 5000 would keep .* at most"):
        LearningFilter(nn.Flatten(), (1, 3, 224, 224), FilterConfig(positive=(1,),
                                                                      learn_frames=5000))


# ---- the serving engine's protocol -----------------------------------------------------------

def consult(stages, x):
    """The serving engine's front-stage rule (serve.front.consult on branch serving): the first
    stage whose lookup answers ends the request; an admit of False skips the model."""
    for s in stages:
        hit = getattr(s, "lookup", lambda _x: None)(x)
        if hit is not None:
            return "answered", hit
        if not getattr(s, "admit", lambda _x: True)(x):
            return "skipped", None
    return "model", None


@pytest.mark.parametrize(("label", "score", "n"), [(2, 0.8, 4), (0, 1.0, 10), (3, 0.1, 4)])
def test_cache_answers_as_logits_whose_argmax_is_the_label(label, score, n):
    logits = logits_for(Verdict(label, score, "edge"), n)
    probs = torch.softmax(logits, dim=1)[0]
    assert logits.shape == (1, n) and int(probs.argmax()) == label
    if score > 1 / n:
        assert float(probs[label]) == pytest.approx(min(score, 1 - 1e-9), abs=1e-6)


def test_engine_cache_answers_what_the_model_answered_before_and_nothing_else():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    cache = SemanticCache(PixelEmbedder(SHAPE), SHAPE, 3, CacheConfig(radius=0.05, k=1),
                          name="edge")
    stages = for_engine([cache])
    x = torch.rand(1, 1, 4, 4)
    assert consult(stages, x) == ("model", None)
    with torch.no_grad():
        out = net(x)
    stages[0].observe(x, (out,))
    kind, hit = consult(stages, x + 1e-5)
    assert kind == "answered" and int(hit[0].argmax()) == int(out.argmax())
    assert consult(stages, torch.rand(1, 1, 4, 4) + 5)[0] == "model"  # a stranger
    assert consult(stages, (x, x))[0] == "model"  # several inputs: not ours, passed on


class Fixed:
    """A filter stand-in answering from a script, to hold the adapter to its rule."""

    name = "filter"

    def __init__(self, answers):
        self.answers, self.seen = list(answers), []

    def lookup(self, x, source=""):
        return self.answers.pop(0)

    def observe(self, x, source, answer):
        self.seen.append(answer)


def test_engine_filter_skips_what_holds_nothing_new_or_nothing_of_interest():
    script = [None, Verdict(0, 0.9, DIFFERENCE), Verdict(1, 0.9, DIFFERENCE),
              Verdict(0, 0.99, SPECIALISED), Verdict(1, 0.99, SPECIALISED)]
    f = Fixed(script)
    stages = for_engine([f])  # type: ignore[list-item]
    got = [consult(stages, torch.rand(1, 1, 4, 4))[0] for _ in script]
    # only "no object" skips: a frame the cascade believes holds one goes to the model (the
    # device wants its label); a skipped frame is the stream's latest, for the earlier detector
    assert got == ["model", "skipped", "model", "skipped", "model"]
    assert f.seen == [script[1], script[3]]
    stages[0].observe(torch.rand(1, 1, 4, 4), (torch.tensor([[0.0, 5.0, 1.0]]),))
    assert f.seen[2:] == [Verdict(1, pytest.approx(float(torch.softmax(
        torch.tensor([0.0, 5.0, 1.0]), 0)[1])), MODEL)]


def test_cache_answers_behind_the_serving_engine():
    """Live once the serving engine (issue 15, branch serving) is merged: the adapters plugged in
    with ``Engine.set_front`` spare the model a repeated input."""
    engine_mod = pytest.importorskip("edgeweave.serve.engine",
                                     reason="the serving engine is not merged yet")
    from edgeweave.serve.config import NodeServing, ServingConfig, resolve

    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    runs = []

    def runner(batch, _until):
        runs.append(len(batch))
        with torch.no_grad():
            out = net(torch.cat([b[0] for b in batch]))
        return [(out[i:i + 1],) for i in range(len(batch))]

    node = NodeServing()
    engine = engine_mod.Engine(node).start()
    try:
        engine.add("k", "tiny", runner, resolve(ServingConfig(), node))
        front = FrontConfig(cache=CacheConfig(radius=0.05, k=1))
        engine.set_front("k", for_engine(build_front(front, net, SHAPE, 3)))
        x = torch.rand(1, 1, 4, 4)
        answers = []
        for inp in (x, x + 1e-6):
            pending = engine.submit("k", (inp,))
            assert pending.wait(10)
            answers.append(pending.result())
    finally:
        engine.stop()
    assert [a.source for a in answers] == ["model", "cache"] and sum(runs) == 1
    assert int(answers[1].outputs[0].argmax()) == int(answers[0].outputs[0].argmax())
