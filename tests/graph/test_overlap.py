"""Overlapped resident rows (graph.overlap): each part of a run of resident layers cut into an
interior that waits for nothing and edges that wait for their neighbours' edges (the
reference's equality with the model: tests/graph/test_resident.py)."""

from __future__ import annotations

import itertools

from tile_cases import ZOO_INPUTS, assert_same, one_thread, zoo_graph, zoo_input  # noqa: F401

from edgeweave.graph.layerwise import layerwise_splits
from edgeweave.graph.overlap import overlap_runs, run_bounds


def test_vgg16_steps_cut_each_part_into_interior_and_edges() -> None:
    graph = zoo_graph("vgg16")
    splits = layerwise_splits(graph, [9.0, 9.0, 3.0, 3.0], "resident")
    runs = overlap_runs(graph, splits)
    features = [k for k, s in enumerate(splits) if s.kind == "rows"]
    assert [(r.first, r.last) for r in runs] == [(features[0], features[-1])]
    steps = runs[0].steps
    for k in features:
        mine = [s for s in steps if s.split == k]
        for p, part in enumerate(splits[k].parts):
            rows = sorted(s.rows for s in mine if s.part == p)
            # the part's rows, each once
            assert rows[0][0] == part.rows[0] and rows[-1][1] == part.rows[1]
            assert all(a[1] == b[0] for a, b in itertools.pairwise(rows))
    # the second convolution (3x3, its input kept): a middle device's part is interior,
    # then its top and bottom edge rows; the interior reads no halo and waits for nothing,
    # each edge reads one row of halo from the neighbour's step of the layer before
    second = [s for s in steps if s.split == features[1] and s.part == 1]
    assert len(second) == 3
    inner, top, bottom = second
    assert inner.halo == () and inner.after == () and inner.back == ()
    assert top.rows[1] == inner.rows[0] and bottom.rows[0] == inner.rows[1]
    assert [b - a for a, b in top.halo] == [1] and [b - a for a, b in bottom.halo] == [1]
    assert top.after and bottom.after and top.kept
    # where the next split reads the rows left on the devices, a step returns only the rows
    # its neighbours read; the last split's steps return all their rows
    kept = [s for s in steps if s.kept]
    assert sum(b - a for s in kept for a, b in s.back) < sum(
        s.rows[1] - s.rows[0] for s in kept) / 3
    assert all(s.back == (s.rows,) for s in steps if s.split == features[-1])


def test_no_run_without_resident_splits() -> None:
    graph = zoo_graph("digits-cnn") if "digits-cnn" in ZOO_INPUTS else zoo_graph("vgg16")
    assert run_bounds(layerwise_splits(graph, [1.0, 1.0], "biased")) == []
