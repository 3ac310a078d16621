"""The fused blocks of a fused-tile plan as its gateway runs them: one block (DeepThings) or
several in a row (DeeperThings, Stahl et al. 2021).

Every tile of every block is one task number for the schedulers and the frame's bookkeeping
(block b's tile k is ``k`` plus the tiles of the blocks before it: plan.partition.global_tiles,
the numbers a run's timeline reports). A frame's first block is tiled from the frame; when all
of a block's tiles are back they are stitched at the gateway (the sync point) and the next
block's tiles are cropped from the stitched map, so their crops come from where the frame is
gathered and travel in the result codec. Workers know tiles by block and index: a Task names
the block (cluster.proto) and the tile within it.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.graph.blocks import FusedBlock
from edgeweave.graph.tile_exec import ShareStore, stitch
from edgeweave.graph.tiles import Tile
from edgeweave.plan.partition import Partition
from edgeweave.runtime.cluster.blueprint import reuse_sources, stages_digest
from edgeweave.runtime.cluster.executors import TileExecutor, TileStages


class GatewayStages:
    """The plan's blocks, their tiles by task number, and what each task costs and moves."""

    def __init__(self, graph: Graph, part: Partition, input_ratio: float,
                 result_ratio: float, dilations: Mapping[str, float]):
        stages = part.stages()
        self.executor = TileStages(graph, [s.depth for s in stages], [s.grid for s in stages],
                                   [s.reuse for s in stages])
        self.blocks: list[TileExecutor] = self.executor.stages
        self.digest = stages_digest([x.tiles for x in self.blocks])
        if stages_digest([[t.to_tile() for t in s.tiles] for s in stages]) != self.digest:
            raise EdgeWeaveError(f"the plan's tiles differ from the regions this gateway "
                                 f"computes for model {part.model!r} at "
                                 f"{part.describe_blocks()}")
        self.offsets: list[int] = []
        self.where: dict[int, tuple[int, int]] = {}
        for b, x in enumerate(self.blocks):
            self.offsets.append(len(self.where))
            self.where.update((self.offsets[b] + t.index, (b, t.index)) for t in x.tiles)
        planned = part.all_tiles()
        self.assignment = {t.index: t.device for t in planned}
        # a task's cost in this host's ms (the plan's ms on its device over that device's
        # dilation), so one device's measured pace tells how fast it runs any tile
        self.cost = {t.index: t.compute_ms / dilations.get(t.device, 1.0) for t in planned}
        # bytes a task moves: (crop, reused pieces, result), float32 maps as the plan prices
        self.moves: dict[int, tuple[int, int, int]] = {}
        for t in planned:
            b = self.where[t.index][0]
            channels = self.blocks[b].block.input_shape[0]
            crop = round(t.input.area * channels * 4 * (input_ratio if b == 0
                                                          else result_ratio))
            self.moves[t.index] = (crop, max(0, t.in_bytes - crop), t.out_bytes)
        self.sources_of: dict[int, tuple[int, ...]] = {}  # data reuse: by task number
        for b, x in enumerate(self.blocks):
            base = self.offsets[b]
            self.sources_of.update((base + k, tuple(base + s for s in sources))
                                   for k, sources in reuse_sources(x.tiles).items())

    @property
    def tasks(self) -> int:
        """Tasks of one frame, every block's tiles."""
        return len(self.where)

    @property
    def last(self) -> FusedBlock:
        """The last block: its stitched output is what the rest of the model reads."""
        return self.blocks[-1].block

    def order(self, b: int) -> list[int]:
        """Block ``b``'s task numbers in the order devices run them (level 0 first)."""
        tiles = sorted(self.blocks[b].tiles, key=lambda t: (t.level, t.index))
        return [self.offsets[b] + t.index for t in tiles]

    def block_of(self, task: int) -> int:
        return self.where[task][0]

    def level(self, task: int) -> int:
        b, k = self.where[task]
        return self.blocks[b].tiles[k].level

    def tile(self, task: int, done: Sequence[int]) -> Tile:
        """The task's tile as dispatched now, reusing the halo of the level-0 tasks ``done``."""
        b, k = self.where[task]
        return self.blocks[b].tile(k, [d - self.offsets[b] for d in done])

    def inputs(self, task: int, done: Sequence[int], source: torch.Tensor, store: ShareStore
               ) -> tuple[Tile, dict[str, torch.Tensor]]:
        """The task's tile as dispatched now and its input values by wire name: the crop of
        ``source`` (its block's input: the frame, or the block before's stitched output) and
        the halo pieces it reuses from ``store``."""
        tile = self.tile(task, done)
        r = tile.input
        values = {"crop": source[:, :, r.r0:r.r1, r.c0:r.c1]}
        for layer, pieces in store.pieces(tile).items():
            values.update((f"{layer}/{k}", t) for k, t in enumerate(pieces))
        return tile, values

    def stores(self) -> list[ShareStore]:
        """A frame's share stores, one per block (data reuse)."""
        return [ShareStore(x.tiles) for x in self.blocks]

    def complete(self, b: int, outputs: Container[int]) -> bool:
        """Whether every task of block ``b`` is among ``outputs`` (done)."""
        base = self.offsets[b]
        return all(base + t.index in outputs for t in self.blocks[b].tiles)

    def can_start(self, task: int, level0_done: Container[int]) -> bool:
        """Whether the level-0 tasks whose halo ``task`` reuses are all done (data reuse;
        DeepThings queues level 1 behind level 0)."""
        return all(k in level0_done for k in self.sources_of.get(task, ()))

    def taken(self, handed: Container[int], level0_done: Container[int]) -> bool:
        """Whether every task of the first block is handed out or waits for the level-0
        tasks whose halo it reuses: its source's queue has nothing a device could take."""
        return all(k in handed or not self.can_start(k, level0_done) for k in self.order(0))

    def stitched(self, b: int, outputs: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Block ``b``'s output from its tiles' results (task number -> output)."""
        x, base = self.blocks[b], self.offsets[b]
        return stitch(x.block, x.tiles, {t.index: outputs[base + t.index] for t in x.tiles})
