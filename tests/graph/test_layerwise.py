"""Layer-wise partition (MoDNN): every layer split across K devices (convolutions by output rows
in proportion to device speed, fully connected layers by output neurons) gives the unsplit
model's output; a pruned FC layer split by spectral co-clustering sends fewer values across
devices than a plain or a 2-D grid split, and every split still computes the layer exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tile_cases import ZOO_INPUTS, assert_same, one_thread, zoo_graph, zoo_input  # noqa: F401

from edgeweave.errors import GraphError
from edgeweave.graph.layerwise import grid_shape, layer_units, layerwise_splits, run_layerwise
from edgeweave.graph.sparse_fc import magnitude_mask, run_sparse, split_sparse


@pytest.mark.parametrize("model", list(ZOO_INPUTS))
@pytest.mark.parametrize("scheme", ["biased", "grid"])
def test_layerwise_equals_the_unsplit_model(model: str, scheme: str) -> None:
    graph, x = zoo_graph(model), zoo_input(model)
    with torch.no_grad():
        want = graph.module(x)
        for speeds in ([9.0, 3.0], [9.0, 9.0, 3.0, 3.0]):
            assert_same(run_layerwise(graph, layerwise_splits(graph, speeds, scheme), x), want)


def test_units_and_biased_rows() -> None:
    graph = zoo_graph("vgg16")
    units = layer_units(graph)
    assert units[0] == ("features_0", "features_1")  # conv + relu run on the same rows
    assert ("features_4",) in units  # a max pool alone
    assert units[-1] == ("classifier_6",)
    splits = layerwise_splits(graph, [9.0, 3.0])
    first = splits[0]
    assert first.kind == "rows" and first.row_bounds == (0, 48, 64)  # 3:1 by speed
    assert first.col_bounds == (0, 64)
    # the rpi4-speed device also gets 3/4 of each fully connected layer's neurons
    fc = next(s for s in splits if s.unit[0] == "classifier_0")
    assert fc.kind == "neurons" and fc.row_bounds == (0, 3072, 4096)
    assert [p.in_bytes for p in fc.parts] == [25088 * 4] * 2


def test_delivery_bytes_of_row_and_grid_splits() -> None:
    """Gathers are the whole output either way; scatters carry one halo per cut line, so on
    four devices the 2x2 grid (two cut lines) scatters less than four row strips (three), and
    the speed bias moves the lines without adding any."""
    graph = zoo_graph("vgg16")
    convs = [u for u in layer_units(graph) if not u[0].startswith("classifier")]
    biased = layerwise_splits(graph, [9.0, 9.0, 3.0, 9.0], "biased", convs)
    even = layerwise_splits(graph, [1.0] * 4, "even", convs)
    grid = layerwise_splits(graph, [1.0] * 4, "grid", convs)
    assert grid_shape(4) == (2, 2) and grid_shape(3) == (3, 1)
    assert grid[0].col_bounds == (0, 32, 64) and biased[0].col_bounds == (0, 64)
    gathers = {sum(s.gather_bytes for s in split) for split in (biased, even, grid)}
    assert len(gathers) == 1
    assert sum(s.scatter_bytes for s in biased) == sum(s.scatter_bytes for s in even)
    assert sum(s.scatter_bytes for s in grid) < sum(s.scatter_bytes for s in biased)


def test_zero_speed_device_gets_nothing_and_bad_speeds_are_refused() -> None:
    graph = zoo_graph("digits-cnn")
    splits = layerwise_splits(graph, [1.0, 0.0])
    assert all(p.device == 0 for s in splits for p in s.parts)
    with pytest.raises(GraphError, match="device speeds"):
        layerwise_splits(graph, [0.0, 0.0])
    with pytest.raises(GraphError, match="scheme 'diagonal'"):
        layerwise_splits(graph, [1.0], "diagonal")


def _planted(seed: int, n_out: int, n_in: int, k: int) -> np.ndarray:
    """A pruned layer with hidden structure: dense blocks in a random order, sparse noise."""
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, k, n_out), rng.integers(0, k, n_in)
    p = np.where(rows[:, None] == cols[None, :], 0.3, 0.01)
    return rng.random((n_out, n_in)) < p


def test_coclustering_beats_plain_and_grid_on_a_structured_layer() -> None:
    mask = _planted(0, 120, 160, 4)
    co, plain, grid = (split_sparse(mask, 4, m) for m in ("cocluster", "plain", "grid"))
    assert co.nnz == plain.nnz == grid.nnz == int(mask.sum())
    assert co.off_block_nnz < plain.off_block_nnz / 3
    assert co.crossing_values < plain.crossing_values
    assert co.crossing_values < grid.crossing_values
    assert sum(co.rows_per_device()) == 120


@pytest.mark.parametrize("method", ["cocluster", "plain", "grid"])
@pytest.mark.parametrize("devices", [1, 3, 4])
def test_every_sparse_split_computes_the_layer(method: str, devices: int) -> None:
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(48, 64, generator=generator)
    weight *= torch.as_tensor(magnitude_mask(weight, 0.2))
    weight[5] = 0  # an output neuron with no inputs left
    bias = torch.randn(48, generator=generator)
    x = torch.randn(2, 64, generator=generator)
    split = split_sparse((weight != 0).numpy(), devices, method)
    assert_same(run_sparse(weight, bias, x, split), x @ weight.T + bias)


def test_sparse_split_errors() -> None:
    mask = np.ones((4, 6), dtype=bool)
    with pytest.raises(GraphError, match="5 devices for a 4x6 layer"):
        split_sparse(mask, 5)
    with pytest.raises(GraphError, match="method 'random'"):
        split_sparse(mask, 2, "random")
    with pytest.raises(GraphError, match="keep fraction"):
        magnitude_mask(torch.ones(2, 2), 0.0)
