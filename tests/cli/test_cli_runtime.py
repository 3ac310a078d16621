"""The runtime commands as a user runs them: real processes on loopback."""

import json
import logging
import subprocess
import sys

import pytest
from test_cli import main_in_process, run

from helpers import calibration


def test_serve_refuses_to_run_without_authentication(capsys):
    code, _, err = main_in_process(capsys, "serve", "--role", "edge", "--listen", "127.0.0.1:0")
    assert code == 2
    assert "without authentication" in err


def test_serve_rejects_a_bad_role_and_a_short_token(tmp_path, capsys):
    code, _, err = main_in_process(capsys, "serve", "--role", "fog")
    assert code == 2 and "--role" in err
    tok = tmp_path / "tok"
    tok.write_text("short")
    code, _, err = main_in_process(capsys, "serve", "--role", "edge", "--token-file", str(tok))
    assert code == 2 and "tok" in err
    # what to do, in the user's words: the command that writes a token
    assert f"write a new one with `edgeweave fl token {tok} --force`" in " ".join(err.split())
    code, _, err = main_in_process(capsys, "serve", "--role", "edge", "--max-link-s", "-1")
    assert code == 2 and "--max-link-s" in err


def test_serve_names_a_model_file_it_cannot_install(tmp_path, capsys):
    tok = tmp_path / "tok"
    tok.write_text("x" * 32)
    code, out, err = main_in_process(capsys, "serve", "--role", "edge", "--listen",
                                     "127.0.0.1:0", "--token-file", str(tok), "--model",
                                     str(tmp_path / "missing.py") + ":factory")
    assert code == 2 and "--model" in err and "missing.py" in err
    assert "Traceback" not in err + out


def test_certs_keeps_the_ca_key_apart_and_says_what_goes_where(tmp_path, capsys):
    pki = tmp_path / "pki"
    code, out, _ = main_in_process(capsys, "certs", str(pki), "--node", "device",
                                   "--node", "edge")
    assert code == 0
    assert sorted(p.name for p in (pki / "ca").iterdir()) == ["ca.key", "ca.pem"]
    for node in ("device", "edge"):
        assert sorted(p.name for p in (pki / node).iterdir()) == [
            "ca.pem", f"{node}.key", f"{node}.pem"]
        assert f"{node}: copy the folder {pki / node}/" in " ".join(out.split())
    assert "never copy it to a node" in out


@pytest.fixture
def token_file(tmp_path):
    tok = tmp_path / "tok"
    tok.write_text("x" * 32)
    tok.chmod(0o600)
    return tok


@pytest.fixture
def quiet_node_logs():
    """`serve` adds a stderr handler to the edgeweave logger; drop it after an in-process run."""
    logger = logging.getLogger("edgeweave")
    before = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = before[0]
    logger.setLevel(before[1])


@pytest.mark.parametrize(("args", "flag"), [
    (["serve", "--role", "edge", "--max-message-mb", "-1"], "--max-message-mb"),
    (["serve", "--role", "edge", "--max-message-mb", "0"], "--max-message-mb"),
    (["serve", "--role", "edge", "--max-message-mb", "4096"], "--max-message-mb"),
    (["serve", "--role", "edge", "--dilation", "inf"], "--dilation"),
    (["serve", "--role", "edge", "--dilation", "nan"], "--dilation"),
    (["serve", "--role", "edge", "--max-link-s", "nan"], "--max-link-s"),
    (["serve", "--role", "edge", "--max-arrival-wait-s", "-1"], "--max-arrival-wait-s"),
    (["serve", "--role", "edge", "--max-decoded-mb", "0"], "--max-decoded-mb"),
    (["serve", "--role", "edge", "--grace-s", "inf"], "--grace-s"),
    (["serve", "--role", "edge", "--metrics-port", "70000"], "--metrics-port"),
    (["serve", "--role", "edge", "--max-concurrency", "0"], "--max-concurrency"),
    (["infer", "digits-cnn", "--mbps", "inf"], "--mbps"),
    (["infer", "digits-cnn", "--mbps", "0"], "--mbps"),
    (["infer", "digits-cnn", "--repeat", "0"], "--repeat"),
    (["lab", "digits-cnn", "--mbps", "nan"], "--mbps"),
    (["netlab", "digits-cnn", "--mbps", "-5"], "--mbps"),
    (["infer", "digits-cnn", "--upload", "sometimes"], "--upload"),
    (["lab", "digits-cnn", "--upload", "lazy"], "--upload"),
    (["netlab", "digits-cnn", "--upload-codec", "int4"], "--upload-codec"),
    (["serve", "--role", "edge", "--chunk-budget-mb", "0"], "--chunk-budget-mb"),
])
def test_numeric_flags_must_be_finite_and_in_range(capsys, args, flag):
    code, _, err = main_in_process(capsys, *args)
    assert code == 2
    assert flag in err and "Traceback" not in err


def test_serve_names_a_bad_or_busy_address(capsys, token_file, quiet_node_logs):
    import socket

    base = ["serve", "--role", "edge", "--token-file", str(token_file)]
    for listen in ("999.1.1.1:1", "127.0.0.1:99999", "nonsense"):
        code, _, err = main_in_process(capsys, *base, "--listen", listen)
        assert code == 2 and "--listen" in err and listen in err, err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = main_in_process(capsys, *base, "--listen", f"127.0.0.1:{port}")
        assert code == 2 and f"--listen 127.0.0.1:{port}: cannot listen there" in err
        code, _, err = main_in_process(capsys, *base, "--listen", "127.0.0.1:0",
                                       "--metrics-port", str(port))
        assert code == 2 and f"--metrics-port {port}: cannot listen there" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_lab_runs_a_model_across_real_processes(tmp_path):
    report = tmp_path / "lab.html"
    res = run("lab", "digits-cnn", "--repeat", "3", "--mbps", "50", "--codec", "none,fp16",
              "--report", str(report))
    assert res.returncode == 0, res.stderr
    assert "end to end" in res.stdout and "top-5" in res.stdout
    doc = json.loads((tmp_path / "lab.run.json").read_text())  # --report keeps its source
    assert doc["requests"] == 3 and doc["fallbacks"] == 0
    assert 'data-kind="runtime run"' in report.read_text()


def test_infer_with_an_unknown_codec_names_it(capsys):
    code, out, err = main_in_process(capsys, "infer", "digits-cnn", "--codec", "gzip")
    assert code == 2 and "gzip" in err
    assert "Traceback" not in err + out


@pytest.fixture(scope="module")
def edge_plan(tmp_path_factory):
    """A digits-cnn plan running all but the input on the edge (the planner itself keeps so
    small a model on the device, and then never asks the edge)."""
    from edgeweave.graph import capture_spec
    from edgeweave.plan import plan
    from edgeweave.profile import profile_graph
    from edgeweave.topology import DEFAULT_FLEET, load_fleet

    graph = capture_spec("digits-cnn")
    chosen = plan(profile_graph(graph, load_fleet(DEFAULT_FLEET), warmup=0, repeats=1,
                                calibration=calibration()), "latency")
    placement = {n.name: "device" if n.kind == "placeholder" else "edge" for n in graph.nodes}
    path = tmp_path_factory.mktemp("plan") / "edge.json"
    path.write_text(chosen.model_copy(update={"placement": placement}).model_dump_json())
    return path


def _infer(capsys, edge_plan, edge, *args):
    code, out, err = main_in_process(capsys, "infer", "digits-cnn", "--plan", str(edge_plan),
                                     "--edge", edge, "--repeat", "2", *args)
    return code, " ".join(out.split()), " ".join(err.split())


def test_infer_against_a_dead_edge_is_an_error_unless_asked_to_fall_back(
        tmp_path, capsys, token_file, edge_plan):
    code, _, err = _infer(capsys, edge_plan, "127.0.0.1:9", "--token-file", str(token_file))
    assert code == 2 and "edge 127.0.0.1:9: unreachable" in err and "--fallback-local" in err
    code, out, _ = _infer(capsys, edge_plan, "127.0.0.1:9", "--token-file", str(token_file),
                          "--fallback-local", "--json", str(tmp_path / "r.json"))
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text())["fallbacks"] == 2
    assert "2 request(s) fell back" in out


def test_incremental_upload_plans_itself_so_it_refuses_a_plan_file(capsys, edge_plan):
    code, _, err = _infer(capsys, edge_plan, "127.0.0.1:9", "--upload", "incremental")
    assert code == 2 and "--upload incremental" in err and "--plan" in err
    assert "Traceback" not in err


def test_auto_upload_goes_incremental_when_the_whole_stages_take_long(edge_plan):
    from edgeweave.cli.upload_cmds import choose
    from edgeweave.plan import load_plan

    chosen = load_plan(edge_plan)  # digits-cnn's 150 kB all on the edge
    assert choose("auto", chosen, None, False) == "whole"  # well under a second at 18.9 Mbit/s
    slow = chosen.with_link("device-edge", mbps=0.05)  # 24 s: more than the 10 s auto allows
    assert choose("auto", slow, None, False) == "incremental"
    assert choose("auto", slow, edge_plan, False) == "whole"  # a plan file is run as it is
    assert choose("whole", slow, None, False) == "whole"


def test_infer_uploads_incrementally_and_says_what_it_emulates(tmp_path, capsys, token_file):
    from edgeweave.graph import capture_spec
    from edgeweave.runtime.node import ServeOptions, start_node
    from edgeweave.runtime.server import NodeConfig

    graph = capture_spec("digits-cnn")
    node, svc, port = start_node(NodeConfig("edge", "edge", cache_dir=str(tmp_path)),
                                 ServeOptions("127.0.0.1:0", token=token_file.read_text()))
    # captured before queries run: fx tracing patches nn.Module.__call__ process-wide, and
    # this edge shares the test's process
    svc.deployer.models.graph(graph.spec, graph.input_shape)
    try:
        code, out, err = main_in_process(
            capsys, "infer", "digits-cnn", "--edge", f"127.0.0.1:{port}", "--token-file",
            str(token_file), "--upload", "incremental", "--mbps", "2", "--repeat", "3",
            "--json", str(tmp_path / "r.json"))
    finally:
        node.stop(0)
    out = " ".join(out.split())
    assert code == 0, err
    assert "upload order (IONN, benefit per byte)" in out and "first benefit:" in out
    assert "--upload-codec auto:" in out and "weights as" in out  # the planner's choice, why
    assert "EMULATED: the device's uplink is 2 Mbit/s by shaping in this process" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["upload"]["strategy"] == "incremental" and doc["requests"] == 3
    assert len(doc["per_request_t_s"]) == 3 and doc["fallbacks"] == 0


def test_infer_names_a_refused_token_or_certificate(tmp_path, capsys, token_file, edge_plan):
    from edgeweave.runtime.node import ServeOptions, start_node
    from edgeweave.runtime.server import NodeConfig
    from edgeweave.security import make_fleet_certs

    make_fleet_certs(tmp_path / "fleet", ["device", "edge"])
    make_fleet_certs(tmp_path / "other", ["device"])
    tls_node, _, tls_port = start_node(NodeConfig("edge", "edge"), ServeOptions(
        "127.0.0.1:0", cert_dir=tmp_path / "fleet"))
    token_node, _, token_port = start_node(NodeConfig("edge", "edge"), ServeOptions(
        "127.0.0.1:0", token="another-token-0123456789"))
    try:
        code, _, err = _infer(capsys, edge_plan, f"127.0.0.1:{tls_port}",
                              "--cert-dir", str(tmp_path / "other"))
        assert code == 2 and "TLS handshake failed" in err and "--cert-dir" in err
        code, _, err = _infer(capsys, edge_plan, f"127.0.0.1:{token_port}",
                              "--token-file", str(token_file))
        assert code == 2 and "did not accept our token" in err
    finally:
        tls_node.stop(0)
        token_node.stop(0)


def test_infer_with_two_edges_goes_on_when_one_is_dead(tmp_path, capsys, token_file, edge_plan):
    from edgeweave.runtime.node import ServeOptions, start_node
    from edgeweave.runtime.server import NodeConfig

    node, svc, port = start_node(NodeConfig("edge", "edge"), ServeOptions(
        "127.0.0.1:0", token=token_file.read_text()))
    try:
        code, out, err = _infer(capsys, edge_plan, "127.0.0.1:9", "--edge",
                                f"127.0.0.1:{port}", "--token-file", str(token_file),
                                "--slo-ms", "5000", "--json", str(tmp_path / "r.json"))
        assert code == 0, err
        assert "edge 127.0.0.1:9: unreachable" in out and "the other edges" in out
        assert json.loads((tmp_path / "r.json").read_text())["fallbacks"] == 0
        assert svc.stages  # the live edge served them
        code, _, err = _infer(capsys, edge_plan, "127.0.0.1:9", "--edge", "127.0.0.1:8",
                              "--token-file", str(token_file))
        assert code == 2 and "--fallback-local" in err  # none usable: as one dead edge
    finally:
        node.stop(0)
        svc.close()


def test_python_dash_m_works():
    res = subprocess.run([sys.executable, "-m", "edgeweave", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0


def test_infer_rejects_an_unknown_shaping_mode(capsys):
    code, _, err = main_in_process(capsys, "infer", "digits-cnn", "--shaping", "wifi")
    assert code == 2 and "--shaping" in err


def test_infer_throttle_keeps_back_what_a_refusing_edge_would_refuse(tmp_path, capsys,
                                                                    token_file, edge_plan):
    """`infer --throttle`: an edge that answers every request after its deadline (emulated
    5000x slower: digits-cnn's ~0.1 ms here becomes far more than a 20 ms SLO and any grace
    the device allows) refuses them all; the device then answers most of them itself without
    sending (throttled), and a bad factor is named in the flag's words."""
    from edgeweave.runtime.node import ServeOptions, start_node
    from edgeweave.runtime.server import NodeConfig

    code, _, err = _infer(capsys, edge_plan, "127.0.0.1:9", "--throttle", "0.5")
    assert code == 2 and "--throttle 0.5: expected 0 (off) or at least 1" in err, err
    node, svc, port = start_node(NodeConfig("edge", "edge", dilation=5000.0), ServeOptions(
        "127.0.0.1:0", token=token_file.read_text()))
    try:
        notes = {}
        for k in ("0", "1.5"):
            out_json = tmp_path / f"r{k}.json"
            code, _, err = _infer(capsys, edge_plan, f"127.0.0.1:{port}", "--token-file",
                                  str(token_file), "--slo-ms", "20", "--repeat", "8",
                                  "--throttle", k, "--json", str(out_json))
            assert code == 0, err
            doc = json.loads(out_json.read_text())
            assert doc["fallbacks"] == 8  # every request answered, by the device
            notes[k] = " ".join(doc["fallback_notes"])
        assert "DEADLINE_EXCEEDED" in notes["0"] and "throttled" not in notes["0"]
        assert "throttled" in notes["1.5"]
    finally:
        node.stop(0)
        svc.close()
