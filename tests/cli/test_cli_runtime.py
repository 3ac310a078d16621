"""The runtime commands as a user runs them: real processes on loopback."""

import json
import subprocess
import sys

import pytest
from test_cli import run


@pytest.mark.parametrize("cmd", ["serve", "infer", "lab", "netlab", "certs"])
def test_runtime_commands_have_help(cmd):
    res = run(cmd, "--help")
    assert res.returncode == 0 and "Usage" in res.stdout


def test_serve_refuses_to_run_without_authentication():
    res = run("serve", "--role", "edge", "--listen", "127.0.0.1:0")
    assert res.returncode == 2
    assert "without authentication" in res.stderr


def test_serve_rejects_a_bad_role_and_a_short_token(tmp_path):
    res = run("serve", "--role", "fog")
    assert res.returncode == 2 and "--role" in res.stderr
    tok = tmp_path / "tok"
    tok.write_text("short")
    res = run("serve", "--role", "edge", "--token-file", str(tok))
    assert res.returncode == 2 and "tok" in res.stderr
    res = run("serve", "--role", "edge", "--max-link-s", "-1")
    assert res.returncode == 2 and "--max-link-s" in res.stderr


def test_serve_names_a_model_file_it_cannot_install(tmp_path):
    tok = tmp_path / "tok"
    tok.write_text("x" * 32)
    res = run("serve", "--role", "edge", "--listen", "127.0.0.1:0", "--token-file", str(tok),
              "--model", str(tmp_path / "missing.py") + ":factory")
    assert res.returncode == 2 and "--model" in res.stderr and "missing.py" in res.stderr
    assert "Traceback" not in res.stderr


def test_certs_writes_a_ca_and_node_certificates(tmp_path):
    res = run("certs", str(tmp_path / "pki"), "--node", "device", "--node", "edge")
    assert res.returncode == 0, res.stderr
    names = {p.name for p in (tmp_path / "pki").iterdir()}
    assert {"ca.pem", "ca.key", "device.pem", "device.key", "edge.pem", "edge.key"} <= names


@pytest.mark.slow
def test_lab_runs_a_model_across_real_processes(tmp_path):
    out = tmp_path / "run.json"
    res = run("lab", "digits-cnn", "--repeat", "3", "--mbps", "50", "--codec", "none,fp16",
              "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "end to end" in res.stdout and "top-5" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["requests"] == 3 and doc["fallbacks"] == 0


def test_infer_with_an_unknown_codec_names_it():
    res = run("infer", "digits-cnn", "--codec", "gzip")
    assert res.returncode == 2 and "gzip" in res.stderr
    assert "Traceback" not in res.stderr


def test_infer_against_a_dead_edge_falls_back_and_says_so(tmp_path):
    tok = tmp_path / "tok"
    tok.write_text("x" * 32)
    res = run("infer", "digits-cnn", "--edge", "127.0.0.1:9", "--token-file", str(tok),
              "--repeat", "2", "--mbps", "1000", "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    if doc["mode"] != "device-only":
        assert doc["fallbacks"] == 2
        assert "fell back" in res.stdout


def test_python_dash_m_works():
    res = subprocess.run([sys.executable, "-m", "edgeweave", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0


def test_infer_rejects_an_unknown_shaping_mode():
    res = run("infer", "digits-cnn", "--shaping", "wifi")
    assert res.returncode == 2 and "--shaping" in res.stderr
