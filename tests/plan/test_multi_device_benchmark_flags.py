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
