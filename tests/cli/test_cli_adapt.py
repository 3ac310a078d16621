"""`edgeweave adapt exits` and `adapt compress` as a user runs them."""

import json

import pytest
from test_cli import main_in_process, run


@pytest.mark.slow
def test_exits_trains_calibrates_and_reports(tmp_path):
    out = tmp_path / "exits.json"
    res = run("adapt", "exits", "--epochs", "3", "--target", "0.8", "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "overall: accuracy" in res.stdout and "final" in res.stdout
    doc = json.loads(out.read_text())
    assert doc


@pytest.mark.slow
def test_compress_lists_every_variant(tmp_path):
    out = tmp_path / "variants.json"
    res = run("adapt", "compress", "--epochs", "3", "--json", str(out))
    assert res.returncode == 0, res.stderr
    names = [r["variant"] for r in json.loads(out.read_text())]
    assert {"fp32", "int8-dynamic", "int8-static", "filters-50%", "svd-r16"} <= set(names)
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert rows["int8-static"]["weights_x"] < 2  # quantizing does not remove weights


def test_adapt_commands_refuse_models_they_cannot_train(capsys):
    code, _, err = main_in_process(capsys, "adapt", "exits", "resnet18")
    assert code == 2 and "nn.Sequential" in err
