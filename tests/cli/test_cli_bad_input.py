"""Every bad input to plan, profile, edgent, exits, compress and select: exit code 2, one line
on stderr naming the flag, file or field, no traceback, and nothing trained or measured first.

In process through ``main()`` (what the ``edgeweave`` script runs), so EdgeWeave's own error
handling is what is tested; the training and measuring entry points are replaced by tripwires,
so a check that comes too late fails the test instead of training for a minute."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from edgeweave.cli import app as cli_app
from helpers import make_profile

FLEET = "pi4-wifi-edge-cloud"
BADFIELD = ("name: f\nnodes:\n  - {name: pi, tier: device, hardware: rpi4}\n"
            "  - {name: e, tier: edge, hardware: edge-server}\n"
            "links:\n  - {from: pi, to: e, mbps: .nan, rtt_ms: 5}\n")
BIG = str(2**70)

# (args, what the error line must name); {d} is a scratch directory holding the files below
CASES: list[tuple[list[str], str]] = [
    # plan: numbers
    (["plan", "--profile", "{d}/p.json", "--mbps", "nan"], "--mbps: expected a finite number > 0"),
    (["plan", "--profile", "{d}/p.json", "--mbps", "inf"], "--mbps"),
    (["plan", "--profile", "{d}/p.json", "--mbps", "0"], "--mbps"),
    (["plan", "--profile", "{d}/p.json", "--mbps", "-1"], "got -1"),
    (["plan", "--profile", "{d}/p.json", "--mbps", "abc"], "--mbps"),
    (["plan", "--profile", "{d}/p.json", "--slo-ms", "nan"], "--slo-ms"),
    (["plan", "--profile", "{d}/p.json", "--slo-ms", "inf"], "--slo-ms"),
    (["plan", "--profile", "{d}/p.json", "--slo-ms", "-5"], "--slo-ms"),
    (["plan", "--profile", "{d}/p.json", "--device-mem-mb", "nan"], "--device-mem-mb"),
    (["plan", "--profile", "{d}/p.json", "--device-mem-mb", "inf"], "--device-mem-mb"),
    (["plan", "--profile", "{d}/p.json", "--device-mem-mb", "-1"], "--device-mem-mb"),
    (["plan", "digits-cnn", "--warmup", "-1"], "--warmup: expected an integer >= 0"),
    (["plan", "digits-cnn", "--repeats", "0"], "--repeats: expected an integer >= 1"),
    (["plan", "--profile", "{d}/p.json", "--objective", "speed"], "speed"),
    (["plan", "--profile", "{d}/p.json", "--codec", "bogus"],
     "--codec: codec 'bogus' is not an activation codec"),
    # plan: files
    (["plan", "--profile", "{d}/adir"], "adir: is a directory"),
    (["plan", "--profile", "{d}/missing.json"], "missing.json: no such profile file"),
    (["plan", "--profile", "{d}/corrupt.json"], "corrupt.json: not valid JSON"),
    (["plan", "--profile", "{d}/empty.json"], "empty.json: not valid JSON"),
    (["plan", "--profile", "{d}/binary.json"], "binary.json: not a text file"),
    (["plan", "--profile", "{d}/list.json"], "list.json: expected a JSON object"),
    (["plan", "--profile", "{d}/wrong.json"], "wrong.json: model"),
    (["plan", "--profile", "{d}/p.json", "--json", "{d}/no/x.json"], "--json: cannot write"),
    (["plan", "--profile", "{d}/p.json", "--json", "{d}/adir"], "--json"),
    (["plan", "--profile", "{d}/p.json", "--plot", "{d}/no/x.png"], "--plot: cannot write"),
    (["plan", "--profile", "{d}/p.json", "--plot", "{d}/adir"], "--plot"),
    (["plan", "--profile", "{d}/p.json", "--fleet", "{d}/adir"], "adir"),
    (["plan", "--profile", "{d}/p.json", "--fleet", "{d}/bad.yaml"], "bad.yaml: line"),
    (["plan", "--profile", "{d}/p.json", "--fleet", "{d}/badfield.yaml"], "links[0].mbps"),
    (["plan", "--profile", "{d}/p.json", "--fleet", "{d}/hw.yaml"], "nodes[0].hardware"),
    (["plan", "--profile", "{d}/p.json", "--fleet", "{d}/tier.yaml"], "nodes[0].tier"),
    (["plan", "--profile", "{d}/p.json", "--fleet", "{d}/link.yaml"], "links[0].to"),
    (["plan", "--profile", "{d}/p.json", "--fleet", "{d}/empty.yaml"], "empty.yaml"),
    (["plan", "--profile", "{d}/p.json", "--fleet", "no-such-fleet"], "no-such-fleet"),
    (["plan", "--profile", "{d}/p.json", "--fleet", FLEET, "--device", "nosuch"], "'nosuch'"),
    (["plan", "--profile", "{d}/p.json", "--device", "pi"], "--fleet"),
    (["plan", "digits-cnn", "--profile", "{d}/p.json"], "--profile"),
    (["plan", "no-such-model"], "no-such-model"),
    (["plan", "{d}/model.py:nofactory"], "nofactory"),
    (["plan", "{d}/model.py:factory"], "RuntimeError: boom"),
    (["plan", "{d}/adir:factory"], "adir:factory"),
    (["plan", "digits-cnn", "--weights", "{d}/missing.pt"], "missing.pt' does not exist"),
    (["plan", "digits-cnn", "--weights", "{d}/adir"], "adir' is a directory"),
    (["plan", "digits-cnn", "--weights", "{d}/corrupt.json"], "corrupt.json' could not be read"),
    # profile
    (["profile", "digits-cnn", "--top", "0"], "--top: expected an integer >= 1"),
    (["profile", "digits-cnn", "--top", "-1"], "--top"),
    (["profile", "digits-cnn", "--repeats", "0"], "--repeats"),
    (["profile", "digits-cnn", "--json", "{d}/no/p.json"], "--json"),
    (["profile", "digits-cnn", "--device", "nosuch"], "'nosuch'"),
    (["profile", "digits-cnn", "--fleet", "{d}/badfield.yaml"], "links[0].mbps"),
    (["profile", "no-such-model"], "no-such-model"),
    # edgent
    (["adapt", "edgent", "--slo-ms", "nan"], "--slo-ms: expected a finite number > 0, got nan"),
    (["adapt", "edgent", "--slo-ms", "inf"], "--slo-ms"),
    (["adapt", "edgent", "--slo-ms", "0"], "--slo-ms"),
    (["adapt", "edgent", "--slo-ms", "9", "--mbps", "nan"], "--mbps"),
    (["adapt", "edgent", "--slo-ms", "9", "--mbps", "inf"], "--mbps"),
    (["adapt", "edgent", "--slo-ms", "9", "--mbps", "-3"], "--mbps"),
    (["adapt", "edgent", "--slo-ms", "9", "--side", "12"],
     "--side: expected a multiple of 8 in [8, 128]"),
    (["adapt", "edgent", "--slo-ms", "9", "--side", "0"], "--side"),
    (["adapt", "edgent", "--slo-ms", "9", "--side", "1000000"], "--side"),
    (["adapt", "edgent", "--slo-ms", "9", "--width", "0"], "--width"),
    (["adapt", "edgent", "--slo-ms", "9", "--width", "100000"], "--width"),
    (["adapt", "edgent", "--slo-ms", "9", "--epochs", "0"], "--epochs"),
    (["adapt", "edgent", "--slo-ms", "9", "--seed", "-1"],
     "--seed: expected an integer in [0, 4294967295]"),
    (["adapt", "edgent", "--slo-ms", "9", "--seed", BIG], "--seed"),
    (["adapt", "edgent", "--slo-ms", "9", "--states", "0"], "--states"),
    (["adapt", "edgent", "--slo-ms", "9", "--states", "100000"], "--states"),
    (["adapt", "edgent", "--slo-ms", "9", "--cache", "{d}/afile"], "--cache: {d}/afile is a file"),
    (["adapt", "edgent", "--slo-ms", "9", "--cache", "{d}/afile/sub"], "--cache"),
    (["adapt", "select", "--cache", "{d}/afile"], "--cache: {d}/afile is a file"),
    (["adapt", "select", "--cache", "{d}/afile/sub"], "--cache"),
    (["adapt", "edgent", "--slo-ms", "9", "--trace", "{d}/missing.csv"], "missing.csv"),
    (["adapt", "edgent", "--slo-ms", "9", "--trace", "{d}/bad.csv"], "bad.csv:2"),
    (["adapt", "edgent", "--slo-ms", "9", "--trace", "{d}/adir"], "adir"),
    (["adapt", "edgent", "--slo-ms", "9", "--json", "{d}/no/e.json"], "--json"),
    (["adapt", "edgent", "--slo-ms", "9", "--plot", "{d}/no/e.png"], "--plot"),
    (["adapt", "edgent", "--slo-ms", "9", "--device", "nosuch"], "'nosuch'"),
    (["adapt", "edgent", "--slo-ms", "9", "--fleet", "{d}/badfield.yaml"], "links[0].mbps"),
    # exits and compress
    (["adapt", "exits", "--target", "nan"],
     "--target: expected a finite number in [0, 1], got nan"),
    (["adapt", "exits", "--target", "1.5"], "--target"),
    (["adapt", "exits", "--epochs", "0"], "--epochs"),
    (["adapt", "exits", "--mode", "bogus"], "--mode: expected entropy or confidence, got 'bogus'"),
    (["adapt", "exits", "--json", "{d}/no/x.json"], "--json"),
    (["adapt", "exits", "no-such-model"], "no-such-model"),
    (["adapt", "compress", "--sparsity", "nan"], "--sparsity"),
    (["adapt", "compress", "--sparsity", "1"], "--sparsity: expected a finite number in [0, 0.99]"),
    (["adapt", "compress", "--epochs", "0"], "--epochs"),
    (["adapt", "compress", "--json", "{d}/no/x.json"], "--json"),
    # select
    (["adapt", "select", "--mbps", "nan"], "--mbps"),
    (["adapt", "select", "--mbps", "inf"], "--mbps"),
    (["adapt", "select", "--slo-ms", "nan"], "--slo-ms"),
    (["adapt", "select", "--slo-ms", "inf"], "--slo-ms"),
    (["adapt", "select", "--energy-mj", "nan"], "--energy-mj"),
    (["adapt", "select", "--energy-mj", "-1"], "--energy-mj"),
    (["adapt", "select", "--device-mem-mb", "nan"], "--device-mem-mb"),
    (["adapt", "select", "--min-acc", "nan"], "--min-acc"),
    (["adapt", "select", "--min-acc", "1.5"], "--min-acc"),
    (["adapt", "select", "--epochs", "0"], "--epochs"),
    (["adapt", "select", "--slo-stat", "bogus"], "--slo-stat"),
    (["adapt", "select", "--objective", "bogus"], "--objective"),
    (["adapt", "select", "--device", "nosuch"], "'nosuch'"),
    (["adapt", "select", "--fleet", "{d}/badfield.yaml"], "links[0].mbps"),
    (["adapt", "select", "--json", "{d}/no/s.json"], "--json"),
    (["adapt", "select", "no-such-model"], "no-such-model"),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "adir").mkdir()
    (d / "afile").write_text("x")
    make_profile([(0.0, 0.0, 0.0), (2.0, 0.1, 0.05)], [16_000, 40], [(0, 1)],
                 [(20.0, 8.0), (100.0, 30.0)]).save(d / "p.json")
    (d / "corrupt.json").write_text('{"model": "x", ')
    (d / "empty.json").write_text("")
    (d / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (d / "list.json").write_text("[1, 2]")
    (d / "wrong.json").write_text('{"a": 1}')
    (d / "bad.yaml").write_text("name: f\nnodes: [\n")
    (d / "badfield.yaml").write_text(BADFIELD)
    node = "  - {name: %s, tier: %s, hardware: %s}\n"
    two = "name: f\nnodes:\n" + node % ("pi", "device", "rpi4") + node % ("e", "edge",
                                                                          "edge-server")
    (d / "hw.yaml").write_text(two.replace("rpi4", "nosuchhw") + "links: []\n")
    (d / "tier.yaml").write_text(two.replace("device", "moon") + "links: []\n")
    (d / "link.yaml").write_text(two + "links:\n  - {from: pi, to: zz, mbps: 5, rtt_ms: 5}\n")
    (d / "empty.yaml").write_text("")
    (d / "bad.csv").write_text("t_seconds,mbps\n0,abc\n")
    (d / "model.py").write_text("def factory():\n    raise RuntimeError('boom')\n")
    return d


@pytest.fixture
def tripwires(monkeypatch):
    """Training, profiling and measuring entry points that fail the test if reached."""

    def tripped(*a, **k):
        raise AssertionError("bad input reached training or measuring")

    entry_points = (("edgeweave.profile", "profile_graph"),
                    ("edgeweave.plan.branchy", "digits_branchy"),
                    ("edgeweave.adapt", "digits"))  # exits, compress, select
    # import every module first: one imported while a tripwire is set would keep it for good
    modules = [importlib.import_module(m) for m, _ in entry_points]
    for module, (_, name) in zip(modules, entry_points, strict=True):
        monkeypatch.setattr(module, name, tripped)


def run_main(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgeweave", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:  # any other exception is a traceback: the test fails
        cli_app.main()
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.mark.parametrize(("args", "names"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_naming_it(args, names, scratch, tripwires, monkeypatch, capsys):
    args = [a.format(d=scratch) for a in args]
    code, out, err = run_main(args, monkeypatch, capsys)
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    assert names.format(d=scratch) in err, err
    if err.startswith("error:"):  # EdgeWeave's own message: exactly one line
        assert len(err.strip().splitlines()) == 1, err
    else:  # the option parser's (an unparseable number, an unknown choice): a boxed message
        assert "Invalid value" in err, err
