"""`edgeweave report` as a user runs it: a real subprocess, real exit codes."""

import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parents[1] / "report" / "data"


def run(*args):
    env = {"COLUMNS": "140", "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # a worktree's sources, when the tests run from one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run([sys.executable, "-m", "edgeweave", "report", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_report_writes_one_page_of_every_result_in_a_folder(tmp_path):
    out = tmp_path / "report.html"
    res = run(str(DATA), "-o", str(out), "--title", "Lab results")
    assert res.returncode == 0, res.stderr
    assert f"report written to {out}" in res.stdout.replace("\n", "")
    page = out.read_text()
    assert "<title>Lab results</title>" in page and page.count('class="result"') == 7


def test_report_names_the_bad_input_and_still_writes_the_rest(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "report.html"
    res = run(str(empty), str(DATA / "plan_alexnet.json"), "-o", str(out))
    assert res.returncode == 2
    err = " ".join(res.stderr.split())
    assert f"error: partial report written to {out}" in err
    assert f"{empty}: no results found in this folder" in err
    assert "Traceback" not in res.stderr
    assert out.read_text().count('class="result"') == 1
