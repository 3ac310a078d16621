"""The `edgeweave` command: one Typer app whose commands are grouped by task. No logic of its
own: each command module below plugs in with one line, and the command modules wire the parts
of EdgeWeave together.

A command module is either a group (a `typer.Typer(name="fl")`: `edgeweave fl run|server|...`)
or a bag of top-level commands (an unnamed `typer.Typer()`); :func:`plug` puts it under a
heading of `edgeweave --help`. A single command function plugs in with
``app.command("name", rich_help_panel=PANEL)(module.function)``. Command modules import only
typer, rich and the options at import time (everything else inside the command), so
`edgeweave --help` and shell completion never load torch.
"""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from edgeweave.cli import report_cmds
from edgeweave.cli.commands import adapt, distribute, fl, front, plan, run, serve, sim, train
from edgeweave.errors import EdgeWeaveError
from edgeweave.heap import keep_heap

HELP = """EdgeWeave runs deep learning across IoT devices, edge servers and the cloud.

Describe a fleet, profile a PyTorch model on it, plan where each layer runs, run that plan
across real processes over shaped links, adapt the model (early exits, compression), train
federated models, and see every result on one HTML page.

Start with `./run demo` (it does all of that in about two minutes), then for example:

* `edgeweave plan resnet18 --json out/plan.json`: where each layer runs on the default fleet
* `edgeweave lab resnet18 --json out/lab.json`: run it across local edge and cloud processes
* `edgeweave fl run --config examples/fl/digits-fedavg.yaml`: federated training
* `edgeweave report out -o out/report.html`: one page of everything they wrote

`edgeweave COMMAND --help` says more about each command."""

# The headings of `edgeweave --help`, in the order a newcomer meets them.
PLAN = "Plan: models, fleets, where each layer runs"
RUN = "Run: a plan across real processes"
ADAPT = "Adapt: the model to the fleet"
TRAIN = "Train: federated, decentralized, split"
SIMULATE = "Simulate: fleets of thousands of devices"
RESULTS = "Results"
PANELS = (PLAN, RUN, ADAPT, TRAIN, SIMULATE, RESULTS)


class _ByPanel(TyperGroup):
    """Lists commands heading by heading (typer lists single commands before groups)."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)

        def rank(name: str) -> int:
            panel = getattr(self.commands[name], "rich_help_panel", None)
            return PANELS.index(panel) if panel in PANELS else len(PANELS)

        # groups first under a heading, then registration order (sorted is stable)
        return sorted(names, key=lambda n: (rank(n), not isinstance(self.commands[n],
                                                                     TyperGroup)))


app = typer.Typer(cls=_ByPanel, no_args_is_help=True, help=HELP, rich_markup_mode="markdown")


def plug(commands: typer.Typer, panel: str) -> None:
    """Put a command module's commands under `panel`: a named Typer as a group (`edgeweave
    fl ...`), an unnamed one's commands at top level."""
    if commands.info.name:
        app.add_typer(commands, rich_help_panel=panel)
        return
    for command in commands.registered_commands:
        command.rich_help_panel = command.rich_help_panel or panel
        app.registered_commands.append(command)


plug(plan.app, PLAN)  # plan, profile, models, fleets
plug(run.app, RUN)  # infer, lab, netlab
plug(serve.app, RUN)  # serve, certs
plug(distribute.app, RUN)  # distribute (a cluster of devices)
plug(front.app, RUN)  # front cache|filter
plug(adapt.app, ADAPT)  # adapt exits|compress|select|edgent
plug(fl.app, TRAIN)  # fl run|server|edge|client|split|token
plug(train.app, TRAIN)  # decentral, split-learn
plug(sim.app, SIMULATE)  # simulate
app.command("report", rich_help_panel=RESULTS)(report_cmds.report)

#: Names of the flat command list before the grouping (0.1), kept hidden for one release.
RENAMED = {"train": (fl.app, "run"), "fl-server": (fl.app, "server"),
           "fl-edge": (fl.app, "edge"), "fl-client": (fl.app, "client"),
           "fl-split": (fl.app, "split"), "fl-token": (fl.app, "token"),
           "exits": (adapt.app, "exits"),
           "compress": (adapt.app, "compress"), "select": (adapt.app, "select"),
           "edgent": (adapt.app, "edgent")}


def _renamed(old: str, new: str, callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)  # typer reads the options from the wrapped signature
    def run(*args: Any, **kwargs: Any) -> Any:
        Console(stderr=True).print(f"note: `edgeweave {old}` is now `{new}`; the old name goes "
                                   "away in the next release", highlight=False, soft_wrap=True)
        return callback(*args, **kwargs)

    return run


def _alias(old: str, group: typer.Typer, name: str) -> None:
    info = next(c for c in group.registered_commands
                if (c.name or getattr(c.callback, "__name__", "")) == name)
    assert info.callback is not None
    new = f"edgeweave {group.info.name} {name}"
    app.command(old, hidden=True, help=f"Renamed: `{new}`.",
                context_settings=info.context_settings)(_renamed(old, new, info.callback))


for _old, (_group, _name) in RENAMED.items():
    _alias(_old, _group, _name)


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived. Raised in the main thread, so every `with` and `finally` of
    the command runs (local servers terminated, namespaces deleted, the run folder unlocked)
    as on a normal exit. A BaseException: no command's `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_stopping: list[int] = []  # the signal being handled, once one arrived


def _stop(signum: int, _frame: object) -> None:
    # Later signals wait for the clean-up this one starts (SIGKILL still ends it at once). A
    # Python handler, not SIG_IGN: an ignored signal would be inherited by the processes the
    # clean-up starts (`ip netns del`).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    _stopping.append(signum)
    raise Stopped(signum)


def main() -> None:
    _stopping.clear()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    err = Console(stderr=True)
    keep_heap()  # every command's tensors: see edgeweave.heap
    try:
        app()
    except EdgeWeaveError as e:
        # soft_wrap: the error stays one line however narrow the terminal (a grep finds it)
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Stopped as e:
        _stopped(err, e.signum)
    except Exception:
        # the signal interrupted something half done, e.g. an import (numpy left without
        # its core, measured: a netlab device stopped while it started), and the clean-up
        # tripped over it: that error is the stop's, not a bug to show as a traceback
        if not _stopping:
            raise
        _stopped(err, _stopping[0])


def _stopped(err: Console, signum: int) -> None:
    err.print(f"stopped by {signal.Signals(signum).name}; everything it started is stopped "
              "and removed", highlight=False, soft_wrap=True)
    sys.exit(128 + signum)


if __name__ == "__main__":
    main()
