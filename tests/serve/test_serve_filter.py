"""The input-filtering cascade: the stage rule, the difference detector, the optimiser's replay
against the real cascade, its targets on held-out frames, and many streams sharing filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgeweave.errors import ServeError
from edgeweave.serve.filter.cascade import (
    DIFFERENCE,
    SPECIALISED,
    Cascade,
    Query,
    Thresholds,
    stage_of,
)
from edgeweave.serve.filter.difference import DifferenceDetector
from edgeweave.serve.filter.optimise import Candidate, StageCosts, optimise, replay
from edgeweave.serve.filter.run import run_stream
from edgeweave.serve.filter.specialised import object_probability, train_specialised
from edgeweave.serve.filter.streams import StreamMux
from edgeweave.serve.stage import MODEL

SHAPE = (1, 3, 16, 16)


def scene_stream(n: int, present: np.ndarray, seed: int, drift: float = 0.1) -> torch.Tensor:
    """A fixed random scene with a bright square where ``present``, lighting drift and noise."""
    g = torch.Generator().manual_seed(seed)
    scene = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(99)) * 0.5
    frames = scene.repeat(n, 1, 1, 1)
    for i in np.flatnonzero(present):
        y, x = (i // 3) % 9, (i // 2) % 9
        frames[i, :, y:y + 6, x:x + 6] = 0.95
    gain = 1 + drift * torch.sin(torch.arange(n) / 40.0)
    frames = frames * gain[:, None, None, None] + 0.01 * torch.randn(frames.shape, generator=g)
    return frames.clamp(0, 1)


def episodes(n: int, seed: int, occupied: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    present = np.zeros(n, dtype=bool)
    i = 0
    while i < n:
        length = int(rng.integers(5, 15))
        present[i:i + length] = rng.random() < occupied
        i += length
    return present


class Bright(nn.Module):
    """A stand-in reference model: class 1 (object) when a bright square is present."""

    def forward(self, x):
        hit = (x.amax(dim=1) > 0.9).float().mean(dim=(1, 2)) > 0.05
        return torch.stack([(~hit).float(), hit.float()], dim=1) * 8


QUERY = Query(Bright(), [1], SHAPE)


class Scripted(nn.Module):
    """A 'specialised model' whose P(object) for the i-th frame it sees is ``probs[i]``."""

    def __init__(self, probs):
        super().__init__()
        self.probs, self.i = list(probs), 0

    def forward(self, x):
        p = torch.tensor(self.probs[self.i:self.i + len(x)], dtype=torch.float64)
        self.i += len(x)
        return torch.stack([torch.log1p(-p.clamp(max=1 - 1e-9)), torch.log(p.clamp(1e-9))],
                           dim=1)


# ---- the rule ------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(0, 1000), st.floats(0, 0.05), st.floats(0, 1), st.floats(0, 1),
       st.sampled_from(["reference", "earlier"]))
def test_cascade_sends_on_exactly_the_frames_its_thresholds_keep(seed, diff, a, b, mode):
    n = 60
    frames = scene_stream(n, episodes(n, seed), seed)
    rng = np.random.default_rng(seed)
    probs = rng.random(n)
    det = DifferenceDetector(mode, refresh=4).fit(frames, QUERY.labels(frames))
    th = Thresholds(diff, min(a, b), max(a, b))
    scores = det.scores(frames)
    # the rule, stated independently: skip below the threshold, but (earlier mode) never more
    # than `refresh` frames in a row; then c_low / c_high decide or the reference does
    expected, streak = [], 0
    for i in range(n):
        may = mode == "reference" or streak < det.refresh
        expected.append(stage_of(float(scores[i]), float(probs[i]), th, may))
        streak = streak + 1 if expected[-1] == DIFFERENCE else 0
    spec = Scripted([p for p, e in zip(probs, expected, strict=True) if e != DIFFERENCE])
    cascade = Cascade(det, spec, th, SHAPE)
    run = run_stream(cascade, QUERY, frames)
    truth = QUERY.labels(frames)
    assert run.stages == expected
    for i in range(n):
        if run.stages[i] == MODEL:
            assert run.answers[i] == truth[i]
        if mode == "earlier" and run.stages[i] == DIFFERENCE and i > 0:
            assert run.answers[i] == run.answers[i - 1]
    # and the optimiser's replay predicts the very same answers and stages
    answer, to_spec, to_ref = replay(scores, probs, truth, det, th.difference,
                                     np.array([th.c_low]), np.array([th.c_high]))
    assert np.array_equal(answer[0], run.answers)
    assert np.array_equal(to_ref[0], np.array([s == MODEL for s in run.stages]))
    assert np.array_equal(to_spec, np.array([s != DIFFERENCE for s in run.stages]))


def test_thresholds_are_checked_with_their_field_names():
    for args, words in [((1.5, 0.1, 0.9), "filter.difference_threshold must be in"),
                        ((0.1, -0.1, 0.9), "filter.c_low must be in"),
                        ((0.1, 0.2, 1.1), "filter.c_high must be in"),
                        ((0.1, 0.8, 0.2), "must not exceed filter.c_high")]:
        with pytest.raises(ServeError, match=words):
            Thresholds(*args)


def test_bad_streams_and_frames_are_named():
    det = DifferenceDetector().fit(scene_stream(20, np.zeros(20, bool), 0), np.zeros(20))
    cascade = Cascade(det, Scripted([0.5]), Thresholds(0.0, 0.2, 0.8), SHAPE)
    with pytest.raises(ServeError, match="is empty"):
        run_stream(cascade, QUERY, torch.zeros(0, 3, 16, 16))
    with pytest.raises(ServeError, match=r"frames of shape \(3, 8, 8\).*\(3, 16, 16\)"):
        run_stream(cascade, QUERY, torch.zeros(4, 3, 8, 8))
    with pytest.raises(ServeError, match="frame has shape"):
        cascade.lookup(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ServeError, match=r"filter.difference.refresh must be an integer"):
        DifferenceDetector("earlier", refresh=0)
    with pytest.raises(ServeError, match=r"filter.difference.mode"):
        DifferenceDetector("median")
    with pytest.raises(ServeError, match="frames of the empty scene"):
        DifferenceDetector().fit(scene_stream(5, np.ones(5, bool), 0), np.ones(5, bool))
    with pytest.raises(ServeError, match="does not divide"):
        DifferenceDetector(blocks=3).fit(scene_stream(9, np.zeros(9, bool), 0), np.zeros(9))


# ---- the detector --------------------------------------------------------------------------

def test_detector_sees_objects_not_lighting():
    n = 200
    present = episodes(n, 4)
    frames = scene_stream(n, present, 4, drift=0.25)
    for det in (DifferenceDetector("reference"), DifferenceDetector("reference", blocks=4)):
        s = det.fit(frames, present).scores(frames)
        assert ((s >= 0) & (s <= 1)).all()
        assert s[present].min() > s[~present].max()  # a clean cut exists despite the drift
    earlier = DifferenceDetector("earlier", t=2).fit(frames, present).scores(frames)
    assert earlier[:2].tolist() == [1.0, 1.0]
    assert earlier[~present & ~np.roll(present, 2)][2:].max() < earlier[present].max()


# ---- the optimiser --------------------------------------------------------------------------

def test_optimiser_meets_its_targets_on_held_out_frames():
    train_p, tune_p, test_p = episodes(300, 1), episodes(300, 2), episodes(300, 3)
    train, tune, test = (scene_stream(300, p, s) for s, p in [(1, train_p), (2, tune_p),
                                                               (3, test_p)])
    y_train, y_tune, y_test = (QUERY.labels(x) for x in (train, tune, test))
    spec = train_specialised(train, y_train, width=4, epochs=4, seed=0)
    costs = StageCosts(0.01, 0.1, 3.0, 3.0)
    cands = [Candidate(d.fit(train, y_train), d.scores(tune), costs)
             for d in (DifferenceDetector("reference"), DifferenceDetector("earlier"))]
    for max_fn, max_fp in [(0.0, 0.0), (0.01, 0.01), (0.05, 0.05)]:
        choice = optimise(cands, object_probability(spec, tune), y_tune, max_fn, max_fp,
                          grid=12)
        assert choice.fn_rate <= max_fn and choice.fp_rate <= max_fp
        assert choice.predicted_speedup == pytest.approx(3.0 / choice.expected_ms)
        cascade = Cascade(choice.detector, spec, choice.thresholds, SHAPE)
        run = run_stream(cascade, QUERY, test)
        fn = ((run.answers == 0) & y_test).sum() / y_test.sum()
        fp = ((run.answers == 1) & ~y_test).sum() / (~y_test).sum()
        assert fn <= max_fn + 0.03 and fp <= max_fp + 0.03  # held out: a little slack
    assert choice.expected_ms < 3.0  # loose targets let the filters do real work
    with pytest.raises(ServeError, match=r"filter.max_fn must be in"):
        optimise(cands, object_probability(spec, tune), y_tune, 1.5, 0.0)


# ---- many streams ---------------------------------------------------------------------------

def test_shared_filters_answer_like_the_rule_and_feedback_narrows_under_load():
    n = 120
    streams = {f"s{i}": scene_stream(n, episodes(n, 10 + i, 0.6), 10 + i) for i in range(3)}
    labels = {s: QUERY.labels(x) for s, x in streams.items()}
    dets = {s: DifferenceDetector().fit(x, labels[s]) for s, x in streams.items()}
    spec = Scripted(np.random.default_rng(0).uniform(0.3, 0.7, 10_000))  # never sure
    wide = {s: Thresholds(0.0, 0.1, 0.9) for s in streams}
    run = StreamMux(dets, wide, spec, QUERY, capacity=10, queue_limit=30).run(streams)
    for s in streams:
        assert np.array_equal(run.answers[s], labels[s])  # the reference answered all
        assert set(run.stages[s]) == {MODEL}
    assert run.narrowed == 0 and run.frames == 3 * n
    spec.i = 0
    slow = StreamMux(dets, wide, spec, QUERY, capacity=1, queue_limit=2, step=0.5)
    loaded = slow.run(streams)
    assert loaded.narrowed > 0 and loaded.peak_queue > 2
    assert any(SPECIALISED in loaded.stages[s] for s in streams)  # narrowed bands decide
    assert all((loaded.answers[s] >= 0).all() for s in streams)
    with pytest.raises(ServeError, match="do not match the configured streams"):
        slow.run({"s0": streams["s0"]})
    with pytest.raises(ServeError, match=r"filter.reference_capacity"):
        StreamMux(dets, wide, spec, QUERY, capacity=0, queue_limit=1)


# ---- the filter as a served model's stage: learnt per stream from its first frames ----------

class Costly(Bright):
    """Bright at the cost of a real reference model (the optimiser filters only what saves)."""

    def forward(self, x):
        w = torch.ones(256, 256) / 256
        h = torch.ones(len(x), 256)
        for _ in range(60):
            h = h @ w
        return super().forward(x) + 0 * h[:, :1]

def test_served_filter_learns_each_stream_then_answers_like_the_reference():
    from edgeweave.serve.filter.config import FilterConfig
    from edgeweave.serve.filter.online import LearningFilter
    from edgeweave.serve.stage import Front, model_answer

    cfg = FilterConfig(positive=(1,), learn_frames=160, epochs=8, max_fn=0.0, max_fp=0.02,
                       detectors=("reference",))
    f = LearningFilter(Costly(), SHAPE, cfg)
    front = Front([f])

    def reference(x):
        return model_answer(Bright()(x)[0])

    present = episodes(300, seed=9)  # objects in each stretch: learning, tuning, service
    frames = scene_stream(300, present, seed=5)
    answers = [front.answer(frames[i:i + 1], "cam", reference) for i in range(300)]
    assert all(a.stage == MODEL for a in answers[:160])  # learning: every frame to the model
    assert "cam" in f.tuned and f.cascade("other") is None
    assert (f.state("cam"), f.state("other")) == ("active", "unfiltered")  # other: not seen
    later = answers[160:]
    truth = QUERY.labels(frames[160:])
    query_answers = np.array([a.label if a.stage != MODEL else int(a.label == 1)
                              for a in later])
    assert sum(a.stage != MODEL for a in later) > 40   # it filters ...
    # ... and answers about as the reference does (answering "no object" always: 0.76)
    assert (query_answers == truth).mean() >= 0.9
    with pytest.raises(ServeError, match=r"frame has shape \(3, 8, 8\); the model takes "
                                         r"\(3, 16, 16\)"):
        f.lookup(torch.rand(3, 8, 8), "cam")


@pytest.mark.parametrize("background", [False, True])
def test_a_stream_that_cannot_teach_a_filter_passes_through_and_says_why(background):
    from edgeweave.serve.filter.config import FilterConfig
    from edgeweave.serve.filter.online import LearningFilter
    from edgeweave.serve.stage import model_answer

    f = LearningFilter(Bright(), SHAPE, FilterConfig(positive=(1,), learn_frames=20,
                                                     detectors=("reference",), max_streams=1),
                       background=background)
    full = scene_stream(40, np.ones(40, dtype=bool), seed=6)  # an object in every frame
    for i in range(40):
        x = full[i:i + 1]
        assert f.lookup(x, "busy") is None
        f.observe(x, "busy", model_answer(Bright()(x)[0]))
        f.observe(x, "second", model_answer(Bright()(x)[0]))  # beyond max_streams: ignored
        if i < 19:
            assert (f.state("busy"), f.state("second")) == ("learning", "unfiltered")
    f.join(60)
    assert "every training frame holds an object" in f.failed["busy"]
    assert f.state("busy") == "unfiltered"
    assert f.tuned == {} and f._learning == {}
