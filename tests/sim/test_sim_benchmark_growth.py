"""The simulator benchmark's growth statement is fitted on its scale rows (never written in),
and its list flags are checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def test_growth_is_fitted_from_the_measured_rows(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from simulator import growth, growth_statement

    def row(devices: int, minutes: float) -> dict:
        requests = devices * minutes * 6
        return {"devices": devices, "sim_minutes": minutes, "requests": requests,
                "cpu_s": 2e-6 * requests ** 1.1,  # slightly worse than linear
                "peak_rss_mb": 200.0 + 0.08 * devices + 0.5 * minutes}

    rows = [row(n, 30) for n in (1000, 5000, 10000)] + [row(1000, m) for m in (10, 60)]
    g = growth(rows)
    assert g["cpu_exponent_devices"] == pytest.approx(1.1)
    assert g["cpu_exponent_minutes"] == pytest.approx(1.1)
    assert g["devices_at_minutes"] == 30 and g["minutes_at_devices"] == 1000
    assert g["rss_mb_per_1000_devices"] == pytest.approx(80.0)
    assert g["rss_mb_per_sim_hour"] == pytest.approx(30.0)
    text = growth_statement(g)
    assert "devices^1.10" in text and "minutes^1.10" in text and "80 MB per 1,000" in text
    assert "^" not in growth_statement(growth(rows[:1]))  # one row: no exponent to fit
    assert growth_statement(growth([])).endswith("too few rows to fit growth")


@pytest.mark.parametrize(("args", "named"), [
    (["--training-seeds", "1,x"], "--training-seeds '1,x'"),
    (["--seeds", ",2"], "--seeds ',2'"),
    (["--campus-devices", "0"], "--campus-devices '0'"),
    (["--scale-rows", "1000x"], "--scale-rows '1000x'"),
])
def test_a_bad_list_flag_is_one_error_naming_it_before_anything_runs(args, named, monkeypatch,
                                                                     capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import simulator

    ran = []
    monkeypatch.setattr(simulator, "scale", lambda *a, **k: ran.append("scale") or [])
    monkeypatch.setattr(simulator, "fidelity", lambda *a, **k: ran.append("fidelity") or [])
    monkeypatch.setattr("sys.argv", ["simulator.py", "--skip-operator", *args])
    with pytest.raises(SystemExit) as exit_:
        simulator.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and named in err and "Traceback" not in err
    assert ran == []  # refused before the scale and fidelity rows
