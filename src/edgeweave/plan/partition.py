"""A plan's multi-device partition, as it is written in the plan JSON.

Everything a gateway and its device workers need to run the plan, and nothing runnable: the
model specifier and input shape (a worker rebuilds the graph from its own trusted copy of the
model), the fused depth, the grid and each tile's regions per layer (a worker may recompute them
with :func:`edgeweave.graph.tiles.tile_grid` / :func:`edgeweave.graph.reuse.reuse_tiles` and
must refuse a plan whose regions differ), which device runs what, and where the rest of the
model runs. Predicted figures are the optimiser's; measured ones belong to the runtime.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeweave.graph.regions import Region
from edgeweave.graph.tiles import Piece, Tile
from edgeweave.topology import Medium

METHODS = ("fused-tiles", "layer-wise", "single")


class TileAssignment(BaseModel):
    """One tile of a fused block and the device it is planned on (the static scheduler runs it
    there; work stealing and sharing prefer it but may move it).
    ``holds``/``computes``/``reused``/``shares`` as in graph.tiles."""

    model_config = ConfigDict(frozen=True)

    index: int
    row: int
    col: int
    level: int
    device: str
    output: Region
    input: Region
    holds: dict[str, Region]
    computes: dict[str, Region]
    reused: dict[str, list[Piece]] = Field(default_factory=dict)
    shares: dict[str, list[Region]] = Field(default_factory=dict)
    compute_ms: float
    in_bytes: int
    out_bytes: int

    @classmethod
    def of(cls, tile: Tile, device: str, compute_ms: float, in_bytes: int, out_bytes: int
           ) -> TileAssignment:
        return cls(index=tile.index, row=tile.row, col=tile.col, level=tile.level, device=device,
                   output=tile.output, input=tile.input, holds=tile.holds,
                   computes=tile.computes,
                   reused={k: list(v) for k, v in tile.reused.items()},
                   shares={k: list(v) for k, v in tile.shares.items()},
                   compute_ms=compute_ms, in_bytes=in_bytes, out_bytes=out_bytes)

    def to_tile(self) -> Tile:
        """The graph-level tile a worker's :class:`~edgeweave.graph.tile_exec.TileModule`
        runs."""
        return Tile(self.index, self.row, self.col, self.output, self.input, dict(self.holds),
                    dict(self.computes), self.level,
                    {k: tuple(v) for k, v in self.reused.items()},
                    {k: tuple(v) for k, v in self.shares.items()})


class FusedStage(BaseModel):
    """One of consecutive fused blocks (DeeperThings, Stahl et al. 2021): the fused depth from
    the model's input it ends at, its input and output values, its grid and its tiles (indices
    from 0 in each block). Between blocks the tiles' outputs are gathered and stitched and the
    next block's tiles cropped from the stitched map."""

    model_config = ConfigDict(frozen=True)

    depth: int
    block_input: str
    block_output: str
    grid: tuple[int, int]
    tiles: list[TileAssignment]
    reuse: bool = False  # data reuse between this block's tiles


def global_tiles(stages: list[FusedStage]) -> list[TileAssignment]:
    """Every block's tiles in one list, numbered on across blocks (block b's tile k is
    ``k`` plus the tiles of the blocks before it, reused sources too): the task numbers the
    runtime reports (FrameResult.timeline) and replays."""
    out: list[TileAssignment] = []
    for stage in stages:
        base = len(out)
        out += [t if base == 0 else t.model_copy(update={
            "index": base + t.index,
            "reused": {k: [Piece(base + p.source, p.region) for p in v]
                       for k, v in t.reused.items()}}) for t in stage.tiles]
    return out


class StepAssignment(BaseModel):
    """One step of a split layer in a run of resident layers overlapped (layer_split
    ``overlap``, graph.overlap): part ``part``'s output rows ``rows`` on ``device``, its
    planned compute, its wire bytes (codecs applied: its halo, or the first split's whole
    crop; the rows it returns) and the steps whose returned rows it waits for, as
    ``[split index in Partition.layers, step index in that split's steps]``. A device runs
    its steps in the order of the layers, then of each layer's steps."""

    model_config = ConfigDict(frozen=True)

    part: int
    device: str
    rows: tuple[int, int]
    compute_ms: float
    in_bytes: int
    out_bytes: int
    after: list[tuple[int, int]] = Field(default_factory=list)


class LayerAssignment(BaseModel):
    """One layer split layer-wise: its unit, grid lines and the device of each part."""

    model_config = ConfigDict(frozen=True)

    unit: list[str]
    kind: Literal["rows", "neurons"]
    row_bounds: list[int]
    col_bounds: list[int]
    devices: list[str]
    compute_ms: list[float]
    in_bytes: list[int]
    out_bytes: list[int]
    makespan_ms: float
    # its input stays on the devices that computed it: each receives only its halo rows
    # (graph.resident; the layer_splits "resident" and "overlap")
    resident: bool = False
    # layer_split "overlap": the layer's steps when it is in a run of resident layers priced
    # as one task graph (empty otherwise); then compute_ms, in_bytes and out_bytes are the
    # sums of each part's steps', and makespan_ms how much later this layer's last rows were
    # back than the layer before's (the run's makespans add up to its task graph's)
    steps: list[StepAssignment] = Field(default_factory=list)


class DeviceLoad(BaseModel):
    """What one device does for one frame under the plan."""

    model_config = ConfigDict(frozen=True)

    name: str
    hardware: str
    tasks: int
    compute_ms: float
    in_bytes: int
    out_bytes: int
    memory_bytes: int
    memory_limit_bytes: float


class Partition(BaseModel):
    """How a plan splits one inference across a cluster's devices (DESIGN.md, "Many devices,
    one fleet"). ``rest_mode`` names where the layers after the partitioned prefix run, in the
    single-device planner's modes (``device-only``: on the gateway)."""

    model_config = ConfigDict(frozen=True)

    method: Literal["fused-tiles", "layer-wise", "single"]
    model: str
    input_shape: list[int]
    cluster: str
    gateway: str
    devices: list[str]
    medium: Medium
    # codecs on the medium (plan.medium_codecs.MEDIUM_CODECS): the frame's crops, and computed
    # feature maps (tile outputs, shared halo, layer-wise scatter and gather)
    input_codec: str = "none"
    result_codec: str = "none"
    scheduler: str = "static"  # the schedule the prediction prices (plan.medium)
    fused_depth: int | None = None
    block_input: str | None = None
    block_output: str | None = None
    prefix_nodes: list[str] = Field(default_factory=list)
    grid: tuple[int, int] | None = None
    reuse: bool = False
    tiles: list[TileAssignment] = Field(default_factory=list)
    # consecutive fused blocks (DeeperThings), when more than one: then fused_depth is the
    # last block's end, block_input the first's input, block_output the last's output, and
    # grid and tiles are empty (each block has its own); one block: the fields above alone
    blocks: list[FusedStage] = Field(default_factory=list)
    layers: list[LayerAssignment] = Field(default_factory=list)
    # how layer-wise cut its convolutions: MoDNN's speed-biased rows, even rows, a 2-D grid,
    # or speed-biased rows kept on the devices between split layers (halo rows only move),
    # with a barrier at every split layer (resident) or each part's interior computed while
    # its halo crosses (overlap: LayerAssignment.steps)
    layer_split: Literal["biased", "even", "grid", "resident", "overlap"] | None = None
    rest_mode: str
    # False: the gateway holds no tile (DeepThings' gateway role: it directs the stealing,
    # gathers and stitches the tiles and runs the rest; only the other devices compute tiles,
    # and the runtime starts no worker for it)
    gateway_tiles: bool = True
    # frames in flight the prediction prices (plan.stealing_price; 1: one frame's schedule),
    # and with more than one the devices whose workers steal tiles at that price: every
    # device that may hold every tile, whether or not ``tiles`` names it
    in_flight: int = 1
    stealers: list[str] = Field(default_factory=list)
    # the data sources the frames in flight come from in turn, as priced (empty: the gateway)
    sources: list[str] = Field(default_factory=list)
    load: list[DeviceLoad] = Field(default_factory=list)
    predicted: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, Any] = Field(default_factory=dict)

    def stages(self) -> list[FusedStage]:
        """The fused blocks in order: ``blocks``, or the one block a plan of a single block
        (and every plan written before blocks existed) describes in its own fields."""
        if self.blocks or self.method != "fused-tiles":
            return list(self.blocks)
        assert self.fused_depth is not None and self.grid is not None
        return [FusedStage(depth=self.fused_depth, block_input=self.block_input or "",
                           block_output=self.block_output or "", grid=self.grid,
                           tiles=self.tiles, reuse=self.reuse)]

    def all_tiles(self) -> list[TileAssignment]:
        """Every block's tiles, numbered on across blocks (:func:`global_tiles`)."""
        return global_tiles(self.stages())

    def describe_blocks(self) -> str:
        """The fused blocks for a person: ``fused depth 5, grid 3x3 | fused depth 13, grid
        2x2, reuse`` (each block's end depth from the model's input; reuse: data reuse in a
        block of several)."""
        several = len(self.stages()) > 1
        return " | ".join(f"fused depth {s.depth}, grid {s.grid[0]}x{s.grid[1]}"
                          + (", reuse" if several and s.reuse else "") for s in self.stages())
