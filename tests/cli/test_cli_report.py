"""`edgeweave report` as a user runs it: exit codes, the message, the page."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeweave.cli.app import app

DATA = Path(__file__).parents[1] / "report" / "data"


def test_report_writes_one_page_of_every_result_in_a_folder(tmp_path):
    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["report", str(DATA), "-o", str(out), "--title", "Lab"])
    assert res.exit_code == 0, res.output
    assert f"report written to {out}" in res.output.replace("\n", "")
    page = out.read_text()
    assert "<title>Lab</title>" in page and page.count('class="result"') == 7


@pytest.mark.slow
def test_report_names_the_bad_input_and_still_writes_the_rest(tmp_path):
    """A real process: the error reaches the shell as one message and exit status 2."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "report.html"
    env = {"COLUMNS": "140", "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # a worktree's sources, when the tests run from one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    res = subprocess.run([sys.executable, "-m", "edgeweave", "report", str(empty),
                          str(DATA / "plan_alexnet.json"), "-o", str(out)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 2
    err = " ".join(res.stderr.split())
    assert f"error: partial report written to {out}" in err
    assert f"{empty}: no results found in this folder" in err
    assert "Traceback" not in res.stderr
    assert out.read_text().count('class="result"') == 1
