"""`edgeweave infer`, `lab` and `netlab`: running a plan across real processes (the options; the
wiring is edgeweave.cli.runtime_cmds)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeweave.cli import reporting
from edgeweave.cli.common import (
    FALLBACK_HELP,
    FLEET_HELP,
    MBPS,
    MBPS_HELP,
    THROTTLE_HELP,
    Objective,
    console,
    throttle,
)
from edgeweave.cli.options import number, one_of, output_file
from edgeweave.cli.reporting import report_option
from edgeweave.errors import EdgeWeaveError

JSON_HELP = "Write per-request results here."
UPLOAD_HELP = ("whole: deploy the plan's stages, then offload; incremental: upload the model's "
               "layers in the order of latency saved per byte (IONN) while the device answers "
               "queries, switching plans as they land; auto: incremental when the whole stages "
               "would take over 10 s to upload.")


UPLOAD_CODEC_HELP = ("How an incremental upload's weights travel to the edge: none (raw "
                     "float32), fp16, int8 (per output channel), or auto: the planner's choice, "
                     "the one whose upload saves the most query time among those whose measured "
                     "top-1 agreement with the exact model is at least 98% (none when "
                     "compression saves under a second). Whole-stage deploys send raw weights.")
CODEC_HELP = ("Candidate activation codecs, comma-separated (none, fp16, int8, zstd, fp16+zstd, "
              "int8+zstd, ...) or auto; the plan picks one per cut. Default: none, and auto for "
              "an incremental upload (whose plans cross the link more often).")


def _upload() -> str:
    return typer.Option("auto", "--upload", callback=one_of("auto", "whole", "incremental"),
                        help=UPLOAD_HELP)


def _upload_codec() -> str:
    return typer.Option("auto", "--upload-codec",
                        callback=one_of("auto", "none", "fp16", "int8"), help=UPLOAD_CODEC_HELP)


def _codec() -> str | None:
    return typer.Option(None, "--codec", help=CODEC_HELP)


def _results(json_out: Path | None, report: Path | None) -> Path | None:
    """Where the run's results go: --json, else beside --report (the page is made of them)."""
    return json_out or (reporting.beside(report, "run") if report else None)

app = typer.Typer()


@app.command()
def infer(
    model: str = typer.Argument(..., help="Model specifier (see `edgeweave models`)."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    edge: list[str] = typer.Option([], "--edge", help="host:port of the edge node server "
                                   "(repeat for several: each request goes to the one expected "
                                   "to answer soonest, failing over when one dies)."),
    slo_ms: float = typer.Option(None, "--slo-ms", callback=number(gt=0, le=3.6e6),
                                 help="Each request's deadline: edges refuse what they cannot "
                                 "answer in time, and the device answers it itself."),
    plan_file: Path = typer.Option(None, "--plan", help="Use this plan JSON instead of planning."),
    input_file: Path = typer.Option(None, "--input", help="Image (png/jpg) or .npy input."),
    repeat: int = typer.Option(10, min=1, max=1_000_000, help="Requests to send."),
    objective: Objective = typer.Option(Objective.latency, help="What the plan minimises."),
    codec: str | None = _codec(),
    mbps: float = typer.Option(None, "--mbps", callback=MBPS, help=MBPS_HELP),
    token_file: Path = typer.Option(None, "--token-file", help="Bearer token file."),
    cert_dir: Path = typer.Option(None, "--cert-dir", help="mTLS: the fleet dir from `edgeweave "
                                  "certs`, or the device's own folder from it."),
    adapt: bool = typer.Option(False, help="Re-plan when measured bandwidth changes the optimum."),
    shaping: str = typer.Option("app", help="app: shape links in this process and the servers; "
                                "kernel: netlab's tc already shapes them (add RTT only)."),
    fallback_local: bool = typer.Option(False, "--fallback-local", help=FALLBACK_HELP),
    throttle_k: float = typer.Option(0.0, "--throttle", callback=throttle, help=THROTTLE_HELP),
    upload: str = _upload(),
    upload_codec: str = _upload_codec(),
    json_out: Path = typer.Option(None, "--json", callback=output_file, help=JSON_HELP),
    report: Path = report_option(),
) -> None:
    """Run a plan across real processes: device head here, the rest on --edge (and beyond)."""
    from edgeweave.cli import runtime_cmds

    if shaping not in ("app", "kernel"):
        raise EdgeWeaveError(f"--shaping: expected app or kernel, got {shaping!r}")
    out = _results(json_out, report)
    runtime_cmds.infer(console, model, fleet, edge, plan_file, input_file, repeat,
                       objective.value, codec, mbps, token_file, cert_dir, adapt, out,
                       shape_bandwidth=shaping == "app", fallback_local=fallback_local,
                       upload=upload, slo_ms=slo_ms, upload_codec=upload_codec,
                       throttle_k=throttle_k)
    if report and out:
        reporting.write(console, report, [out])


@app.command()
def lab(
    model: str = typer.Argument("resnet18", help="Model to run across the local fleet."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    repeat: int = typer.Option(10, min=1, max=1_000_000, help="Requests to send."),
    codec: str | None = _codec(),
    mbps: float = typer.Option(None, "--mbps", callback=MBPS, help=MBPS_HELP),
    fallback_local: bool = typer.Option(False, "--fallback-local", help=FALLBACK_HELP),
    upload: str = _upload(),
    upload_codec: str = _upload_codec(),
    json_out: Path = typer.Option(None, "--json", callback=output_file, help=JSON_HELP),
    report: Path = report_option(),
) -> None:
    """Start edge and cloud servers as local processes and run a model across them."""
    from edgeweave.cli import runtime_cmds

    out = _results(json_out, report)
    runtime_cmds.lab(console, model, fleet, repeat, codec, mbps, out,
                     fallback_local=fallback_local, upload=upload, upload_codec=upload_codec)
    if report and out:
        reporting.write(console, report, [out])


@app.command()
def netlab(
    model: str = typer.Argument("resnet18", help="Model to run across the namespaced fleet."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    repeat: int = typer.Option(10, min=1, max=1_000_000, help="Requests to send."),
    codec: str | None = _codec(),
    mbps: float = typer.Option(None, "--mbps", callback=MBPS, help=MBPS_HELP),
    upload: str = _upload(),
    upload_codec: str = _upload_codec(),
    json_out: Path = typer.Option(None, "--json", callback=output_file, help=JSON_HELP),
    report: Path = report_option(),
    prefix: str = typer.Option("ew", "--prefix", help="Names of the lab's network namespaces: "
                               "PREFIX-device, PREFIX-edge, ... (ew and up to 8 letters or "
                               "digits; another prefix lets two labs run at once)."),
    cleanup: bool = typer.Option(False, "--cleanup", help="Only delete the namespaces "
                                 "PREFIX-* a crashed lab left (and what runs in them), then "
                                 "exit."),
) -> None:
    """Device, edge and cloud in network namespaces joined by tc-shaped veth pairs (root)."""
    from edgeweave.cli import runtime_cmds

    if cleanup:
        runtime_cmds.netlab_cleanup(console, prefix)
        return
    out = _results(json_out, report)
    runtime_cmds.netlab(console, model, fleet, repeat, codec, mbps, out, prefix, upload,
                        upload_codec)
    if report and out:
        reporting.write(console, report, [out])
