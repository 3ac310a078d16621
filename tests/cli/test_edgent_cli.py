"""`edgeweave adapt edgent` in process (typer's CliRunner): table, choice, cache, map, error."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from edgeweave.cli.app import app
from edgeweave.cli.edgent_cache import CacheKey
from edgeweave.errors import PlanError

TRACE = "t_seconds,mbps\n0,1.0\n1,4.0\n2,30.0\n3,90.0\n"
SMALL = ["--side", "16", "--width", "8", "--epochs", "1"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """Train and profile the small net once; every test below re-plans from the cache."""
    cache = tmp_path_factory.mktemp("edgent") / "cache"
    res = CliRunner().invoke(app, ["adapt", "edgent", "--slo-ms", "1000", "--cache", str(cache),
                                   *SMALL])
    assert res.exit_code == 0, res.output
    stem = CacheKey(16, 8, 1, 0).stem
    assert (cache / f"{stem}.json").exists() and (cache / f"{stem}.pt").exists()
    return cache


@pytest.mark.slow
def test_edgent_prints_every_pair_and_picks_most_accurate_feasible(cached, tmp_path):
    out, png, trace = tmp_path / "e.json", tmp_path / "e.png", tmp_path / "trace.csv"
    trace.write_text(TRACE)
    res = CliRunner().invoke(app, ["adapt", "edgent", "--slo-ms", "8", "--mbps", "20", "--cache",
                                   str(cached), "--trace", str(trace), "--json", str(out),
                                   "--plot", str(png), *SMALL], terminal_width=140)
    assert res.exit_code == 0, res.output
    assert "using the net and profile cached" in res.output  # nothing re-trained
    assert "choice: exit" in res.output and "configuration map" in res.output
    doc = json.loads(out.read_text())
    assert doc["mbps"] == 20 and doc["slo_ms"] == 8
    ok = [o for o in doc["options"] if o["meets_slo"]]
    best = max(o["accuracy"] for o in ok)
    assert doc["chosen"]["accuracy"] == best and doc["chosen"]["latency_ms"] <= 8
    assert doc["chosen"]["latency_ms"] == min(o["latency_ms"] for o in ok
                                              if o["accuracy"] == best)
    assert len({o["exit"] for o in doc["options"]}) == 3
    assert len(doc["config_map"]["states"]) == 4
    assert png.stat().st_size > 0


@pytest.mark.slow
def test_edgent_infeasible_requirement_is_a_plan_error(cached):
    res = CliRunner().invoke(app, ["adapt", "edgent", "--slo-ms", "0.01", "--cache", str(cached),
                                   *SMALL])
    assert isinstance(res.exception, PlanError)
    assert "cannot be met" in str(res.exception) and "fastest option is exit" in str(
        res.exception)


@pytest.mark.slow
def test_edgent_cache_rebuilds_a_truncated_entry_and_keys_on_width(cached, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(cached, cache)
    record = cache / f"{CacheKey(16, 8, 1, 0).stem}.json"
    record.write_text(record.read_text()[:100])  # a run killed mid-write, before atomic writes
    res = CliRunner().invoke(app, ["adapt", "edgent", "--slo-ms", "1000", "--cache", str(cache),
                                   *SMALL],
                             terminal_width=300)
    assert res.exit_code == 0, res.output
    assert "not valid JSON" in res.output and "rebuilding it" in res.output
    assert "using the net and profile cached" not in res.output
    json.loads(record.read_text())  # whole again
    wider = ["--side", "16", "--width", "4", "--epochs", "1"]
    res = CliRunner().invoke(app, ["adapt", "edgent", "--slo-ms", "1000", "--cache", str(cache),
                                   *wider])
    assert res.exit_code == 0, res.output
    assert "using the net and profile cached" not in res.output  # --width 4 is another net
    assert (cache / f"{CacheKey(16, 4, 1, 0).stem}.json").exists()
    res = CliRunner().invoke(app, ["adapt", "edgent", "--slo-ms", "1000", "--cache", str(cache),
                                   *SMALL])
    assert "using the net and profile cached" in res.output  # the rebuilt entry is reused
