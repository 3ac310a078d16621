"""Trace parsing must point at the bad line; mbps_at must step and loop predictably."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeweave.errors import FleetError
from edgeweave.topology import BandwidthTrace, load_trace


def write(tmp_path: Path, text: str, name: str = "bw.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parses_header_comments_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "# synthetic\nt_seconds,mbps\n\n0,10\n1, 5.5  # dip\n3,20\n")
    trace = load_trace(path)
    assert trace.t_s == [0.0, 1.0, 3.0]
    assert trace.mbps == [10.0, 5.5, 20.0]
    assert trace.path == str(path)


def test_header_is_optional(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "0,1\n2,3\n"))
    assert trace.mbps == [1.0, 3.0]


def test_mbps_at_steps_holding_last_sample() -> None:
    trace = BandwidthTrace(t_s=[0, 1, 3], mbps=[10, 5, 20])
    assert trace.mbps_at(0) == 10
    assert trace.mbps_at(0.999) == 10
    assert trace.mbps_at(1) == 5
    assert trace.mbps_at(2.5) == 5
    assert trace.mbps_at(3) == 20
    assert trace.mbps_at(4.9) == 20  # the last sample holds for one more step (2 s)


def test_mbps_at_wraps_around() -> None:
    trace = BandwidthTrace(t_s=[0, 1, 3], mbps=[10, 5, 20])
    assert trace.period_s == 5
    assert trace.mbps_at(5) == 10
    assert trace.mbps_at(6.5) == 5
    assert trace.mbps_at(5 * 100 + 3.2) == 20
    assert trace.mbps_at(-0.5) == 20  # before the start loops backwards too


def test_trace_not_starting_at_zero_wraps_from_its_start() -> None:
    trace = BandwidthTrace(t_s=[10, 11], mbps=[1, 2])
    assert trace.period_s == 2
    assert trace.mbps_at(12) == 1
    assert trace.mbps_at(13.5) == 2


def test_single_sample_is_constant() -> None:
    trace = BandwidthTrace(t_s=[0], mbps=[7])
    assert trace.mbps_at(0) == trace.mbps_at(1e6) == 7
    assert trace.mean_mbps == 7


def test_mean_is_time_weighted() -> None:
    trace = BandwidthTrace(t_s=[0, 1, 3], mbps=[10, 5, 20])
    assert trace.mean_mbps == pytest.approx((10 * 1 + 5 * 2 + 20 * 2) / 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("t,mbps\n0,10\n1,fast\n", ":3: expected two numbers"),
        ("0,10\n1,-2\n", ":2: mbps must be > 0"),
        ("0,10\n1,0\n", ":2: mbps must be > 0"),
        ("0,10\n2,5\n2,6\n", ":3: time 2 is not after"),
        ("0,10\n2,5\n1,6\n", ":3: time 1 is not after"),
        ("0,10,3\n", ":1: expected two comma-separated numbers"),
        ("0,10\nt_seconds,mbps\n", ":2: expected two numbers"),
        ("0,nan\n", ":1: expected finite numbers"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(FleetError) as info:
        load_trace(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "t_seconds,mbps\n", "\n\n"])
def test_empty_trace(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(FleetError, match="no samples"):
        load_trace(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=r"nope\.csv: bandwidth trace file not found"):
        load_trace(tmp_path / "nope.csv")


def test_shipped_lte_trace_is_synthetic_walk_around_lte_mean() -> None:
    path = Path(__file__).parents[2] / "src/edgeweave/topology/fleets/lte-trace.csv"
    assert "synthetic" in path.read_text().lower()
    trace = load_trace(path)
    assert len(trace.t_s) >= 60
    assert trace.mean_mbps == pytest.approx(5.85, rel=0.05)
