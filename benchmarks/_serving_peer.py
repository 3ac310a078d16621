"""Ray Serve as the serving benchmark plays it (`serving.py`): `_serving_ray.py` in the
interpreter that has ray[serve], started on the serving cores, driven by JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from edgeweave.serve.loadgen import Record, Run

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 1000


class RayPeer:
    """`_serving_ray.py` in the peers' interpreter, kept up for one model's whole sweep."""

    def __init__(self, python: str, model: str, shape: tuple[int, ...], replicas: int,
                 max_batch: int, max_queued: int, wait_s: float, factor: float, seed: int,
                 senders: int = 1, sender_cores: set[int] | None = None):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(
            [python, str(ROOT / "benchmarks" / "_serving_ray.py"), "--model", model,
             "--input-shape", ",".join(map(str, shape)), "--replicas", str(replicas),
             "--max-batch", str(max_batch), "--max-queued", str(max_queued),
             "--batch-wait-s", str(wait_s), "--cpus", str(max(replicas, os.cpu_count() or 2)),
             "--dilation", str(factor), "--seed", str(seed), "--senders", str(senders),
             *(["--sender-cores", ",".join(map(str, sorted(sender_cores)))]
               if sender_cores else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=env)
        self.ready = json.loads(self._line())

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Ray Serve process exited ({self.proc.wait()})")
        return line

    def run(self, rate: float, duration: float, seed: int, slo_s: float, drain_s: float) -> Run:
        """An open-loop Poisson load (the same arrivals `poisson` gives EdgeWeave's runs)."""
        return self._play({"rate": rate, "duration": duration, "seed": seed, "slo_s": slo_s,
                           "drain_s": drain_s, "clients": CLIENTS})

    def closed(self, devices: int, duration: float, slo_s: float) -> Run:
        return self._play({"closed": devices, "duration": duration, "slo_s": slo_s,
                           "drain_s": 30.0})

    def _play(self, cmd: dict) -> Run:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        doc = json.loads(self._line())
        records = [Record(m, c, sent, deadline, end, status, refused,
                          float("nan") if lat is None else lat, *rest)
                   for m, c, sent, deadline, end, status, refused, lat, *rest
                   in doc["records"]]
        return Run(records, cmd["duration"], doc["lag_s"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
