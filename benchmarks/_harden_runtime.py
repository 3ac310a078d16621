"""Issue 12, runtime part: what a hostile peer holding the fleet's token can do to an edge node.

Starts a real edge node (`edgeweave serve` as a subprocess, default settings) and measures:

  bomb     the node's peak RSS growth (VmHWM - VmRSS at start, /proc) while a client sends a
           32 KB zstd payload declared as a 1 GiB float32 tensor, `--bombs` times; and the
           status each request got. Before issue 12 the node inflated it before any check
           (reported: 0.65 -> 2.8 GB).
  stamped  with `--stamped` requests stamped to arrive 15 s from now in flight (same host, same
           clock, so the node waits for the stamp), the latency of a Health call and of a
           normal request (a tiny tensor, no stage), and what the stamped requests got.
           Before: every server thread parked, Health blocked ~14 s.
  sigterm  seconds from SIGTERM to exit after malformed (unparsable) InferStream traffic,
           `--sigterm-runs` nodes; "did not exit" after 20 s (before: 16 of 22 runs hung).

`--server-src DIR` runs the node from another source tree (e.g. /work/main/src, the code
before the fix) with this tree's client, for a before/after comparison.

    PYTHONPATH=src .venv/bin/python benchmarks/_harden_runtime.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import zstandard
from rich.console import Console
from rich.table import Table

from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.shaper import CLOCK_ID
from edgeweave.security import authed_channel, generate_token, write_token

GIB = 1 << 30
MIB = 1 << 20


class Node:
    """`edgeweave serve --role edge` in its own process, on a port the OS picks."""

    def __init__(self, server_src: str | None = None, *extra: str):
        self._dir = tempfile.TemporaryDirectory(prefix="edgeweave-harden-")
        self.token = write_token(Path(self._dir.name) / "token", generate_token())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if server_src:
            env["PYTHONPATH"] = server_src
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeweave", "serve", "--role", "edge", "--listen",
             "127.0.0.1:0", "--token-file", str(Path(self._dir.name) / "token"), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        line = self.proc.stdout.readline()
        if " serving on " not in line:
            self.close()
            raise RuntimeError(f"the node did not start: {line!r}")
        self.target = line.split(" serving on ", 1)[1].split(",")[0].strip()
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.channel = authed_channel(self.target, token=self.token, options=[
            ("grpc.max_send_message_length", 64 * MIB)])
        self.stub = pb_grpc.NodeStub(self.channel)

    def memory_mb(self, field: str) -> float:
        """VmRSS (now) or VmHWM (peak so far) of the node process, MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError(f"no {field} in /proc/{self.proc.pid}/status")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._dir.cleanup()


def bomb_payload() -> bytes:
    """zstd frame of 1 GiB of zeros (content size declared), built in 1 MiB steps: ~32 KB."""
    z = zstandard.ZstdCompressor(level=3, write_content_size=True).compressobj(size=GIB)
    chunk = bytes(MIB)
    return b"".join(z.compress(chunk) for _ in range(GIB // MIB)) + z.flush()


def _request(tensor: pb.Tensor, deliver_at_ns: int = 0) -> pb.InferRequest:
    return pb.InferRequest(request_id="bench", tensors=[tensor],
                           route=[pb.Hop(stage="", needs=[tensor.name])],
                           deliver_at_ns=deliver_at_ns, clock=CLOCK_ID if deliver_at_ns else "")


def _small() -> pb.Tensor:
    return pb.Tensor(name="x", codec="none", dtype="float32", shape=[4], payload=bytes(16))


def _status(call: Any) -> str:
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def _counts(codes: list[str]) -> str:
    return ", ".join(f"{c} x{codes.count(c)}" for c in sorted(set(codes)))


def measure_bomb(server_src: str | None, bombs: int) -> list[dict[str, Any]]:
    payload = bomb_payload()
    bomb = pb.Tensor(name="x", codec="zstd", dtype="float32", shape=[GIB // 4],
                     payload=payload)
    node = Node(server_src)
    try:
        time.sleep(1.0)  # settle after start-up
        start = node.memory_mb("VmRSS")
        codes = [_status(lambda: node.stub.Infer(_request(bomb), timeout=120))
                 for _ in range(bombs)]
        peak = node.memory_mb("VmHWM")
        health = _status(lambda: node.stub.Health(pb.HealthRequest(), timeout=10))
    finally:
        node.close()
    return [
        {"measure": "bomb: payload sent", "value": len(payload) / 1024, "unit": "KB",
         "note": f"declared float32 [{GIB // 4}] = 1 GiB, sent {bombs}x"},
        {"measure": "bomb: node RSS at start", "value": start, "unit": "MB", "note": ""},
        {"measure": "bomb: node peak RSS", "value": peak, "unit": "MB", "note": ""},
        {"measure": "bomb: peak RSS growth", "value": peak - start, "unit": "MB",
         "note": f"replies: {_counts(codes)}; Health after: {health}"},
    ]


def measure_stamped(server_src: str | None, stamped: int, ahead_s: float
                    ) -> list[dict[str, Any]]:
    node = Node(server_src)
    pool = futures.ThreadPoolExecutor(max_workers=stamped)
    try:
        node.stub.Health(pb.HealthRequest(), timeout=30)  # connected and warm
        node.stub.Infer(_request(_small()), timeout=30)
        at = int((time.monotonic() + ahead_s) * 1e9)
        parked = [pool.submit(_status, lambda: node.stub.Infer(_request(_small(), at),
                                                               timeout=ahead_s + 30))
                  for _ in range(stamped)]
        time.sleep(1.0)  # every stamped request has reached the node (or been refused)
        t0 = time.perf_counter()
        health = _status(lambda: node.stub.Health(pb.HealthRequest(), timeout=ahead_s + 10))
        health_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        normal = _status(lambda: node.stub.Infer(_request(_small()), timeout=ahead_s + 10))
        normal_s = time.perf_counter() - t0
        codes = [f.result() for f in parked]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        node.close()
    return [
        {"measure": "stamped: Health latency", "value": health_s * 1000, "unit": "ms",
         "note": f"{health}; {stamped} requests stamped +{ahead_s:g} s in flight"},
        {"measure": "stamped: normal request latency", "value": normal_s * 1000, "unit": "ms",
         "note": normal},
        {"measure": "stamped: stamped requests' replies", "value": float(codes.count("OK")),
         "unit": "served", "note": _counts(codes)},
    ]


def measure_sigterm(server_src: str | None, runs: int) -> list[dict[str, Any]]:
    garbage = b"\xff\xff\xff\xff\x0f" * 3
    ident = lambda b: b  # noqa: E731
    times: list[float | None] = []
    for _ in range(runs):
        node = Node(server_src)
        try:
            call = node.channel.stream_stream("/edgeweave.v1.Node/InferStream",
                                              request_serializer=ident,
                                              response_deserializer=ident)
            for _ in range(5):
                def messages():
                    yield from [garbage] * 4
                    time.sleep(0.1)
                _status(lambda m=messages, c=call: list(c(m(), timeout=10)))
            node.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                node.proc.wait(timeout=20)
                times.append(time.monotonic() - t0)
            except subprocess.TimeoutExpired:
                times.append(None)
        finally:
            node.close()
    done = [t for t in times if t is not None]
    return [{"measure": "sigterm: exit after malformed streams",
             "value": max(done) if done else float("nan"), "unit": "s (slowest)",
             "note": f"{len(done)} of {runs} exited within 20 s (grace 5 s); "
                     f"times {[None if t is None else round(t, 2) for t in times]}"}]


def run(server_src: str | None = None, bombs: int = 3, stamped: int = 40,
        ahead_s: float = 15.0, sigterm_runs: int = 3) -> list[dict[str, Any]]:
    rows = measure_bomb(server_src, bombs)
    rows += measure_stamped(server_src, stamped, ahead_s)
    if sigterm_runs:
        rows += measure_sigterm(server_src, sigterm_runs)
    for row in rows:
        row["server"] = server_src or "this tree"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server-src", default=None, help="run the node from this source tree")
    ap.add_argument("--bombs", type=int, default=3)
    ap.add_argument("--stamped", type=int, default=40)
    ap.add_argument("--ahead-s", type=float, default=15.0)
    ap.add_argument("--sigterm-runs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    rows = run(args.server_src, args.bombs, args.stamped, args.ahead_s, args.sigterm_runs)
    table = Table(title=f"hostile peer vs an edge node ({rows[0]['server']})")
    for col in ("measure", "value", "unit", "note"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for r in rows:
        table.add_row(r["measure"], f"{r['value']:.1f}", r["unit"], r["note"])
    Console().print(table)
    text = json.dumps(rows, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
