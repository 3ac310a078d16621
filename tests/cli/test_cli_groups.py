"""The command line grouped by task: one help that says what EdgeWeave is, every command's help,
the old flat names kept hidden with a notice, shell completion, and a help that loads no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from edgeweave.cli import app as cli_app
from edgeweave.cli.app import PANELS, RENAMED, app

runner = CliRunner()


def _paths(group, prefix=()) -> list[tuple[str, ...]]:
    """Every visible command, as the words a user types after `edgeweave`."""
    out = []
    for name, cmd in group.commands.items():
        if getattr(cmd, "hidden", False):
            continue
        out.append((*prefix, name))
        if hasattr(cmd, "commands"):
            out += _paths(cmd, (*prefix, name))
    return out


COMMANDS = _paths(get_command(app))


def test_help_says_what_edgeweave_is_and_lists_the_commands_by_task():
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "runs deep learning across IoT devices, edge servers and the cloud" in text
    assert "./run demo" in text and "federated" in text and "report" in text
    for panel in PANELS:  # the headings, in order
        assert panel.split(":")[0] in text
    assert [text.index(p.split(":")[0]) for p in PANELS] == sorted(
        text.index(p.split(":")[0]) for p in PANELS)
    listed = {line.split()[1] for line in res.output.splitlines()
              if line.startswith("│ ") and len(line.split()) > 2}
    assert {"plan", "lab", "fl", "adapt", "report"} <= listed
    assert not listed & set(RENAMED)  # the old names are hidden


def test_the_groups_hold_the_commands_the_ecosystem_expects():
    have = {" ".join(p) for p in COMMANDS}
    assert {"plan", "profile", "models", "fleets", "infer", "lab", "netlab", "serve", "certs",
            "report", "decentral", "split-learn", "simulate", "fl run", "fl server", "fl edge",
            "fl client", "fl split", "fl token", "adapt exits", "adapt compress", "adapt select",
            "adapt edgent"} <= have


@pytest.mark.parametrize("words", [p for p in COMMANDS if p != ("split-learn",)],
                         ids=" ".join)
def test_every_command_has_help(words):
    res = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_an_old_name_still_works_once_more_and_says_the_new_one(tmp_path):
    tok = tmp_path / "tok"
    res = runner.invoke(app, ["fl-token", str(tok)])
    assert res.exit_code == 0, res.output
    assert len(tok.read_text().strip()) >= 32
    assert res.stderr.strip().splitlines() == [
        "note: `edgeweave fl-token` is now `edgeweave fl token`; the old name goes away in the "
        "next release"]
    for old, (group, name) in RENAMED.items():  # each one takes the new command's options
        new = runner.invoke(app, [group.info.name, name, "--help"], env={"COLUMNS": "200"})
        res = runner.invoke(app, [old, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0
        assert new.output.split("Options")[1] == res.output.split("Options")[1], old


def test_shell_completion_prints_a_script_and_completes_the_groups():
    res = runner.invoke(app, ["--show-completion", "bash"], prog_name="edgeweave")
    assert res.exit_code == 0, (res.output, res.stderr, res.exc_info)
    assert "complete -o default -F _edgeweave_completion edgeweave" in res.output
    done = runner.invoke(app, [], prog_name="edgeweave", env={
        "_EDGEWEAVE_COMPLETE": "complete_bash", "COMP_WORDS": "edgeweave fl ", "COMP_CWORD": "2"})
    assert done.output.split() == ["run", "server", "edge", "client", "split", "token"]


def test_help_and_report_load_no_torch():
    """`edgeweave --help` (and completion) used to spend seconds importing torch: the command
    modules import only typer and rich until a command runs."""
    code = ("import sys\nfrom edgeweave.cli.app import app\n"
            "from typer.main import get_command\nget_command(app)\n"
            "import edgeweave.cli.report_cmds, edgeweave.report\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'matplotlib', 'grpc') "
            "if m in sys.modules)\nprint(heavy)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_a_command_module_plugs_in_with_one_line(monkeypatch):
    """The seam other command modules use: plug() puts a group, or top-level commands, under a
    heading of the help."""
    root = typer.Typer()
    monkeypatch.setattr(cli_app, "app", root)
    single, group = typer.Typer(), typer.Typer(name="sim")

    @single.command()
    def loadgen() -> None:
        """Generate load."""

    @group.command()
    def run() -> None:
        """Simulate."""

    cli_app.plug(single, cli_app.RUN)
    cli_app.plug(group, cli_app.RESULTS)
    res = runner.invoke(root, ["--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0
    assert res.output.index(cli_app.RUN) < res.output.index("loadgen")
    assert res.output.index(cli_app.RESULTS) < res.output.index("sim ")
