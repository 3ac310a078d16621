"""benchmarks/multi_device.py's setup flags: a bad value is one argparse error naming the flag,
before any model is profiled."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.mark.parametrize(("args", "named"), [
    (["--setups", "gateway,nope"], "--setups 'gateway,nope'"),
    (["--setups", ""], "--setups ''"),
    (["--gateway-devices", "2,7"], "--gateway-devices '2,7'"),
    (["--gateway-devices", "two"], "--gateway-devices 'two'"),
    (["--gateway-in-flight", "0"], "--gateway-in-flight"),
    (["--setups", "stream", "--stream-in-flight", "17"], "--stream-in-flight 17"),
    (["--device-memory-mb", "0"], "--device-memory-mb 0"),
    (["--device-memory-mb", "4096"], "--device-memory-mb 4096"),
])
def test_a_bad_setup_flag_is_one_error_naming_it(args, named, monkeypatch, capsys):
    _one_error_before_profiling(["--no-runs", *args], named, monkeypatch, capsys)


def _one_error_before_profiling(argv, named, monkeypatch, capsys):
    """multi_device.py with ``argv`` exits with one argparse error naming ``named``, before
    any model is profiled."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _multi_device_runs
    import multi_device

    monkeypatch.setattr(multi_device, "FLEET", multi_device.FLEET)  # main() sets these
    monkeypatch.setattr(_multi_device_runs, "MAX_DEVICES", _multi_device_runs.MAX_DEVICES)
    profiled = []
    monkeypatch.setattr(multi_device, "profile_zoo", lambda *a, **k: profiled.append(a) or {})
    monkeypatch.setattr("sys.argv", ["multi_device.py", *argv])
    with pytest.raises(SystemExit) as exit_:
        multi_device.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and named in err and "Traceback" not in err, err
    assert profiled == []


def test_a_memory_cap_binds_every_device_but_the_gateway(monkeypatch):
    """--device-memory-mb reaches the cluster's memory_mb: the planner sees the cap on each
    device but the gateway, which keeps its own (it holds the rest of the model)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from _multi_device_setups import cluster_fleet

    fleet = cluster_fleet(3, memory_mb=23.0)
    cluster = fleet.cluster()
    gateway, *others = cluster.devices
    assert all(cluster.limit_mb(fleet.node(x)) == 23.0 for x in others)
    assert cluster.limit_mb(fleet.node(gateway)) == fleet.node(gateway).hardware.memory_mb
    assert cluster_fleet(3).cluster().memory_mb == {}


@pytest.mark.parametrize(("args", "named"), [
    (["--devices", "1,x"], "--devices '1,x'"),
    (["--devices", "0,7"], "--devices '0,7'"),
    (["--profiles", "/nonexistent-profiles"], "no vgg16.json there"),
])
def test_the_device_count_benchmark_names_a_bad_flag(args, named, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import cluster_device_counts

    monkeypatch.setattr("sys.argv", ["cluster_device_counts.py", "--models", "vgg16", *args])
    with pytest.raises(SystemExit) as exit_:
        cluster_device_counts.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and named in err and "Traceback" not in err, err


TWO_PIS = """\
name: two-pis
nodes:
  - {name: a, tier: device, hardware: rpi4}
  - {name: b, tier: device, hardware: rpi4}
clusters:
  - {name: pair, devices: [a, b], gateway: a, medium: {kind: wifi, mbps: 40, rtt_ms: 2}}
"""


@pytest.mark.parametrize(("fleet", "args", "named"), [
    ("nope-fleet", [], "--fleet 'nope-fleet'"),
    ("pi4-wifi-edge-cloud", [], "has no clusters"),
    ("two-pis", ["--run-devices", "1,3"], "--run-devices 3: the fleet"),
    ("two-pis", ["--run-schedulers", "vgg16"],
     "--run-schedulers (three sources, reuse on four devices) 4"),
    ("two-pis", ["--run-layerwise", "2,3"], "--run-layerwise 3"),
    ("two-pis", ["--mbps", "-1"], "--mbps -1"),
])
def test_the_fleet_flag_names_a_fleet_without_a_cluster_or_too_few_devices(
        fleet, args, named, monkeypatch, capsys, tmp_path):
    if fleet == "two-pis":
        (tmp_path / "two.yaml").write_text(TWO_PIS)
        fleet = str(tmp_path / "two.yaml")
    _one_error_before_profiling(["--fleet", fleet, *args], named, monkeypatch, capsys)


def test_a_fleet_of_its_own_gives_the_cluster_devices_in_order_and_no_more(tmp_path):
    """--fleet: the 1..N devices are the fleet's cluster's, in order, on its medium; asking
    for more devices than it has is an error, not a smaller cluster under a larger count."""
    import sys
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _multi_device_setups import cluster_fleet
    finally:
        sys.path.remove(str(BENCHMARKS))
    from edgeweave.errors import EdgeWeaveError

    path = tmp_path / "two.yaml"
    path.write_text(TWO_PIS)
    fleet = cluster_fleet(2, str(path))
    cluster = fleet.cluster()
    assert cluster.devices == ["a", "b"] and cluster.gateway == "a"
    assert cluster.medium.mbps == 40
    assert cluster_fleet(2, str(path), mbps=5).cluster().medium.mbps == 5
    with pytest.raises(EdgeWeaveError, match="has 2 devices, not 3"):
        cluster_fleet(3, str(path))


def test_on_a_small_cluster_the_default_counts_are_the_devices_it_has(monkeypatch, tmp_path):
    """Every count left at its default fits the fleet: two devices pass the checks (to the
    profiling, stopped here) with the plan rows up to 2, and no scheduler rows (they need 4)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _multi_device_runs
    import multi_device

    monkeypatch.setattr(multi_device, "FLEET", multi_device.FLEET)
    monkeypatch.setattr(_multi_device_runs, "MAX_DEVICES", _multi_device_runs.MAX_DEVICES)
    (tmp_path / "two.yaml").write_text(TWO_PIS)

    class Profiling(Exception):
        pass

    def profile_zoo(*a, **k):
        raise Profiling

    monkeypatch.setattr(multi_device, "profile_zoo", profile_zoo)
    monkeypatch.setattr("sys.argv", ["multi_device.py", "--fleet", str(tmp_path / "two.yaml")])
    with pytest.raises(Profiling):
        multi_device.main()
    assert _multi_device_runs.MAX_DEVICES == 2
