"""The input-filter scenario on local processes (``edgeweave front filter --processes``): a real
edge node process serves the scenario's reference model with the input filter as its front
(``serve --front``), and each camera's stream is a device asking it over gRPC on loopback
(several streams, several devices, as FFS-VA's many-stream run).

The reference (SqueezeNet 1.0 with an 11-class head) is trained here as in the in-process
scenario (:mod:`.input_filter`, whose footage, accuracy rules and table this reuses). It is
deployed the way a user deploys their own model: the node processes are started with the model
file :mod:`.filter_reference` (``serve --model FILE.py:reference``, operator code the node
imports itself) and the device sends only the trained weights, as raw tensors (a Deploy, never
a pickle). Two node processes run side by side: one serves the reference alone, one with the
filter in front.

Each stream is one fixed camera's footage: training and tuning footage first (the filter's
``learn_frames``: the node keeps them, all answered by the model, then learns the stream's
cascade in the background), then the test footage. While a stream is learning its device keeps
its camera's pace (30 frames/s, re-sending its latest frame) until the node's replies say the
stream's filter is active (``InferReply.filter_state``): frames until active are the learning
frames plus those. The test footage is then sent frame by frame to both nodes, alternating
chunks of 30 frames between them so a busy moment on this shared host falls on both alike:
frames/s is wall clock per node (requests one at a time, loopback round trip included),
accuracy is against the reference-alone node's answers, and the stages each frame reached come
from the replies (``answered_by``, ``filter_step``), with the mean round trip of the frames
each answered (``ms_per_frame``: what a skipped frame still costs, the loopback round trip).
The optimiser's predicted speedup stays on the node (per stream), so the table shows none.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.table import Table
from torch import nn

from edgeweave.adapt.datasets import digits
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import capture_spec
from edgeweave.runtime import tensors
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.whole_model import WholeModel, whole_model
from edgeweave.security import authed_channel
from edgeweave.serve.filter.cascade import DIFFERENCE, Query

from . import filter_reference
from .input_filter import (
    CAMERAS,
    POSITIVE,
    SHAPE,
    judge,
    streams,
    table,
    train_reference,
    window_accuracy,
)

#: The model file the node processes install, and the model name devices deploy by.
MODEL_FILE = f"{Path(filter_reference.__file__).resolve()}:reference"
CHUNK, CAMERA_FPS = 30, 30.0


@dataclass(frozen=True)
class Options:
    occurrence: tuple[float, ...] = (0.1,)
    streams: int = 2  # devices, one camera each
    learn: int = 300  # frames of training and of tuning footage per stream (learn_frames: 2x)
    test: int = 600  # test frames per stream
    epochs: int = 2  # the reference's (short; its held-out query accuracy is in the JSON)
    seed: int = 0
    max_fn: float = 0.01
    max_fp: float = 0.002
    learn_wait_s: float = 600.0  # the most a stream may take to learn


def run_processes(args: Options, progress: Callable[[str], None] = lambda _m: None
                  ) -> tuple[list[Table], dict[str, Any]]:
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    d = digits(seed=args.seed)
    reference, ref_doc = train_reference("squeezenet1_0", args.seed, args.epochs)
    progress(f"reference: {ref_doc}")
    graph = capture_spec(MODEL_FILE)
    graph.module.load_state_dict(reference.state_dict())
    served = whole_model(graph.name, graph=graph)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgeweave-front-") as tmp:
        front = Path(tmp) / "front.yaml"
        front.write_text(yaml.safe_dump({"filter": {
            "positive": list(POSITIVE), "max_fn": args.max_fn, "max_fp": args.max_fp,
            "learn_frames": 2 * args.learn, "seed": args.seed}}))
        node = ["--summary-s", "0"]
        with LocalLab(roles=("edge",), models=(MODEL_FILE,), extra_args={"edge": node}) as a, \
                LocalLab(roles=("edge",), models=(MODEL_FILE,), extra_args={
                    "edge": [*node, "--front", f"{graph.name}={front}"]}) as b:
            alone, filtered = _Node(a, served), _Node(b, served)
            try:
                for occ in args.occurrence:
                    rows.append(_row(alone, filtered, d, occ, args))
                    progress(f"row: {rows[-1]}")
            finally:
                alone.close()
                filtered.close()
    for r in rows:
        judge(r)
    doc = {"reference": ref_doc, "query": "does the frame hold a digit (reference classes 1-10)",
           "max_fn": args.max_fn, "max_fp": args.max_fp, "seed": args.seed,
           "learn_frames": 2 * args.learn, "window_frames": CHUNK, "rows": rows,
           "model_file": MODEL_FILE, "seconds": time.perf_counter() - t0,
           "note": ("measured on local processes: two edge node processes (`edgeweave serve "
                    "--model filter_reference.py:reference`, one with `--front` holding the "
                    "filter), each stream a device asking over gRPC on loopback one frame at a "
                    "time; frames/s is wall clock on this host, alternating 30-frame chunks "
                    "between the nodes; accuracy is against the reference-alone node's answers; "
                    "'learnt after' counts a stream's frames until its filter was active")}
    title = ("input filter on local processes: an edge node process with the filter as the "
             "served model's front vs one serving the reference alone (wall clock, loopback)")
    return [table(rows, title)], doc


class _Node:
    """One node process with the reference deployed on it, asked frame by frame."""

    def __init__(self, lab: LocalLab, served: WholeModel):
        from edgeweave.runtime.proto import edgeweave_pb2 as pb
        from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc

        self.served = served
        self.channel = authed_channel(lab.edge_target, token=lab.token)
        self.stub = pb_grpc.NodeStub(self.channel)
        self.stub.Deploy(served.deploy_stream(pb.ServingConfig(max_batch=1)), timeout=300)

    def ask(self, device: str, frame: torch.Tensor) -> Any:
        import grpc

        req = self.served.request(self.served.encode(frame))
        req.device = device
        try:
            return self.stub.Infer(req, timeout=60)
        except grpc.RpcError as e:
            raise EdgeWeaveError(f"the edge node refused {device}'s frame: {e.code().name}: "
                                 f"{e.details()}") from None

    def close(self) -> None:
        self.channel.close()


#: The query's answer from a reply's logits: the reference's own rule (P(classes 1-10) > 0.5).
_ANSWER = Query(nn.Identity(), POSITIVE, SHAPE)


def _answer(node: _Node, reply: Any) -> int:
    """1: a digit, 0: none (a frame the filter answered: it skips only frames with none)."""
    if not reply.tensors:
        return 0
    logits = tensors.decode(reply.tensors)[node.served.outputs[0]]
    return int(_ANSWER.labels(logits)[0])


def _row(alone: _Node, filtered: _Node, d: Any, occurrence: float, args: Options
         ) -> dict[str, Any]:
    names = [f"camera{i % CAMERAS}-{i}-occ{occurrence:g}" for i in range(args.streams)]
    footage = {s: streams(d, occurrence, i % CAMERAS, args.seed + 500 + i,
                          (args.learn, args.learn, args.test)) for i, s in enumerate(names)}
    learn = {s: torch.cat([f[0].as_float(), f[1].as_float()]) for s, f in footage.items()}
    test = {s: f[2].as_float() for s, f in footage.items()}
    until, waited, states = _learn(filtered, learn, args.learn_wait_s)
    answers: dict[str, dict[str, list[int]]] = {"alone": {s: [] for s in names},
                                                "filtered": {s: [] for s in names}}
    by: list[str] = []  # per frame sent to the filtered node: the step or stage that answered
    ms: dict[str, list[float]] = {"alone": [], "filtered": []}
    for k, start in enumerate(range(0, args.test, CHUNK)):
        order = [("alone", alone), ("filtered", filtered)]
        for which, node in order if k % 2 == 0 else order[::-1]:
            for s in names:
                for i in range(start, min(start + CHUNK, args.test)):
                    t = time.perf_counter()
                    r = node.ask(s, test[s][i:i + 1])
                    ms[which].append((time.perf_counter() - t) * 1000.0)
                    answers[which][s].append(_answer(node, r))
                    if which == "filtered":
                        by.append(r.filter_step if r.answered_by == "filter"
                                  else r.answered_by)
    wall = {w: sum(v) / 1000.0 for w, v in ms.items()}
    truth = {s: np.array(answers["alone"][s]) for s in names}
    got = {s: np.array(answers["filtered"][s]) for s in names}
    all_truth, all_got = np.concatenate(list(truth.values())), np.concatenate(list(got.values()))
    frames = len(all_truth)
    fps, fps_ref = frames / wall["filtered"], frames / wall["alone"]
    reached = np.array(by)
    active = [u for u in until.values() if u is not None]
    return {
        "streams": args.streams, "occurrence": occurrence, "fps": fps, "fps_reference": fps_ref,
        "speedup": fps / fps_ref, "accuracy_frame": float((all_got == all_truth).mean()),
        "accuracy_window": float(np.mean([window_accuracy(got[s], truth[s]) for s in names])),
        "reach_specialised": float((reached != DIFFERENCE).mean()),
        "reach_reference": float((reached == "model").mean()),
        "reference_positive": float(all_truth.mean()),
        "ms_per_frame": {"reference alone": float(np.mean(ms["alone"])), **{
            who: float(np.mean(np.array(ms["filtered"])[reached == who]))
            for who in sorted(set(by))}},
        "frames_until_active": until, "learn_wait_s": waited, "filter_states": states,
        "detail": (f"learnt after {min(active)}-{max(active)} frames" if active
                   else "no stream learnt") + (f" ({len(active)}/{len(until)} streams)"
                                               if len(active) < len(until) else ""),
        "test_streams": [footage[s][2].description for s in names[:1]],
    }


def _learn(node: _Node, learn: dict[str, torch.Tensor], limit_s: float
           ) -> tuple[dict[str, int | None], dict[str, float], dict[str, str]]:
    """Send each stream's learning frames (round robin, as cameras run side by side), then keep
    each at the camera's pace, re-sending its latest frame, until its filter is no longer
    learning: frames until active per stream (None: it ended unfiltered), seconds waited
    after the learning frames, and each stream's final state."""
    n = {s: len(x) for s, x in learn.items()}
    state = {s: "" for s in learn}
    for i in range(max(n.values())):
        for s, x in learn.items():
            if i < n[s]:
                state[s] = node.ask(s, x[i:i + 1]).filter_state
    sent, start = dict(n), time.perf_counter()
    waited = dict.fromkeys(learn, 0.0)
    while any(v == "learning" for v in state.values()):
        if time.perf_counter() - start > limit_s:
            late = ", ".join(s for s, v in state.items() if v == "learning")
            raise EdgeWeaveError(f"the node's filter was still learning streams {late} after "
                                 f"{limit_s:g} s")
        tick = time.perf_counter()
        for s, x in learn.items():
            if state[s] == "learning":
                state[s] = node.ask(s, x[-1:]).filter_state
                sent[s] += 1
                waited[s] = time.perf_counter() - start
        time.sleep(max(0.0, 1.0 / CAMERA_FPS - (time.perf_counter() - tick)))
    until = {s: sent[s] if state[s] == "active" else None for s in learn}
    return until, waited, state
