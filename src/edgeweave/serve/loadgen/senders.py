"""Several sender processes playing one open-loop schedule together.

One Python process sends, receives and books every request under one GIL: for a small model at
hundreds of requests a second its per-request work (about 0.3-0.5 ms with gRPC) made it fall
behind its own schedule by up to a second on a busy 2-core host, so "200% load" arrived late
and in bursts (benchmarks/serving.py, digits tenants). `SenderPool` starts `processes` sender
processes once (spawned: gRPC must not be forked) and, for each run, hands each one the
arrivals of its share of the logical devices (device `client % processes`), so every device
keeps to one process and its connections, as devices behind one gateway each would. All of
them start on the same instant of the host's monotonic clock (shared by every process), so
their records merge into one run: send times on one time line, each request ended one way, and
the run's lag the worst of any sender's (reported, never hidden).

The target each process sends to is made there by `factory` (picklable, e.g. a
`functools.partial` of a module-level function), since connections cannot cross processes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple
from multiprocessing.connection import Connection

from edgeweave.errors import ServeError
from edgeweave.serve.loadgen.arrivals import Arrival
from edgeweave.serve.loadgen.driver import Fallback, Record, Run, Target, open_loop

#: Seconds between handing out a run and its start: every process has its arrivals by then.
HEAD_START_S = 0.3


class SenderPool:
    """`processes` sender processes, each with its own `factory()` target; see module doc."""

    def __init__(self, factory: Callable[..., Target], processes: int = 2,
                 start_timeout_s: float = 120.0):
        if not 1 <= processes <= 64:
            raise ServeError(f"sender processes {processes}: expected 1 to 64")
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        try:
            for _ in range(processes):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=_sender, args=(theirs, factory), daemon=True)
                proc.start()
                theirs.close()
                self.conns.append(mine)
                self.procs.append(proc)
            for conn in self.conns:
                self._answer(conn, start_timeout_s)
        except BaseException:
            self.close()
            raise

    def _answer(self, conn: Connection, timeout_s: float):
        if not conn.poll(timeout_s):
            raise ServeError(f"a load generator's sender process did not answer within "
                             f"{timeout_s:.0f} s")
        kind, value = conn.recv()
        if kind == "error":
            raise ServeError(f"a load generator's sender process failed: {value}")
        return value

    def open_loop(self, arrivals: Sequence[Arrival], slo_s: Mapping[str, float],
                  fallback: Fallback | None = None, priority: int = 0, drain_s: float = 30.0,
                  duration_s: float | None = None, **options: object) -> Run:
        """`driver.open_loop` over the processes, each sending its devices' arrivals to a
        fresh `factory(**options)` (what one run's devices learn of a node does not carry into
        the next)."""
        n = len(self.conns)
        start = time.monotonic() + HEAD_START_S
        for k, conn in enumerate(self.conns):
            share = [a for a in arrivals if a.client % n == k]
            conn.send(("open", (share, dict(slo_s), fallback or Fallback(), priority, drain_s,
                                start, options)))
        records: list[Record] = []
        lag = 0.0
        for conn in self.conns:
            rows, sender_lag = self._answer(conn, drain_s + (arrivals[-1].at if arrivals
                                                             else 0.0) + 120.0)
            records += [Record(*row) for row in rows]
            lag = max(lag, sender_lag)
        records.sort(key=lambda r: r.sent)
        span = duration_s or (arrivals[-1].at if arrivals else 0.0)
        return Run(records, span, lag)

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("quit", None))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self.conns:
            conn.close()
        self.conns, self.procs = [], []

    def __enter__(self) -> SenderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sender(conn: Connection, factory: Callable[..., Target]) -> None:
    """One sender process: check it can make its target, then play each run it is handed."""
    try:
        factory()
    except Exception as e:  # said to the parent, which raises it as a ServeError
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            kind, args = conn.recv()
        except EOFError:
            return
        if kind != "open":
            return
        share, slo_s, fallback, priority, drain_s, start, options = args
        try:
            target = factory(**options)
            run = open_loop(target, share, slo_s, fallback, priority, drain_s, start_at=start)
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))
            continue
        conn.send(("done", ([astuple(r) for r in run.records], run.lag_s)))
