"""A whole local fleet in one call: edge and cloud node servers as real OS processes.

Used by `edgeweave lab`, the tests and the benchmarks. Each node is `python -m edgeweave serve`
on a loopback port the OS picks (read back from the process's first line), sharing a freshly
generated bearer token. Processes are terminated (SIGTERM, then SIGKILL) on exit. ``models``
are model files every node installs (``serve --model``), so a lab can run a user's own model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgeweave.errors import EdgeWeaveError
from edgeweave.security import generate_token, write_token


@dataclass
class LabNode:
    role: str
    process: subprocess.Popen
    target: str

    def kill(self) -> None:
        """Crash the node (SIGKILL), for fault tests."""
        self.process.kill()
        self.process.wait(timeout=10)


def stop_all(nodes: Iterable[LabNode]) -> None:
    """SIGTERM every node at once, then wait for each; one still running after 10 s is
    killed."""
    nodes = list(nodes)
    for node in nodes:
        if node.process.poll() is None:
            node.process.terminate()
    for node in nodes:
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.process.kill()


@dataclass
class LocalLab:
    """`with LocalLab() as lab: lab.edge_target ...` — cloud started first, edge pointed at it."""

    roles: tuple[str, ...] = ("edge", "cloud")
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    startup_timeout_s: float = 60.0
    nodes: dict[str, LabNode] = field(default_factory=dict)
    token: str = ""
    _dir: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> LocalLab:
        self._dir = tempfile.TemporaryDirectory(prefix="edgeweave-lab-")
        token_file = Path(self._dir.name) / "token"
        self.token = write_token(token_file, generate_token())
        try:
            upstream = None
            for role in reversed(self.roles):  # cloud first, so the edge can point at it
                args = ["--role", role, "--name", role, "--listen", "127.0.0.1:0",
                        "--token-file", str(token_file), *self.extra_args.get(role, [])]
                for model in self.models:
                    args += ["--model", model]
                if upstream:
                    args += ["--next", upstream]
                self.nodes[role] = self._start(role, args)
                upstream = self.nodes[role].target
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, role: str, args: list[str]) -> LabNode:
        return start_process(role, ["-m", "edgeweave", "serve", *args], self.startup_timeout_s)

    @property
    def edge_target(self) -> str:
        return self.nodes[self.roles[0]].target

    def kill(self, role: str) -> None:
        """Crash a node (SIGKILL), for fault tests."""
        self.nodes[role].kill()

    def close(self) -> None:
        stop_all(self.nodes.values())
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_process(role: str, args: list[str], timeout_s: float = 60.0,
                  env: dict[str, str] | None = None) -> LabNode:
    """``python ARGS`` as a server process; returns once it prints that it is serving (its
    address is read from that line: ``... serving on HOST:PORT``)."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if " serving on " in line:
                target = line.split(" serving on ", 1)[1].split(",")[0].strip()
                # keep draining its output so a chatty server never blocks on a full pipe
                threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
                return LabNode(role, proc, target)
    except BaseException:  # stopped (SIGTERM, Ctrl-C) while it starts: not left behind
        proc.kill()
        proc.wait()
        raise
    proc.kill()
    rest = proc.stdout.read() if proc.stdout else ""
    raise EdgeWeaveError(f"lab: {role} server did not start: {rest.strip()[-500:]}")


def _drain(stream) -> None:
    for _ in iter(stream.readline, ""):
        pass
