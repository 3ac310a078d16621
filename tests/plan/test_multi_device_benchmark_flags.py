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
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import multi_device

    profiled = []
    monkeypatch.setattr(multi_device, "profile_zoo", lambda *a, **k: profiled.append(a) or {})
    monkeypatch.setattr("sys.argv", ["multi_device.py", "--no-runs", *args])
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
