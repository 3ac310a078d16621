"""Prometheus on the FL server: `fl-server --metrics-port` serves the round, clients selected /
reported / dropped, bytes, round time, accuracy and privacy spent, scraped while it runs."""

from __future__ import annotations

import contextlib
import io
import math
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from edgeweave.cli import fl_cmds
from edgeweave.train.client import TorchClient
from edgeweave.train.data import make_task
from edgeweave.train.grpc_client import FLClient
from edgeweave.train.metrics import FLMetrics, round_outcomes
from edgeweave.train.types import RoundRecord, TrainError
from edgeweave.train.wire.auth import write_token

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = "mlp:64,64,10"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            tags = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{tags}}}" if tags else s.name] = s.value
    return out


def test_fl_server_metrics_while_it_runs(tmp_path):
    task = make_task("digits", "iid", 2, SPEC, seed=0)
    np.savez(tmp_path / "test.npz", x=task.test_x.numpy(), y=task.test_y.numpy())
    token = write_token(tmp_path / "tok")
    listen, port = f"127.0.0.1:{_free_port()}", _free_port()
    (tmp_path / "exp.yaml").write_text(
        f"model: {SPEC}\nrounds: 3\ndata: {{clients: 2}}\nbackend: grpc\n"
        "privacy: {dp_fedavg: {clip: 5.0, noise_multiplier: 0.3, sample_rate: 1.0}}\n")
    gate = threading.Event()  # holds round 3 until the endpoint has been read mid-run
    errors: list[BaseException] = []

    def server():
        try:
            fl_cmds.fl_server(Console(file=io.StringIO()), config=tmp_path / "exp.yaml",
                              listen=listen, token_file=tmp_path / "tok",
                              test_data=tmp_path / "test.npz", min_clients=None,
                              round_timeout=60, wait_clients=60, metrics_port=port)
        except BaseException as e:  # the test thread reports it
            errors.append(e)

    devices = []
    for cid in range(2):
        x, y = task.data.client(cid)
        base = TorchClient(SPEC, x, y, cid).as_fit_fn()

        def fit(params, config, round_num, base=base):
            if round_num == 3:
                gate.wait(60)
            return base(params, config, round_num)

        devices.append(FLClient(listen, token, cid, fit=fit, num_examples=len(y),
                                model_spec=SPEC, retry_max_s=0.5))
    threads = [threading.Thread(target=server)] + [threading.Thread(target=d.run)
                                                   for d in devices]
    for t in threads:
        t.start()
    try:
        seen: dict[str, float] = {}
        end = time.monotonic() + 120
        while seen.get("edgeweave_fl_round", 0) < 2:
            assert time.monotonic() < end and not errors, errors
            with contextlib.suppress(OSError):  # not listening yet
                seen = _scrape(port)
            time.sleep(0.1)
    finally:
        gate.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert seen["edgeweave_fl_round"] == 2
    assert seen["edgeweave_fl_clients_total{outcome=selected}"] == 4
    assert seen["edgeweave_fl_clients_total{outcome=reported}"] == 4
    assert seen["edgeweave_fl_clients_total{outcome=dropped}"] == 0
    assert seen["edgeweave_fl_round_clients{outcome=reported}"] == 2
    assert seen["edgeweave_fl_clients_connected"] == 2
    model_bytes = sum(v.numel() * 4 for v in task.init_params().values())
    assert seen["edgeweave_fl_bytes_total{direction=up}"] == 4 * model_bytes
    assert seen["edgeweave_fl_bytes_total{direction=down}"] == 4 * model_bytes
    assert seen["edgeweave_fl_round_seconds_count"] == 2
    assert seen["edgeweave_fl_round_seconds_last"] > 0
    assert 0.1 < seen["edgeweave_fl_test_accuracy"] <= 1
    eps = seen["edgeweave_fl_privacy_epsilon{mechanism=dp_fedavg}"]
    assert 0 < eps < math.inf
    with pytest.raises(OSError):  # the server finished: its endpoint is gone with it
        _scrape(port)


def test_metrics_count_dropped_clients_and_name_a_busy_port():
    m = FLMetrics()
    rec = RoundRecord(round=1, clients=3, train_loss=0.5, test_loss=math.nan,
                      test_acc=math.nan, bytes_up=10, bytes_down=20, wall_s=0.1,
                      extra={"selected": 6, "failed": 2, "late": 1})
    assert round_outcomes(rec) == {"selected": 6, "reported": 3, "dropped": 3}
    m.observe(rec)
    port = m.serve_http(0)
    try:
        got = _scrape(port)
        assert got["edgeweave_fl_clients_total{outcome=dropped}"] == 3
        assert math.isnan(got["edgeweave_fl_test_accuracy"])  # not evaluated yet
        with pytest.raises(TrainError, match=f"--metrics-port {port}: cannot listen"):
            FLMetrics().serve_http(port)
    finally:
        m.close()
