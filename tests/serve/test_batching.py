"""Stacking requests into a batch and handing each its own rows back; which models can batch."""

import time

import pytest
import torch
from torch import nn

from edgeweave.serve.batching import batch_dims_ok, calibrate, signature, stack, unstack


def test_stack_and_unstack_give_each_request_its_own_rows():
    a = (torch.full((1, 3), 1.0), torch.full((1, 2), 10.0))
    b = (torch.full((1, 3), 2.0), torch.full((1, 2), 20.0))
    batch = stack([a, b])
    assert [t.shape for t in batch] == [torch.Size([2, 3]), torch.Size([2, 2])]
    back = unstack(list(batch), [1, 1])
    assert all(torch.equal(x, y) for x, y in zip(back[0], a, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(back[1], b, strict=True))
    assert signature(a) == signature(b)


def test_unstack_refuses_outputs_without_a_row_per_request():
    with pytest.raises(ValueError, match="needs 3 rows"):
        unstack([torch.zeros(2, 4)], [1, 1, 1])


class _Flat(nn.Module):
    def __init__(self, hard_coded_batch: bool):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)
        self.hard = hard_coded_batch

    def forward(self, x):
        y = self.conv(x)
        return (self.fc(y.view(1, -1) if self.hard else y.flatten(1)),)


def test_a_batched_model_answers_each_request_as_it_would_alone():
    model = _Flat(False).eval()
    cal = calibrate(model, (torch.zeros(1, 1, 4, 4),), max_batch=4, repeats=1)
    assert cal.batchable and set(cal.seconds) == {1, 4}
    rows = [(torch.randn(1, 1, 4, 4),) for _ in range(3)]
    with torch.no_grad():
        batched = unstack(list(model(*stack(rows))), [1, 1, 1])
        for row, out in zip(rows, batched, strict=True):
            assert torch.allclose(model(*row)[0], out[0], atol=1e-6)


def test_a_model_with_a_hard_coded_batch_does_not_batch():
    cal = calibrate(_Flat(True).eval(), (torch.zeros(1, 1, 4, 4),), max_batch=4, repeats=1)
    assert not cal.batchable and "batched" in cal.why
    assert batch_dims_ok([(1, 3, 8, 8), (1, 10)]) and not batch_dims_ok([(3, 8), (1, 10)])


def test_deploy_times_every_batch_size_and_a_stall_does_not_set_one():
    """`every_size`: each size the node may form is measured (a batch of one can take a faster
    path than a line through 1 and the largest says); each is the median of its calls, so one
    call stalled by the shared host does not set a size's time."""
    model = _Flat(False).eval()
    calls = []

    def stalling(*args):
        calls.append(args[0].shape[0])
        if args[0].shape[0] == 3 and calls.count(3) == 3:  # the second timed call at 3
            time.sleep(0.2)
        return model(*args)

    cal = calibrate(stalling, (torch.zeros(1, 1, 4, 4),), max_batch=4, every_size=True)
    assert cal.batchable and set(cal.seconds) == {1, 2, 3, 4}
    assert cal.seconds[3] < 0.05


def test_a_model_too_slow_to_time_every_size_gets_one_two_and_the_largest():
    """Timing every size of a large model would make each deploy many times longer: past the
    budget, the sizes between 2 and the largest follow the line through them."""
    model = _Flat(False).eval()
    example = (torch.zeros(1, 1, 4, 4),)
    cal = calibrate(model, example, max_batch=6, repeats=1, every_size=True, budget_s=0.0)
    assert cal.batchable and set(cal.seconds) == {1, 2, 6}
    cal = calibrate(model, example, max_batch=6, repeats=1, every_size=True, budget_s=60.0)
    assert set(cal.seconds) == {1, 2, 3, 4, 5, 6}
    assert set(calibrate(model, example, max_batch=6, repeats=1).seconds) == {1, 6}
