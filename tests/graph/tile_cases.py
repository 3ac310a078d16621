"""Shared by the tile, reuse and layer-wise tests: zoo graphs captured once at small inputs, and
one torch thread (these tests run many small convolutions; two threads contending on a shared
machine make each one 100x slower)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import pytest
import torch

from edgeweave.graph import Graph, capture_spec

#: Zoo models whose prefix qualifies, with the input each test captures them at (small, so a
#: tile sweep runs in seconds; digits-cnn's own 8x8).
ZOO_INPUTS: dict[str, tuple[int, ...] | None] = {
    "digits-cnn": None,
    "vgg16": (1, 3, 64, 64),
    "resnet18": (1, 3, 64, 64),
    "mobilenet_v2": (1, 3, 64, 64),
}


@cache
def zoo_graph(model: str) -> Graph:
    return capture_spec(model, input_shape=ZOO_INPUTS[model])


@cache
def zoo_input(model: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(zoo_graph(model).input_shape, generator=generator)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (got - want).abs().max()
