"""`edgeweave loadgen` as a user runs it: a small open- and closed-loop run against a node in
this process, its table, JSON and plot, and bad flags named."""

import json

import pytest
from test_cli_runtime import main_in_process

from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.server import NodeConfig

TOKEN = "loadgen-token-0123456789abcdef"


@pytest.fixture
def node(tmp_path):
    tok = tmp_path / "tok"
    tok.write_text(TOKEN)
    server, svc, port = start_node(NodeConfig("edge", "edge"),
                                   ServeOptions("127.0.0.1:0", token=TOKEN))
    yield f"127.0.0.1:{port}", str(tok), svc
    server.stop(0)
    svc.close()


def test_a_small_open_loop_run_reports_every_request(node, tmp_path, capsys):
    target, tok, svc = node
    out, png = tmp_path / "run.json", tmp_path / "run.png"
    code, stdout, err = main_in_process(
        capsys, "loadgen", "--edge", target, "--token-file", tok, "--duration", "1",
        "--rate", "40", "--slo-ms", "2000", "--max-delay-ms", "5", "--preferred-batch", "4",
        "--throttle", "1.5", "--json", str(out),
        "--plot", str(png), "--report", str(tmp_path / "page.html"))
    assert code == 0, err
    page = (tmp_path / "page.html").read_text()
    assert "edgeweave loadgen" in page and "digits-cnn" in page
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert row["model"] == "digits-cnn" and row["sent"] > 10
    assert row["lost"] == 0 and row["throughput_rps"] > 0
    assert row["fallback"] == row["rejected"] + row["throttled"]  # each by its device
    assert png.stat().st_size > 0 and "digits-cnn" in stdout
    assert len(svc.stages) == 0  # removed afterwards


def test_a_closed_loop_run(node, capsys):
    target, tok, _ = node
    code, stdout, err = main_in_process(
        capsys, "loadgen", "--edge", target, "--token-file", tok, "--duration", "0.5",
        "--closed", "4", "--slo-ms", "2000")
    assert code == 0, err
    assert "closed loop, 4 devices" in stdout


@pytest.mark.parametrize(("args", "words"), [
    (["--preferred-batch", "four"], "--preferred-batch 'four'"),
    (["--max-batch", "4", "--preferred-batch", "8"], "preferred_batch 8"),
    (["--preferred-batch", "2000"], "preferred_batch 2000"),
    (["--input-shape", "1,x"], "--input-shape '1,x'"),
    (["--rate", "-1"], "--rate"),
    (["--throttle", "0.5"], "--throttle 0.5: expected 0 (off) or at least 1"),
])
def test_bad_flags_are_named(node, capsys, args, words):
    target, tok, _ = node
    code, _, err = main_in_process(capsys, "loadgen", "--edge", target, "--token-file", tok,
                                   "--duration", "0.5", *args)
    assert code == 2 and words in " ".join(err.split()), err
    assert "Traceback" not in err


def test_an_unreachable_node_is_named(capsys, tmp_path):
    tok = tmp_path / "tok"
    tok.write_text(TOKEN)
    code, _, err = main_in_process(capsys, "loadgen", "--edge", "127.0.0.1:9", "--token-file",
                                   str(tok), "--duration", "0.5")
    assert code == 2 and "127.0.0.1:9" in err and "UNAVAILABLE" in err
