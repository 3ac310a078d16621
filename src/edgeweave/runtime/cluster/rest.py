"""The rest of the model after a cluster's partitioned prefix, where the plan puts it.

The plan places the layers after the prefix on the gateway's device-edge-cloud path
(``Plan.placement``, ``partition.rest_mode``), so the gateway runs them as a device runs its
co-inference plan: the existing runtime client, told that the prefix's values are computed
already (they are the stitched block output, or the layer-wise prefix's values). Layers placed
on the gateway run here, dilated to its hardware; layers on the edge or cloud are forwarded over
the same wire, links and fallbacks as ``edgeweave infer``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from edgeweave.graph import Graph
from edgeweave.plan import Plan
from edgeweave.runtime.client import ClientOptions, CoInferenceClient, Result
from edgeweave.security import ClientTLS


class RestRunner:
    def __init__(self, graph: Graph, plan: Plan, prefix: Sequence[str], *,
                 edge_target: str | None = None, token: str | None = None,
                 tls: ClientTLS | None = None, dilation: float = 1.0,
                 options: ClientOptions | None = None):
        opts = options or ClientOptions()
        opts.device_dilation = dilation
        # the stretch sleeps: the rest shares the gateway's process with its dispatching and
        # results (a busy wait held the GIL, and a core, while the next frames' tiles waited
        # to be cut, sent and stitched: runtime.dilation says the same of a serving node)
        opts.device_spin = False
        self.client = CoInferenceClient(graph, plan, edge_target, token=token, tls=tls,
                                        options=opts, prefix=prefix)
        self._deployed = False

    @property
    def remote(self) -> bool:
        """Whether some of the rest runs on the edge or the cloud."""
        return bool(self.client.deployment.route)

    def run(self, x: torch.Tensor, given: dict[str, torch.Tensor]) -> Result:
        """The model's output from the frame and the prefix's values (stages deployed to the
        edge and cloud with the first frame)."""
        if not self._deployed and self.remote:
            self.client.deploy(x, given)
        self._deployed = True
        return self.client.infer(x, given)


class RestLanes:
    """Where frames' rests run: one lane per device, one frame at a time, as that device would.

    A device runs one thing at a time: its tiles or a frame's rest. So a frame whose rest
    belongs to device D (gathered there) marks D resting at once (``resting``: the gateway
    hands it no tile then), waits until D has finished the tiles it already holds
    (``held(D)``), runs, and frees D (``on_free(D)``, so the gateway gives it work again).
    Run beside D's worker instead, the rest got a second processor the plan does not have: a
    data source ran another source's tiles while it ran its own frame's rest.
    ``run(device, frame) -> (output, note)`` runs one frame's rest; ``answer(frame, output,
    note, start, wait_ms)`` is told the outcome (an exception as the output when it failed).
    The caller calls :meth:`wake` whenever a device's held tasks may have dropped (a result
    in, a device gone), so a waiting lane looks again.
    """

    def __init__(self, run: Callable[[str, Any], tuple[Any, str]],
                 held: Callable[[str], int], on_free: Callable[[str], None],
                 answer: Callable[[str, Any, Any, str, float, float], None],
                 recheck_s: float = 0.05):
        self._run, self._held, self._on_free, self._answer = run, held, on_free, answer
        self._recheck_s = recheck_s  # a lane looks again this often even if not woken
        self._closed = False
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._waiting: Counter[str] = Counter()
        self._lanes: dict[str, tuple[queue.SimpleQueue, threading.Thread]] = {}

    def resting(self) -> set[str]:
        """Devices with a frame's rest waiting or running (no tile goes to them)."""
        with self._lock:
            return {d for d, n in self._waiting.items() if n > 0}

    def put(self, device: str, frame: Any) -> None:
        with self._lock:
            self._waiting[device] += 1
            if device not in self._lanes:
                inbox: queue.SimpleQueue = queue.SimpleQueue()
                thread = threading.Thread(target=self._loop, args=(device, inbox), daemon=True,
                                          name=f"cluster-rest-{device}")
                self._lanes[device] = (inbox, thread)
                thread.start()
            self._lanes[device][0].put(frame)

    def _loop(self, device: str, inbox: queue.SimpleQueue) -> None:
        while True:
            frame = inbox.get()
            if frame is None:
                return
            wait = time.perf_counter()
            with self._changed:
                while self._held(device) > 0 and not self._closed:
                    self._changed.wait(self._recheck_s)
            start = time.perf_counter()
            try:
                output, note = self._run(device, frame)
            except Exception as e:  # the frame fails with its cause; the lane goes on
                output, note = e, ""
            with self._lock:
                self._waiting[device] -= 1
            self._answer(device, frame, output, note, start, (start - wait) * 1000.0)
            self._on_free(device)

    def wake(self) -> None:
        """Some device's held tasks may have dropped: waiting lanes look again."""
        with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        self._closed = True
        self.wake()
        with self._lock:
            lanes = list(self._lanes.values())
        for inbox, _ in lanes:
            inbox.put(None)
        for _, thread in lanes:
            thread.join(timeout=10)
