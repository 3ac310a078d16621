"""`edgeweave distribute`: one inference split across a cluster of devices, run on local
processes (the options; the wiring is edgeweave.cli.distribute_cmds)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeweave.cli.common import console
from edgeweave.cli.options import integer, number, one_of, output_file
from edgeweave.cli.reporting import report_option

METHODS = ("auto", "fused-tiles", "layer-wise")
# plan.medium_codecs.MEDIUM_CODECS (not imported: slow)
CODECS = ("none", "fp16", "int8", "fp16+zstd", "int8+zstd", "fp16+lz4", "int8+lz4")

app = typer.Typer()


@app.command()
def distribute(
    model: str = typer.Argument(..., help="Model specifier (see `edgeweave models`)."),
    fleet: str = typer.Option("pi-cluster", "--fleet", "-f", help="Fleet YAML file or "
                              "built-in fleet name with a `clusters:` section."),
    cluster: str = typer.Option(None, "--cluster", help="Cluster name (default: the first)."),
    devices: str = typer.Option(None, "--devices", help="Comma-separated devices of the "
                                "cluster to use; the gateway must be one (default: all)."),
    method: str = typer.Option("auto", "--method", callback=one_of(*METHODS),
                               help="fused-tiles (DeepThings), layer-wise (MoDNN) or auto."),
    depth: int = typer.Option(None, "--depth", callback=integer(ge=1, le=1000),
                              help="Fused depth (convolution and pooling layers)."),
    grid: str = typer.Option(None, "--grid", help="Tile grid ROWSxCOLS, e.g. 3x3."),
    max_blocks: int = typer.Option(3, "--max-blocks", callback=integer(ge=1, le=8),
                                   help="Most consecutive fused blocks, each with its own "
                                   "grid, the tiles stitched between them (DeeperThings); "
                                   "1: one block (DeepThings)."),
    gateway_tiles: bool = typer.Option(True, "--gateway-tiles/--no-gateway-tiles",
                                       help="Fused tiles: --no-gateway-tiles gives the "
                                       "gateway no tile (DeepThings' gateway role: it holds "
                                       "the frames, gathers, stitches and runs the rest; the "
                                       "other devices compute the tiles)."),
    layer_split: str = typer.Option("overlap", "--layer-split",
                                    callback=one_of("overlap", "resident", "biased", "even",
                                                    "grid"),
                                    help="How layer-wise cuts a convolution: rows sized by "
                                    "device speed and kept on the devices between layers "
                                    "(only halo rows cross), each part's interior computed "
                                    "while its halo crosses (overlap) or every layer waiting "
                                    "for the last (resident), rows sized by device speed "
                                    "scattered and gathered at every layer (MoDNN's biased "
                                    "1-D), even rows, or a rows x columns grid (2-D, halo on "
                                    "both axes)."),
    layer_devices: int = typer.Option(None, "--layer-devices",
                                      callback=integer(ge=1, le=1000),
                                      help="How many devices a layer-wise plan uses (the "
                                      "gateway and the fastest others; default: the "
                                      "optimiser's choice)."),
    reuse: str = typer.Option("auto", "--reuse", callback=one_of("auto", "on", "off"),
                              help="Data reuse between neighbouring tiles."),
    scheduler: str = typer.Option("stealing", "--scheduler",
                                  callback=one_of("stealing", "sharing", "static"),
                                  help="Fused tiles: DeepThings' work stealing, its "
                                  "centralized work sharing (every tile through the "
                                  "gateway's queue), or the plan's static assignment."),
    sources: str = typer.Option(None, "--sources", help="Comma-separated devices producing "
                                "frames (default: the gateway)."),
    gather_at_source: bool = typer.Option(False, "--gather-at-source",
                                          help="Work stealing: gather each frame's tile "
                                          "results at its data source, which runs the rest "
                                          "of the model (default: at the gateway, as "
                                          "DeepThings does). Not with the rest on the edge "
                                          "or cloud."),
    calibrate: int = typer.Option(3, "--calibrate", callback=integer(ge=0, le=100),
                                  help="Frames of dummy input the workers compute first; "
                                  "the plan is then priced again from what they took (its "
                                  "prediction made before the measured frames). 0: the "
                                  "profile's prediction alone, which misses how this host "
                                  "runs the emulated devices (30-50% short on small "
                                  "models)."),
    in_flight: int = typer.Option(1, "--in-flight",
                                  help="Frames each data source keeps unanswered: 1 sends "
                                  "the next once the last is answered; more pipelines as "
                                  "DeepThings does (the next frame once every tile of the "
                                  "last is taken by a device), for frames/s. With "
                                  "--objective throughput the plan is priced as work "
                                  "stealing across every source's frames in flight (every "
                                  "device that may hold the tiles steals; a source's own "
                                  "tiles' crops do not cross the medium)."),
    frames: int = typer.Option(5, "--frames", callback=integer(ge=1, le=100_000),
                               help="Frames to run (after one warm-up frame)."),
    objective: str = typer.Option("latency", "--objective",
                                  callback=one_of("latency", "throughput")),
    mbps: float = typer.Option(None, "--mbps", callback=number(gt=0, le=1e6),
                               help="The shared medium's bandwidth (default: the fleet's)."),
    input_codec: str = typer.Option("none", "--input-codec", callback=one_of(*CODECS),
                                    help="Codec of the frame's crops on the medium."),
    result_codec: str = typer.Option("none", "--result-codec", callback=one_of(*CODECS),
                                     help="Codec of computed feature maps on the medium (+zstd or "
                                     "+lz4: compressed losslessly, priced by its ratio on "
                                     "the model's own maps)."),
    time_scale: str = typer.Option("auto", "--time-scale",
                                   help="Slow motion: play the emulated cluster this many "
                                   "times slower (a number >= 1; times are reported divided "
                                   "back), or auto (from this host's load average)."),
    repeats: int = typer.Option(3, "--repeats", callback=integer(ge=1, le=1000),
                                help="Profiling repeats per layer."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the plan and what was measured here."),
    report: Path = report_option(),
) -> None:
    """Split one inference across a cluster of devices (DeepThings fused tiles with work
    stealing or sharing, MoDNN layer-wise) and run it on local processes."""
    from edgeweave.cli import distribute_cmds

    distribute_cmds.distribute(
        console, model=model, fleet=fleet, cluster=cluster, devices=devices, method=method,
        depth=depth, grid=grid, max_blocks=max_blocks, gateway_tiles=gateway_tiles,
        layer_split=layer_split,
        layer_devices=layer_devices,
        time_scale=time_scale, reuse=reuse, scheduler=scheduler,
        sources=sources, gather_at_source=gather_at_source, calibrate=calibrate,
        in_flight=in_flight, frames=frames, objective=objective, mbps=mbps, input_codec=input_codec,
        result_codec=result_codec, repeats=repeats, json_out=json_out,
        report=report)
