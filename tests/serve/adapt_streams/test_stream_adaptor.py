"""Re-picking as the load changes, with hysteresis: small capacity wobbles change nothing, a
drop that breaks the current knobs or a real gain re-picks."""

from __future__ import annotations

import pytest

from edgeweave.serve.adapt_streams import (
    Space,
    Stream,
    StreamAdaptor,
    StreamConfig,
    allocate,
    measure_configs,
)
from edgeweave.serve.stems import TenancyError

CONFIGS = (
    StreamConfig(8, "fp32", 0.95, 0.040),
    StreamConfig(8, "pruned", 0.94, 0.030),
    StreamConfig(6, "fp32", 0.88, 0.020),
)
SPACE = Space(CONFIGS, (30.0, 15.0), 30.0, "frames")
STREAMS = [Stream("a"), Stream("b")]
# two streams at 8px-pruned, 30 fps, cost 1.8; at 8px-fp32 2.4
NEAR = 1.8


def test_without_margin_a_wobbling_capacity_flaps_and_with_it_does_not():
    wobble = [NEAR, NEAR + 0.3, NEAR, NEAR + 0.3, NEAR, NEAR + 0.3]
    eager = StreamAdaptor(SPACE, margin=0.0, headroom=0.0)
    for c in wobble:
        eager.update(STREAMS, c)
    calm = StreamAdaptor(SPACE, margin=0.05, headroom=0.0)
    decisions = [calm.update(STREAMS, c) for c in wobble]
    assert eager.switches >= 4  # each step up re-picks, each step down must undo it
    assert calm.switches == 0
    assert not any(d.switched for d in decisions)
    for c, d in zip(wobble, decisions, strict=True):
        assert d.allocation.cost <= c * (1 + 1e-9)
        # kept knobs are never worse than the optimum by more than the margin
        assert d.allocation.value * 1.05 >= allocate(STREAMS, SPACE, c).value - 1e-12


def test_a_capacity_drop_or_new_streams_force_a_re_pick():
    adaptor = StreamAdaptor(SPACE, margin=0.05, headroom=0.0)
    first = adaptor.update(STREAMS, 2.4)
    assert first.reason == "first allocation"
    assert {k.config.variant for k in first.allocation.knobs.values()} == {"fp32"}
    dropped = adaptor.update(STREAMS, 1.0)
    assert dropped.switched and dropped.changed_streams == 2
    assert dropped.reason == "re-picked: the current knobs no longer fit"
    assert dropped.allocation.cost <= 1.0
    recovered = adaptor.update(STREAMS, 2.4)
    assert recovered.switched and recovered.reason.endswith("more than the margin")
    grown = adaptor.update([*STREAMS, Stream("c"), Stream("d")], 2.4)
    assert set(grown.allocation.knobs) == {"a", "b", "c", "d"}
    assert grown.allocation.cost <= 2.4 * (1 + 1e-9)
    assert grown.switched  # the old two must give up capacity for the new two
    shrunk = adaptor.update([Stream("a")], 2.4)
    assert set(shrunk.allocation.knobs) == {"a"}
    assert shrunk.switched  # alone again, "a" takes the best knob back
    assert shrunk.allocation.knobs["a"].config.name == "8px-fp32"
    assert adaptor.switches == 4
    assert not adaptor.update([Stream("a")], 2.3).switched  # and keeps it


def test_headroom_absorbs_a_dip_below_the_capacity_the_knobs_were_chosen_at():
    """Chosen at 2.4 with 10% headroom the knobs fit 2.16, so a dip to 2.2 keeps them; without
    headroom the same dip breaks the knobs chosen at 2.4 and forces a re-pick."""
    for headroom, flips in ((0.1, 0), (0.0, 1)):
        adaptor = StreamAdaptor(SPACE, margin=0.05, headroom=headroom)
        first = adaptor.update(STREAMS, 2.4)
        assert first.allocation.cost <= 2.4 * (1 - headroom) + 1e-9
        dip = adaptor.update(STREAMS, 2.2)
        assert dip.allocation.cost <= 2.2 + 1e-9
        assert adaptor.switches == flips
    tight = StreamAdaptor(SPACE, headroom=0.5)  # no room for headroom at all: uses it all
    assert tight.update(STREAMS, 0.6).allocation.cost <= 0.6 + 1e-9


def test_bad_margin_or_capacity():
    with pytest.raises(TenancyError, match="margin"):
        StreamAdaptor(SPACE, margin=1.5)
    with pytest.raises(TenancyError, match="headroom: expected a fraction"):
        StreamAdaptor(SPACE, headroom=-0.1)
    with pytest.raises(TenancyError, match="capacity"):
        StreamAdaptor(SPACE).update(STREAMS, 0)


@pytest.mark.slow
def test_measured_configs_are_real_and_allocatable():
    """A tiny real measurement: two resolutions x three variants of digits-cnn."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        configs = measure_configs(resolutions=(8, 4), variants=("fp32", "int8", "pruned"),
                                  epochs=1, batch=16)
    finally:
        torch.set_num_threads(before)
    assert [c.name for c in configs] == ["8px-fp32", "8px-int8", "8px-pruned", "4px-fp32",
                                         "4px-int8", "4px-pruned"]
    assert all(0 <= c.accuracy <= 1 and c.ms_per_frame > 0 for c in configs)
    space = Space(tuple(configs), (30.0, 15.0), 30.0)
    got = allocate(STREAMS, space, 2 * 15 * min(c.ms_per_frame for c in configs) * 1.5)
    assert set(got.knobs) == {"a", "b"}
    with pytest.raises(TenancyError, match="variants: expected some of"):
        measure_configs(variants=("fp16",))
    with pytest.raises(TenancyError, match="resolution: expected an even side"):
        measure_configs(resolutions=(5,), epochs=1)
