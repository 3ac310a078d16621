"""A cluster's devices as local processes: one worker per device, dilated to its hardware.

As :class:`~edgeweave.runtime.lab.LocalLab` does for edge and cloud: each device is ``python -m
edgeweave.runtime.cluster.worker`` on a loopback port the OS picks, sharing a fresh bearer
token, and is terminated on exit. The dilation of each device is its hardware's speed against
this host's (:func:`~edgeweave.runtime.session.hardware_dilation`), so two rpi4 and an rpi3 run
at their own speeds.

The workers keep glibc's default allocator. Forcing every tensor over 64 KiB into its own
mapping (``MALLOC_MMAP_THRESHOLD_=65536``, which the lab once set so a worker's RSS dropped as
soon as a tile's tensors were freed) makes each feature map page-fault afresh: on this host it
took resnet18's tiles from 60 to 90-117 ms of CPU time, and the dilation multiplies that by the
device's factor (7.8 for an rpi4), so every emulated device ran ~1.7x slower than its profile.
The memory benchmark measures a tile's RSS in a process of its own
(benchmarks/_tile_rss.py), where that setting belongs; a worker's peak RSS here is glibc's
high-water mark (what its tiles held at most, plus what the allocator kept for reuse).
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edgeweave.errors import EdgeWeaveError
from edgeweave.profile import Profile
from edgeweave.runtime.lab import LabNode, start_process, stop_all
from edgeweave.runtime.session import hardware_dilation
from edgeweave.security import generate_token, write_token
from edgeweave.topology import Fleet

WORKER = "edgeweave.runtime.cluster.worker"


def device_dilations(profile: Profile, fleet: Fleet, devices: list[str]) -> dict[str, float]:
    """Each device's time dilation on this host."""
    return {name: hardware_dilation(profile, fleet.node(name).hardware) for name in devices}


@dataclass
class ClusterLab:
    """``with ClusterLab({"pi4-0": 9.3, "pi3-0": 27.8}) as lab: lab.targets[...]``."""

    dilations: dict[str, float]
    models: tuple[str, ...] = ()
    startup_timeout_s: float = 120.0
    nodes: dict[str, LabNode] = field(default_factory=dict)
    token: str = ""  # given: the token the gateway's other peers (edge, cloud) accept too
    _dir: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> ClusterLab:
        self._dir = tempfile.TemporaryDirectory(prefix="edgeweave-cluster-")
        self.token = write_token(Path(self._dir.name) / "token",
                                 self.token or generate_token())
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(self.dilations))) as pool:
                started = list(pool.map(self._launch, self.dilations))
            self.nodes.update((n.role, n) for n in started)
        except BaseException:
            self.close()
            raise
        return self

    def _launch(self, device: str) -> LabNode:
        assert self._dir is not None
        args = ["-m", WORKER, "--name", device, "--listen", "127.0.0.1:0", "--token-file",
                str(Path(self._dir.name) / "token"), "--dilation",
                f"{self.dilations[device]:.6g}"]
        for model in self.models:
            args += ["--model", model]
        return start_process(device, args, self.startup_timeout_s)

    def start(self, device: str, dilation: float | None = None) -> str:
        """Start (or restart) ``device``'s worker, e.g. a device joining late; its target."""
        if dilation is not None:
            self.dilations[device] = dilation
        if device not in self.dilations:
            raise EdgeWeaveError(f"lab: no dilation for device {device!r}")
        self.nodes[device] = self._launch(device)
        return self.nodes[device].target

    @property
    def targets(self) -> dict[str, str]:
        return {name: node.target for name, node in self.nodes.items()}

    def kill(self, device: str) -> None:
        """Crash a device (SIGKILL), for fault tests."""
        self.nodes[device].kill()

    def close(self) -> None:
        stop_all(self.nodes.values())
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __exit__(self, *exc: object) -> None:
        self.close()
