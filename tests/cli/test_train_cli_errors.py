"""The training commands refuse bad numbers and paths with one error naming the flag or YAML
field (in process, typer's CliRunner: a NaN timeout used to spin a core forever)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgeweave.cli import fl_cmds, train_cmds
from edgeweave.cli.app import app
from edgeweave.errors import EdgeWeaveError
from edgeweave.train.split.__main__ import main as split_main
from edgeweave.train.wire.auth import write_token


@pytest.mark.parametrize("args,flag,value", [
    (["fl", "server", "--token-file", "t", "--round-timeout", "nan"], "--round-timeout", "nan"),
    (["fl", "server", "--token-file", "t", "--wait-clients", "inf"], "--wait-clients", "inf"),
    (["fl", "server", "--token-file", "t", "--lease", "-1"], "--lease", "-1"),
    (["fl", "server", "--token-file", "t", "--lr", "nan"], "--lr", "nan"),
    (["fl", "client", "--data", "d.npz", "--token-file", "t", "--give-up", "nan"], "--give-up",
     "nan"),
    (["fl", "client", "--data", "d.npz", "--token-file", "t", "--retry-max", "0"], "--retry-max",
     "0"),
    (["fl", "client", "--data", "d.npz", "--token-file", "t", "--max-message-mb", "inf"],
     "--max-message-mb", "inf"),
    (["decentral", "--lr", "nan"], "--lr", "nan"),
])
def test_bad_numeric_flags_are_refused_by_name(args, flag, value):
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    # cli.options raises EdgeWeaveError, which main() prints as one line with exit 2
    assert isinstance(res.exception, EdgeWeaveError), res.output
    assert str(res.exception).startswith(f"{flag}: expected a finite number > 0, got ")
    assert str(res.exception).endswith(value) or str(res.exception).endswith(str(float(value)))


def test_split_learn_refuses_bad_numbers_by_name(capsys):
    for flag, value, words in (("--lr", "nan", "must be a finite number > 0, got nan"),
                               ("--max-message-mb", "0", "must be a finite number > 0, got 0"),
                               ("--epochs", "0", "must be >= 1, got 0")):
        with pytest.raises(SystemExit) as e:
            split_main(["device", flag, value])
        assert e.value.code == 2
        assert f"argument {flag}: {words}" in capsys.readouterr().err


def _quiet() -> Console:
    return Console(file=io.StringIO())


def test_yaml_and_paths_name_the_field(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("model: logreg:64,10\nrounds: 1\ndata: {clients: 2}\nout_dir: /proc/nope/x\n")
    with pytest.raises(EdgeWeaveError) as e:
        train_cmds.train(_quiet(), cfg, None, None, None)
    assert str(e.value) == (f"{cfg}: out_dir: cannot create the folder /proc/nope/x (No such "
                            "file or directory)")
    with pytest.raises(EdgeWeaveError, match=r"^--out: cannot create the folder /proc/nope/y"):
        train_cmds.train(_quiet(), cfg, None, Path("/proc/nope/y"), None)
    with pytest.raises(EdgeWeaveError, match=r"\(with --backend\): backend: Input should be"):
        train_cmds.train(_quiet(), cfg, None, None, "bogus")
    cfg.write_text("rounds: 2\ndeadline_s: .nan\nstrategy: {fraction: .inf}\n")
    with pytest.raises(EdgeWeaveError) as e:
        train_cmds.train(_quiet(), cfg, None, None, None)
    assert "deadline_s: Input should be a finite number, got nan" in str(e.value)
    assert "strategy.fraction: Input should be a finite number, got inf" in str(e.value)
    cfg.write_text("rounds: 2\nmax_client_examples: 0\n")
    with pytest.raises(EdgeWeaveError, match="max_client_examples: Input should be greater "
                                             "than or equal to 1"):
        train_cmds.train(_quiet(), cfg, None, None, None)
    with pytest.raises(EdgeWeaveError, match=r"^--out: cannot create the folder /proc/nope/z"):
        fl_cmds.fl_split(_quiet(), "digits", 2, "iid", "mlp:64,64,10", 0,
                         Path("/proc/nope/z"))


def test_fl_server_refuses_a_locked_out_dir_before_listening(tmp_path):
    out = tmp_path / "run"
    token = tmp_path / "tok"
    write_token(token)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom edgeweave.folder_lock import lock_folder\n"
         f"with lock_folder({str(out)!r}):\n    print('held', flush=True)\n"
         "    time.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(EdgeWeaveError) as e:  # port 1 would be refused if it got that far
            fl_cmds.fl_server(_quiet(), config=None, listen="127.0.0.1:1", token_file=token,
                              test_data=None, min_clients=1, round_timeout=5,
                              wait_clients=1, rounds=1, out=out)
        assert str(e.value) == (f"--out: {out} is in use by another run (pid {holder.pid}); "
                                "wait for it to finish or choose another folder")
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
