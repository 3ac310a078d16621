"""The simulator benchmark's growth statement is fitted on its scale rows (never written in)."""

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
