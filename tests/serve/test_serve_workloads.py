"""Generated workloads are seeded and deterministic, do what their description says, and refuse
bad requests; the front-stage wiring asks stages in order and runs the model only on misses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeweave.adapt.datasets import digits
from edgeweave.errors import ServeError
from edgeweave.serve.stage import Front, FrontStage, Verdict, check_sample, check_stream
from edgeweave.serve.workloads import (
    BACKGROUND,
    Scene,
    Variation,
    recurring_images,
    video_stream,
)
from edgeweave.serve.workloads.variation import view, warp


@pytest.fixture(scope="module")
def pool():
    d = digits(seed=0)
    return d.x_test, d.y_test


def test_recurring_images_are_seeded_and_recur_across_devices(pool):
    a = recurring_images(*pool, devices=3, requests_per_device=150, seed=4)
    b = recurring_images(*pool, devices=3, requests_per_device=150, seed=4)
    c = recurring_images(*pool, devices=3, requests_per_device=150, seed=5)
    assert torch.equal(a.inputs, b.inputs) and a.devices == b.devices
    assert a.description == b.description and "seed 4" in a.description
    assert not torch.equal(a.inputs, c.inputs)
    assert len(a) == 450 and a.inputs.shape == (450, 1, 8, 8)
    assert a.devices[:3] == ["device-0", "device-1", "device-2"]  # devices take turns
    assert (a.classes == pool[1].numpy()[a.objects]).all()
    per_device = [set(a.objects[i::3].tolist()) for i in range(3)]
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert per_device[i] & per_device[j]  # the same objects on other devices
    views = a.inputs[a.objects == a.objects[0]]
    assert len(views) > 1 and not torch.equal(views[0], views[1])  # each view differs
    assert float(a.inputs.min()) >= 0 and float(a.inputs.max()) <= 1


def test_video_streams_hold_objects_exactly_the_asked_fraction(pool):
    s = video_stream(*pool, frames=400, occurrence=0.25, seed=2, camera=1)
    again = video_stream(*pool, frames=400, occurrence=0.25, seed=2, camera=1)
    assert torch.equal(s.frames, again.frames) and s.frames.dtype == torch.uint8
    assert s.present.sum() == 100 and s.frames.shape == (400, 3, 32, 32)
    assert "camera 1, seed 2" in s.description
    assert "china.jpg" in s.description or "flower.jpg" in s.description
    empty = video_stream(*pool, frames=50, occurrence=0.0, seed=2, camera=1)
    assert (empty.classes == BACKGROUND).all()
    # same camera, other footage: the same scene under the objects
    other = video_stream(*pool, frames=400, occurrence=0.25, seed=3, camera=1)
    calm = ~s.present & ~other.present
    diff = (s.as_float()[calm] - other.as_float()[calm]).abs().mean()
    assert diff < 0.1
    full = video_stream(*pool, frames=30, occurrence=1.0, seed=0, scene=Scene(size=16,
                                                                             object_px=8))
    assert full.present.all() and full.frames.shape[-1] == 16


def test_bad_workload_requests_are_named(pool):
    with pytest.raises(ServeError, match="occurrence must be in"):
        video_stream(*pool, frames=10, occurrence=1.5)
    with pytest.raises(ServeError, match="frames must be an integer >= 1"):
        video_stream(*pool, frames=0, occurrence=0.1)
    with pytest.raises(ServeError, match="object pool is empty"):
        video_stream(pool[0][:0], pool[1][:0], frames=10, occurrence=0.1)
    with pytest.raises(ServeError, match="successor probability"):
        recurring_images(*pool, successor_prob=-0.5)
    with pytest.raises(ServeError, match="burst"):
        recurring_images(*pool, burst=(5, 2))
    with pytest.raises(ServeError, match="class 0 has 2 images"):
        recurring_images(pool[0][:20], torch.arange(20) % 10, objects_per_class=3)


def test_views_vary_within_their_ranges():
    img = np.zeros((8, 8), dtype=np.float32)
    img[2:6, 3:5] = 1.0
    assert np.allclose(warp(img, 0.0, np.zeros(2)), img)
    shifted = warp(img, 0.0, np.array([1.0, 0.0]))
    assert np.allclose(shifted[3:7, 3:5], 1.0)
    rng = np.random.default_rng(0)
    plain = Variation(shift_px=0, rotate_deg=0, gain=0, offset=0, noise=0)
    assert np.allclose(view(img, plain, rng), img) and plain.describe() == "no variation"
    lit = view(img, Variation(shift_px=0, rotate_deg=0, gain=0.2, offset=0, noise=0), rng)
    assert 0.8 <= lit.max() <= 1.0 and (lit[img == 0] == 0).all()


# ---- the front-stage protocol ----------------------------------------------------------------

class Recorder:
    def __init__(self, name: str, answers: dict[int, int]):
        self.name, self.answers, self.seen = name, answers, []

    def lookup(self, x, source):
        label = self.answers.get(int(x.sum()))
        return None if label is None else Verdict(label, 1.0, self.name)

    def observe(self, x, source, answer):
        self.seen.append((int(x.sum()), source, answer.stage))


def test_front_asks_stages_in_order_and_the_model_only_on_misses():
    first, second = Recorder("cache", {1: 7}), Recorder("filter", {1: 8, 2: 9})
    assert isinstance(first, FrontStage)
    front, ran = Front([first, second]), []

    def model(x):
        ran.append(int(x.sum()))
        return Verdict(5, 0.9, "model")

    answers = [front.answer(torch.full((1,), float(v)), "cam", model) for v in (1, 2, 3)]
    assert [a.label for a in answers] == [7, 9, 5] and ran == [3]
    assert [s[2] for s in first.seen] == ["cache", "filter", "model"] == \
        [s[2] for s in second.seen]


def test_input_checks_name_the_shapes():
    assert check_sample(torch.zeros(3, 8, 8), (1, 3, 8, 8)).shape == (1, 3, 8, 8)
    assert check_sample(torch.zeros(1, 3, 8, 8), (1, 3, 8, 8)).shape == (1, 3, 8, 8)
    with pytest.raises(ServeError, match=r"shape \(3, 4, 4\); the model takes \(3, 8, 8\)"):
        check_sample(torch.zeros(3, 4, 4), (1, 3, 8, 8))
    with pytest.raises(ServeError, match="must be a tensor"):
        check_sample([1, 2], (1, 3, 8, 8))
    with pytest.raises(ServeError, match="'cam' is empty"):
        check_stream(torch.zeros(0, 3, 8, 8), (1, 3, 8, 8), "'cam'")
    with pytest.raises(ServeError, match=r"must be frames of shape \(N, 3, 8, 8\)"):
        check_stream(torch.zeros(3, 8, 8), (1, 3, 8, 8))
