"""The host side of a NetLab: the ``ip``/``tc`` commands it is built from, the probe that says
whether this host allows them, and the cleanup of namespaces a crashed run left behind.

Every command goes through :func:`run_command`, which bounds its wait and turns a failure into
one NetLabError naming the command and what it printed. Only names carrying an ``ew`` prefix are
ever created or deleted, so the host's own interfaces and routes are never touched.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence

from edgeweave.errors import EdgeWeaveError

_CMD_TIMEOUT_S = 15.0
_PREFIX_RE = re.compile(r"^ew[a-z0-9]{0,8}$")
# Kernel timer frequency assumed for the classic "burst >= rate / HZ" rule. CONFIG_HZ is 250 on
# Debian kernels and 100..1000 elsewhere; 250 gives the bucket 4 ms of traffic, which also
# absorbs softirq scheduling jitter on a busy 2-core VM without noticeably inflating the rate.
_ASSUMED_HZ = 250
_MIN_BURST_BYTES = 4 * 1540  # four full Ethernet frames


class NetLabError(EdgeWeaveError):
    """Building, shaping or tearing down a network-namespace lab failed."""


def run_command(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command; on failure raise NetLabError naming the command and its stderr."""
    cmd = " ".join(argv)
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise NetLabError(f"`{cmd}` failed: {argv[0]} not found ({exc})") from None
    except subprocess.TimeoutExpired:
        raise NetLabError(f"`{cmd}` failed: no answer within {_CMD_TIMEOUT_S:g} s") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip() or "(no output)"
        raise NetLabError(f"`{cmd}` failed (exit {proc.returncode}): {err}")
    return proc


def tbf_burst_bytes(mbps: float) -> int:
    """Bucket depth for a ``tbf`` at ``mbps``: ``max(rate / HZ, 4 * 1540)`` bytes.

    ``rate / HZ`` (HZ assumed 250): the bucket must hold at least what the link sends between
    two dequeue opportunities, or tbf cannot reach its configured rate. ``4 * 1540``: at least
    a few full frames (MTU 1500 plus Ethernet overhead), so one frame never exceeds the bucket
    and TCP can keep a small train in flight at low rates. Any more would only let an idle link
    burst above its rate: the excess is one bucket per transfer (4 ms of traffic), 2-3 % of a
    150 ms transfer.
    """
    rate_bytes = mbps * 1e6 / 8
    return max(_MIN_BURST_BYTES, math.ceil(rate_bytes / _ASSUMED_HZ))


def list_namespaces() -> list[str]:
    """The network namespaces present on this host."""
    proc = run_command(["ip", "netns", "list"])
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def netns_available() -> tuple[bool, str]:
    """Can this process build a NetLab here? Returns ``(ok, reason)``.

    Checks root, ``ip`` and ``tc`` on PATH, then creates a throwaway namespace, puts a ``tbf``
    qdisc on its loopback and deletes it again.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "network namespaces need root (CAP_NET_ADMIN); running unprivileged"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` (iproute2) is not on PATH"
    probe = f"ew-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        run_command(["ip", "netns", "add", probe])
    except NetLabError as exc:
        return False, f"cannot create a network namespace: {exc}"
    problem = ""
    try:
        run_command(["ip", "-n", probe, "link", "set", "lo", "up"])
        run_command(
            ["tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "tbf",
             "rate", "1mbit", "burst", "10000", "latency", "50ms"]
        )  # fmt: skip
    except NetLabError as exc:
        problem = f"namespace works but shaping does not (tbf qdisc missing?): {exc}"
    try:
        run_command(["ip", "netns", "del", probe])
    except NetLabError as exc:
        problem = problem or f"created namespace {probe} but cannot delete it: {exc}"
    if problem:
        return False, problem
    return True, "root, ip and tc present; namespaces and tbf work"


def check_prefix(prefix: str) -> None:
    """Refuse a prefix that does not mark lab objects as ours (``ew`` + up to 8 characters)."""
    if not _PREFIX_RE.match(prefix):
        raise NetLabError(
            f"prefix {prefix!r} is not allowed: it must start with 'ew' and be at most 10 "
            "lowercase letters/digits, so lab objects are recognisable and safe to clean up"
        )


def kill_namespace_processes(ns: str) -> None:
    """SIGKILL the processes still inside namespace ``ns`` (they were started in our lab)."""
    proc = run_command(["ip", "netns", "pids", ns], check=False)
    for token in proc.stdout.split():
        if token.isdigit() and int(token) != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(token), signal.SIGKILL)


def cleanup(prefix: str = "ew") -> list[str]:
    """Delete leftover namespaces named ``<prefix>-*`` (e.g. from a crashed run).

    Processes still running inside them are killed first. Only names starting with
    ``prefix + "-"`` are touched, so ``cleanup("ew")`` leaves another run's ``ewt1-*`` alone.
    Returns the namespaces deleted; raises NetLabError if some could not be deleted.
    """
    check_prefix(prefix)
    doomed = [ns for ns in list_namespaces() if ns.startswith(prefix + "-")]
    failures = []
    for ns in doomed:
        kill_namespace_processes(ns)
        proc = run_command(["ip", "netns", "del", ns], check=False)
        if proc.returncode != 0:
            failures.append(f"`ip netns del {ns}`: {proc.stderr.strip()}")
    # Veths are created inside the namespaces, but a half-built run on an older iproute2 could
    # leave one in the host namespace: delete host links carrying the prefix too.
    proc = run_command(["ip", "-o", "link", "show"], check=False)
    for line in proc.stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(prefix + "-"):
                run_command(["ip", "link", "del", name], check=False)
    if failures:
        raise NetLabError("cleanup could not delete: " + "; ".join(failures))
    return doomed

