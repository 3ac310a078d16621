"""Which of this host's cores the system under test runs on, and which the load generator:
the serving benchmark gives every system the same ones (`--serve-cores`), so that on a host of
two cores the senders' CPU is not taken from the server (the digits tenants' goodput at twice
their capacity was 59% of it with both on both cores: a refusal costs the sender and the node
alike, and the senders then took the node's core).

A process's CPU affinity is inherited by the processes and threads it starts, and Linux sets it
per thread (`sched_setaffinity` on a pid sets that one thread), so: the benchmark (and Ray
Serve's driver) switches every one of its threads to the serving cores, starts the system (the
EdgeWeave node, Ray's GCS, raylet and through it the replicas), and switches back to the load
generator's cores before it starts its sender processes (`spawning_on`). What each process of a
system is allowed to run on is read back from /proc (`allowed`) and put in the JSON, so a pin
that did not take shows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def split(text: str | None, cores: set[int]) -> tuple[set[int], set[int]]:
    """(the serving cores, the load generator's) from `--serve-cores` ("1", "0-1", "2,3"; None:
    the last of this process's cores, the others to the senders); `cores`: the ones allowed.
    With a single core both share it."""
    ordered = sorted(cores)
    if text is None:
        serve = {ordered[-1]}
    else:
        serve = set()
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            try:
                serve |= set(range(int(lo), int(hi or lo) + 1))
            except ValueError:
                serve = set()
                break
        if not serve or not serve <= cores:
            raise SystemExit(f"--serve-cores {text!r}: expected cores of this host's "
                             f"{fmt(cores)} like 1 or 0-1 or 2,3")
    rest = cores - serve
    return serve, rest or set(serve)


def fmt(cores: set[int]) -> str:
    return ",".join(map(str, sorted(cores)))


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of process `pid` to `cores` (threads started later inherit it from the
    thread that starts them)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cores)


@contextlib.contextmanager
def spawning_on(cores: set[int], back: set[int]) -> Iterator[None]:
    """Processes started inside run on `cores`; this process is on `back` afterwards."""
    pin(os.getpid(), cores)
    try:
        yield
    finally:
        pin(os.getpid(), back)


def allowed(pid: int) -> str:
    """The process's Cpus_allowed_list, as the kernel says ("?" if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def tree(pid: int) -> dict[str, str]:
    """`pid` and every process below it: "name pid" -> its Cpus_allowed_list."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        try:
            name = Path(f"/proc/{p}/comm").read_text().strip()
        except OSError:
            continue
        out[f"{name} {p}"] = allowed(p)
        todo += children.get(p, [])
    return out


def pinned(labs: dict[str, Any], ray: Any, pools: dict[str, Any]
           ) -> dict[str, dict[str, str]]:
    """Where each process of the run may run, read back from the kernel (Cpus_allowed_list):
    each system's processes (the node, or Ray's driver, GCS, raylet, replicas and its own
    senders), the benchmark and EdgeWeave's sender processes (`labs`: LocalLab by system, `ray`:
    the RayPeer or None, `pools`: SenderPool by system)."""
    out = {s: tree(lab.nodes["edge"].process.pid) for s, lab in labs.items()}
    if ray is not None:
        out["ray"] = ray.ready.get("cores", {})
    out["load generator"] = {f"benchmark {os.getpid()}": allowed(os.getpid())} | {
        f"{s} sender {p.pid}": allowed(p.pid)
        for s, pool in pools.items() for p in pool.procs if p.pid is not None}
    return out
