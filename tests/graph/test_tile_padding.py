"""How a tile runs its layers: natively padded where the layer's own padding gives exactly the
tile's rows and columns (no padded copy), and in place only on values nothing else reads."""

from __future__ import annotations

import torch
from tile_cases import assert_same, one_thread, zoo_graph, zoo_input  # noqa: F401
from torch import nn

from edgeweave.graph import capture
from edgeweave.graph import tile_exec as te
from edgeweave.graph.blocks import cut_depths, fused_block
from edgeweave.graph.tile_exec import TileModule, run_block, run_tiles
from edgeweave.graph.tiles import tile_grid


def _count_padded_copies(monkeypatch) -> list[int]:
    calls: list[int] = []
    padded = te._padded

    def counted(*args):
        calls.append(1)
        return padded(*args)

    monkeypatch.setattr(te, "_padded", counted)
    return calls


def test_a_whole_map_tile_pads_every_layer_as_the_model_does(monkeypatch) -> None:
    # mobilenet_v2's stem and depthwise layers, stride-2 ones included: a 1x1 grid's tile reads
    # past the border exactly where the layers pad, so it never builds a padded copy
    graph, x = zoo_graph("mobilenet_v2"), zoo_input("mobilenet_v2")
    block = fused_block(graph, max(cut_depths(graph)))
    copies = _count_padded_copies(monkeypatch)
    with torch.no_grad():
        got = TileModule(graph, block, tile_grid(block, (1, 1))[0])(x)[0]
        assert_same(got, run_block(graph, block, x))
    assert copies == []


def test_border_tiles_still_pad_a_copy_where_the_layer_padding_would_not_fit(monkeypatch
                                                                              ) -> None:
    graph, x = zoo_graph("vgg16"), zoo_input("vgg16")
    block = fused_block(graph, 4)
    copies = _count_padded_copies(monkeypatch)
    with torch.no_grad():
        assert_same(run_tiles(graph, block, tile_grid(block, (2, 2)), x),
                    run_block(graph, block, x))
    assert copies  # a corner tile needs padding above but real rows below


class _InPlace(nn.Module):
    """In-place activations on the model's input and on values nothing else reads (the fused
    prefix refuses one that overwrites a value other layers read)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.ReLU(inplace=True)  # reads the caller's crop
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.last = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.conv2(self.act(self.conv(self.first(x)))))


def test_in_place_layers_overwrite_only_values_nothing_else_reads() -> None:
    torch.manual_seed(0)
    model = _InPlace().eval()
    graph = capture(model, (1, 3, 12, 12), name="in-place")
    block = fused_block(graph, max(cut_depths(graph)))
    assert block.output.name == "last"  # the whole model
    x = torch.randn(1, 3, 12, 12)
    crop = x.clone()
    with torch.no_grad():
        want = model(x.clone())
        for grid in ((1, 1), (2, 2)):
            assert_same(run_tiles(graph, block, tile_grid(block, grid), crop), want)
            got = TileModule(graph, block, tile_grid(block, (1, 1))[0])(crop)[0]
            assert_same(got, want)
    assert torch.equal(crop, x)  # the caller's crop is left as it was


def test_an_in_place_layer_after_an_identity_leaves_the_crop_alone() -> None:
    # an identity (or an eval-mode dropout) hands the crop itself to the activation
    for first in (nn.Identity(), nn.Dropout(0.5)):
        model = nn.Sequential(first, nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3, padding=1),
                              nn.ReLU(inplace=True)).eval()
        graph = capture(model, (1, 3, 8, 8), name="alias")
        block = fused_block(graph, max(cut_depths(graph)))
        x = torch.randn(1, 3, 8, 8)
        crop = x.clone()
        with torch.no_grad():
            got = TileModule(graph, block, tile_grid(block, (1, 1))[0])(crop)[0]
            assert_same(got, model(x.clone()))
        assert torch.equal(crop, x)
