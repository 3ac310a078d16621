"""Real kernel bandwidth shaping between OS processes, with Linux network namespaces.

:class:`NetLab` builds a chain of namespaces for a path of hops, e.g. device -> edge -> cloud,
joins neighbours with a veth pair per hop and shapes *each direction* of every veth with a
``tbf`` qdisc, so processes started in the namespaces (:meth:`NetLab.popen`) talk over TCP at
the shaped rates. Everything it creates is named ``<prefix>-<node>`` (prefix starting with
``ew``); the veths are created directly inside the namespaces, never in the host's, so deleting
the namespaces deletes them too and the host's own interfaces and routes are never touched.

Addressing: hop ``i`` (between ``nodes[i]`` and ``nodes[i+1]``) is ``10.201.<i+1>.0/24``, the
left node ``.1`` and the right node ``.2``. With ``forward=True`` (default) the middle nodes
forward IPv4 (a sysctl inside their own namespace only) and every node has routes to every hop
subnet, so any node can reach any address; EdgeWeave's runtime forwards at the application layer
anyway (device talks to edge, edge to cloud).

Round-trip time: this kernel has no ``netem``, so the lab cannot add propagation delay. NetLab
records each hop's RTT and exposes it as :meth:`NetLab.rtt_ms`; the runtime's link layer adds it
(see :class:`edgeweave.runtime.shaper.LinkShaper`). The wire itself adds only queueing delay,
at most ``queue_ms`` per direction per hop.

Requires root (CAP_NET_ADMIN and CAP_SYS_ADMIN), ``ip`` and ``tc`` from iproute2 and the
``sch_tbf`` qdisc; :func:`netns_available` probes all of that. When it says no, use the
in-process :class:`~edgeweave.runtime.shaper.LinkShaper` instead.

The ``ip``/``tc`` commands, the probe and the cleanup of leftovers are
:mod:`edgeweave.runtime.netns`; this module is the lab itself (naming, addressing, building,
shaping, teardown).
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from edgeweave.runtime.netns import (
    NetLabError,
    check_prefix,
    cleanup,
    kill_namespace_processes,
    list_namespaces,
    netns_available,
    run_command,
    tbf_burst_bytes,
)
from edgeweave.runtime.shaper import TraceLike, TraceReplay

# the host-side commands live in edgeweave.runtime.netns; these names are offered here too
__all__ = [
    "NetLab",
    "NetLabError",
    "cleanup",
    "netns_available",
    "tbf_burst_bytes",
]

_NODE_RE = re.compile(r"^[A-Za-z0-9_.]{1,32}$")
_SUBNET = "10.201"


class NetLab:
    """A chain of network namespaces joined by shaped veth pairs; a context manager.

    ``NetLab(["device", "edge", "cloud"], hops=[(20, 10), (80, 40)])`` builds namespaces
    ``ew-device``, ``ew-edge``, ``ew-cloud``; hop 0 (device <-> edge, 10.201.1.0/24) shaped to
    20 Mbit/s each way and hop 1 (edge <-> cloud, 10.201.2.0/24) to 80 Mbit/s. ``hops[i]`` is
    ``(mbps, rtt_ms)``; the RTT is *recorded only* (no netem here): read it with
    :meth:`rtt_ms` and add it in the link layer.

    The lab is built on :meth:`start` (or entering the ``with`` block) and everything, including
    processes started with :meth:`popen` and trace replays, is removed by :meth:`close`, which
    is also called if building fails half-way.
    """

    def __init__(
        self,
        nodes: Sequence[str],
        hops: Sequence[tuple[float, float]],
        prefix: str = "ew",
        forward: bool = True,
        queue_ms: float = 50.0,
    ) -> None:
        check_prefix(prefix)
        nodes = list(nodes)
        if len(nodes) < 2:
            raise NetLabError(f"a lab needs at least two nodes, got {nodes}")
        for node in nodes:
            if not _NODE_RE.match(node):
                raise NetLabError(
                    f"node name {node!r} is not allowed: use 1-32 letters, digits, '_' or '.'"
                )
        if len(set(nodes)) != len(nodes):
            raise NetLabError(f"node names must be unique, got {nodes}")
        if len(hops) != len(nodes) - 1:
            raise NetLabError(
                f"{len(nodes)} nodes need {len(nodes) - 1} hops, got {len(hops)}: {list(hops)}"
            )
        if len(hops) > 250:
            raise NetLabError(f"at most 250 hops fit in {_SUBNET}.0.0/16, got {len(hops)}")
        self._mbps: list[float] = []
        self._rtt: list[float] = []
        for i, hop in enumerate(hops):
            mbps, rtt = (float(v) for v in hop)
            if not (math.isfinite(mbps) and mbps > 0):
                raise NetLabError(f"hop {i}: mbps must be a finite number > 0, got {hop[0]!r}")
            if not (math.isfinite(rtt) and rtt >= 0):
                raise NetLabError(f"hop {i}: rtt_ms must be a finite number >= 0, got {hop[1]!r}")
            self._mbps.append(mbps)
            self._rtt.append(rtt)
        if not (math.isfinite(queue_ms) and queue_ms > 0):
            raise NetLabError(f"queue_ms must be > 0, got {queue_ms!r}")
        self.nodes = nodes
        self.prefix = prefix
        self.forward = forward
        self.queue_ms = float(queue_ms)
        self._lock = threading.Lock()
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._replays: dict[int, TraceReplay] = {}
        self._started = False
        self._closed = False

    # -- naming ---------------------------------------------------------------------------

    def namespace(self, node: str) -> str:
        """The namespace name of ``node``: ``<prefix>-<node>``."""
        self._index(node)
        return f"{self.prefix}-{node}"

    def _index(self, node: str) -> int:
        try:
            return self.nodes.index(node)
        except ValueError:
            raise NetLabError(f"unknown node {node!r}; this lab has {self.nodes}") from None

    def _check_hop(self, hop_index: int) -> None:
        if not 0 <= hop_index < len(self._mbps):
            raise NetLabError(
                f"hop index {hop_index} out of range; this lab has hops 0..{len(self._mbps) - 1}"
            )

    def interface(self, hop_index: int, node: str) -> str:
        """Name, inside ``node``'s namespace, of its veth end on hop ``hop_index``."""
        self._check_hop(hop_index)
        i = self._index(node)
        if i == hop_index:
            peer = self.nodes[hop_index + 1]
        elif i == hop_index + 1:
            peer = self.nodes[hop_index]
        else:
            raise NetLabError(f"node {node!r} is not an end of hop {hop_index}")
        return f"h{hop_index}-{peer}"[:15]

    def _hop_address(self, hop_index: int, side: int) -> str:
        return f"{_SUBNET}.{hop_index + 1}.{side + 1}"

    def address(self, node: str, from_node: str | None = None) -> str:
        """The IP address other nodes use to reach ``node``.

        With ``from_node``, the address of ``node``'s interface facing ``from_node`` (for a
        neighbour: the far end of their shared veth). Without it, the address on ``node``'s
        first hop; with ``forward=True`` every node can reach it.
        """
        i = self._index(node)
        if from_node is not None:
            j = self._index(from_node)
            if j == i:
                raise NetLabError(f"from_node {from_node!r} is the node itself")
            return self._hop_address(i - 1, 1) if j < i else self._hop_address(i, 0)
        return self._hop_address(i - 1, 1) if i > 0 else self._hop_address(0, 0)

    def rtt_ms(self, hop_index: int) -> float:
        """Round-trip time of hop ``hop_index`` in ms; NOT applied on the wire (no netem)."""
        self._check_hop(hop_index)
        return self._rtt[hop_index]

    def mbps(self, hop_index: int) -> float:
        """The rate hop ``hop_index`` is currently shaped to, in Mbit/s (each direction)."""
        self._check_hop(hop_index)
        return self._mbps[hop_index]

    @property
    def hop_count(self) -> int:
        return len(self._mbps)

    # -- building -------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> NetLab:
        """Build the namespaces, veths, addresses, routes and qdiscs (idempotent)."""
        if self._closed:
            raise NetLabError("this NetLab was closed; build a new one")
        if self._started:
            return self
        existing = set(list_namespaces())
        clash = [self.namespace(n) for n in self.nodes if self.namespace(n) in existing]
        if clash:
            raise NetLabError(
                f"namespaces {clash} already exist (another lab, or a crashed run); "
                f"use another prefix, or remove them with `edgeweave netlab --cleanup"
                f"{'' if self.prefix == 'ew' else ' --prefix ' + self.prefix}` (in Python: "
                f"edgeweave.runtime.netlab.cleanup({self.prefix!r}))"
            )
        self._started = True
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        for node in self.nodes:
            ns = self.namespace(node)
            run_command(["ip", "netns", "add", ns])
            self._created.append(ns)
            run_command(["ip", "-n", ns, "link", "set", "lo", "up"])
        for i in range(self.hop_count):
            left, right = self.nodes[i], self.nodes[i + 1]
            lns, rns = self.namespace(left), self.namespace(right)
            lif, rif = self.interface(i, left), self.interface(i, right)
            # Created directly inside the namespaces: nothing ever appears in the host's.
            run_command(
                ["ip", "link", "add", lif, "netns", lns, "type", "veth",
                 "peer", "name", rif, "netns", rns]
            )  # fmt: skip
            for ns, ifname, side in ((lns, lif, 0), (rns, rif, 1)):
                run_command(["ip", "-n", ns, "addr", "add", f"{self._hop_address(i, side)}/24",
                      "dev", ifname])  # fmt: skip
                # No GSO/TSO: tbf would otherwise take 64 KB super-packets and split them at
                # enqueue, tail-dropping whole trains; TCP then loses ~20 % of the rate to
                # retransmission timeouts. Per-frame packets keep the queue drop-free.
                run_command(["ip", "-n", ns, "link", "set", ifname, "gso_max_size", "1500",
                      "gso_max_segs", "1"])  # fmt: skip
                run_command(["ip", "-n", ns, "link", "set", ifname, "up"])
                self._tbf(ns, ifname, self._mbps[i], "add")
        if self.forward:
            self._route()

    def _route(self) -> None:
        for idx, node in enumerate(self.nodes):
            ns = self.namespace(node)
            if 0 < idx < len(self.nodes) - 1:
                run_command(
                    ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]
                )
            for hop in range(self.hop_count):
                if hop in (idx - 1, idx):
                    continue  # directly connected
                if hop > idx:  # to the right: via the right neighbour on hop idx
                    via, dev = self._hop_address(idx, 1), self.interface(idx, node)
                else:  # to the left: via the left neighbour on hop idx - 1
                    via, dev = self._hop_address(idx - 1, 0), self.interface(idx - 1, node)
                run_command(["ip", "-n", ns, "route", "add", f"{_SUBNET}.{hop + 1}.0/24",
                      "via", via, "dev", dev])  # fmt: skip

    def _tbf(self, ns: str, ifname: str, mbps: float, verb: str) -> None:
        rate_kbit = max(1, round(mbps * 1000))
        run_command(
            ["tc", "-n", ns, "qdisc", verb, "dev", ifname, "root", "tbf",
             "rate", f"{rate_kbit}kbit", "burst", str(tbf_burst_bytes(mbps)),
             "latency", f"{self.queue_ms:g}ms"]
        )  # fmt: skip

    def _require_running(self) -> None:
        if not self._started or self._closed:
            raise NetLabError("the lab is not running; call start() or use it in a with block")

    # -- using ----------------------------------------------------------------------------

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``node``'s namespace (``ip netns exec``); killed by close()."""
        self._require_running()
        full = ["ip", "netns", "exec", self.namespace(node), *argv]
        proc = subprocess.Popen(full, **kw)
        self._procs.append(proc)
        return proc

    def set_rate(self, hop_index: int, mbps: float) -> None:
        """Re-shape hop ``hop_index`` to ``mbps`` in both directions (``tc qdisc change``)."""
        self._check_hop(hop_index)
        mbps = float(mbps)
        if not (math.isfinite(mbps) and mbps > 0):
            raise NetLabError(f"hop {hop_index}: mbps must be a finite number > 0, got {mbps!r}")
        with self._lock:
            self._require_running()
            for node in self.nodes[hop_index : hop_index + 2]:
                self._tbf(self.namespace(node), self.interface(hop_index, node), mbps, "change")
            self._mbps[hop_index] = mbps

    def replay(
        self,
        hop_index: int,
        trace: TraceLike,
        clock: Callable[[], float] = time.monotonic,
        duration_s: float | None = None,
    ) -> TraceReplay:
        """Replay a bandwidth trace onto hop ``hop_index`` from a daemon thread.

        The first rate is applied before this returns; stop with the returned handle's
        ``stop()`` or :meth:`close`. A ``tc`` failure in the thread ends the replay and is kept
        in the handle's ``error``.
        """
        self._check_hop(hop_index)
        self._require_running()
        old = self._replays.pop(hop_index, None)
        if old is not None:
            old.stop()
        handle = TraceReplay(
            trace,
            lambda mbps: self.set_rate(hop_index, mbps),
            clock=clock,
            duration_s=duration_s,
            name=f"edgeweave-netlab-replay-{hop_index}",
        )
        self._replays[hop_index] = handle
        return handle

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop replays, end lab processes and delete every namespace (idempotent).

        Raises NetLabError if a namespace could not be deleted (after trying all of them).
        """
        if self._closed:
            return
        self._closed = True
        for handle in self._replays.values():
            handle.stop()
        self._replays.clear()
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 2.0
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2.0)
        failures = []
        with self._lock:
            try:
                present = set(list_namespaces())
            except NetLabError:
                present = set(self._created)
            for ns in reversed(self._created):
                if ns not in present:
                    continue  # already gone, e.g. removed by cleanup()
                kill_namespace_processes(ns)
                deleted = run_command(["ip", "netns", "del", ns], check=False)
                if deleted.returncode != 0:
                    failures.append(f"`ip netns del {ns}` (exit {deleted.returncode}): "
                                    f"{deleted.stderr.strip()}")  # fmt: skip
            self._created.clear()
        if failures:
            raise NetLabError("NetLab.close could not delete: " + "; ".join(failures))

    def __repr__(self) -> str:
        hops = ", ".join(
            f"{a}<->{b} {m:g} Mbit/s rtt {r:g} ms"
            for a, b, m, r in zip(self.nodes, self.nodes[1:], self._mbps, self._rtt, strict=False)
        )
        state = "closed" if self._closed else "running" if self._started else "not started"
        return f"NetLab({self.prefix}: {hops}; {state})"
