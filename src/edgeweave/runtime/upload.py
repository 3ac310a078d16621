"""The device side of incremental upload: send the weight chunks a node lacks, resume after a
broken connection, and have the node build stages from the chunks it holds.

Every round first asks the node which chunks it holds (HaveChunks) and sends only the rest
(PutChunks), so a call broken off half-way (a dropped link, a restarted node with its cache dir)
costs at most the chunks in flight: the next round sends what did not arrive. A chunk the node
refused (its bytes did not hash to its name on the way) is still missing, so it is sent again.
Failures the edge may recover from (down, restarting, overloaded, a deadline) are retried after
a growing back-off for up to `patience_s`; any other refusal is an UploadError, and so are
`attempts` rounds in a row that sent every missing chunk and left them missing.

Weights go as ``codec`` (:mod:`edgeweave.codec.weights`: raw, fp16 or per-channel int8, the
planner's choice): a chunk is named by the sha256 of its encoded bytes, and the node builds the
stage from the decoded weights, which is what the device hashes into the stage's digest
(:meth:`ChunkUploader.package`), so the digest check still covers every byte the stage runs.

Chunks pass ``uplink`` one at a time, a token bucket the device's queries reserve too: the
emulated link itself under application shaping; under kernel shaping (netlab) a pacer a little
below the link's rate, so the upload never queues data in the kernel ahead of a query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
import torch

from edgeweave.codec.weights import (
    check_weight_codec,
    decode_weight,
    encode_weight,
    weight_codec,
)
from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime.backoff import Backoff
from edgeweave.runtime.chunk_deploy import MAX_HAVE
from edgeweave.runtime.chunks import ChunkRef, chunk_data, encoded_chunks, weight_chunks
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.recipe import StagePackage, WeightSpec, package
from edgeweave.runtime.server import FALLBACK_CODES
from edgeweave.runtime.shaper import LinkShaper
from edgeweave.security import ClientTLS, authed_channel

log = logging.getLogger("edgeweave.runtime")

#: Chunk bytes per PutChunks call: a call holds one of the node's admission slots, so a long
#: upload gives it back every 8 MiB (67 s at 1 Mbit/s).
PUT_BATCH_BYTES = 8 << 20


class UploadError(EdgeWeaveError):
    """The node refused the upload for good, or never came back within the attempts."""


class UploadStopped(Exception):
    """The uploader was asked to stop (the device has no more queries)."""


@dataclass
class UploadStats:
    """What crossed the link: chunk bytes handed to PutChunks (a broken call's included)."""

    bytes_sent: int = 0
    chunks_sent: int = 0
    chunks_held: int = 0  # found on the node already: never sent
    refused: int = 0  # arrived damaged, sent again
    broken: int = 0  # calls that failed and were resumed


class ChunkUploader:
    """Uploads chunks of ``weights`` (a model's state dict: name -> tensor) for ``model`` at
    ``input_shape`` (the node checks every chunk against its own capture of it), each weight
    encoded as ``codec``."""

    def __init__(self, stub: pb_grpc.NodeStub, model: str, input_shape: Sequence[int],
                 weights: Mapping[str, torch.Tensor], *, uplink: LinkShaper,
                 mbps: float, attempts: int = 6, patience_s: float = 120.0,
                 backoff_s: tuple[float, float] = (0.5, 8.0),
                 stop: threading.Event | None = None, codec: str = "none"):
        self.stub, self.model, self.input_shape = stub, model, list(input_shape)
        self.weights, self.uplink, self.mbps = weights, uplink, mbps
        self.codec = check_weight_codec(codec)
        self._encoded: dict[str, bytes] = {}  # encoded weights (raw ones are made when sent)
        self.attempts, self.patience_s = attempts, patience_s
        self.stop = stop or threading.Event()
        self.stats = UploadStats()
        self._refs: dict[str, list[ChunkRef]] = {}
        self._backoff = Backoff(*backoff_s)
        self._down_since: float | None = None

    def chunks_of(self, names: Iterable[str]) -> list[ChunkRef]:
        """The chunks of these weights, in the given order (hashed once per weight)."""
        out = []
        for name in names:
            if name not in self._refs:
                tensor = self.weights[name]
                spec = WeightSpec(name, _dtype(tensor, name), tuple(tensor.shape))
                used = weight_codec(self.codec, spec.dtype, spec.shape)
                if used == "none":
                    self._refs[name] = weight_chunks(spec, tensor)
                else:
                    self._encoded[name] = encode_weight(used, tensor)
                    self._refs[name] = encoded_chunks(name, self._encoded[name], used)
            out.extend(self._refs[name])
        return out

    def package(self, pkg: StagePackage) -> StagePackage:
        """``pkg`` as the node will build it from this upload's chunks: its weights decoded
        from their encoding, and its digest over those."""
        if self.codec == "none":
            return pkg
        refs = self.chunks_of(spec.name for spec, _ in pkg.weights)
        used = {r.weight: r.codec for r in refs}
        return package(pkg.recipe, [
            (spec, tensor if used[spec.name] == "none" else
             decode_weight(used[spec.name], self._encoded[spec.name], spec.dtype, spec.shape))
            for spec, tensor in pkg.weights])

    def missing(self, refs: Sequence[ChunkRef]) -> list[ChunkRef]:
        """The chunks the node does not hold (asked in batches of MAX_HAVE)."""
        out: list[ChunkRef] = []
        for start in range(0, len(refs), MAX_HAVE):
            batch = refs[start:start + MAX_HAVE]
            reply = self.stub.HaveChunks(pb.HaveChunksRequest(
                digests=[r.digest for r in batch]), timeout=60.0)
            lacking = set(reply.missing)
            out.extend(r for r in batch if r.digest in lacking)
        return out

    def upload(self, refs: Sequence[ChunkRef]) -> None:
        """Until the node holds every chunk of ``refs``; see module doc."""
        wanted, before, stale, clean = len(_unique(refs)), None, 0, False
        while True:
            self._check_stop()
            try:
                todo = _unique(self.missing(refs))
            except grpc.RpcError as e:
                self._failed(e)
                continue
            self._recovered()
            if not todo:
                return
            if before is None:
                self.stats.chunks_held += wanted - len(todo)
            elif len(todo) < before:
                stale = 0
            elif clean:  # everything sent, nothing gained: refused as damaged, or evicted
                stale += 1
                if stale >= self.attempts:
                    raise UploadError(f"the edge still lacks {len(todo)} chunks of "
                                      f"{self.model} after {stale} rounds that sent them all")
            before, clean = len(todo), False
            try:
                for batch in _batches(todo, PUT_BATCH_BYTES):
                    self._put(batch)
                clean = True
            except grpc.RpcError as e:
                self._failed(e)

    def _put(self, batch: Sequence[ChunkRef]) -> None:
        nbytes = sum(r.size for r in batch)
        timeout = 60.0 + 4 * nbytes * 8 / (self.mbps * 1e6)
        reply = self.stub.PutChunks(self._messages(batch), timeout=timeout)
        self.stats.refused += len(reply.refused)

    def _messages(self, batch: Sequence[ChunkRef]) -> Iterator[pb.PutChunksRequest]:
        yield pb.PutChunksRequest(model=self.model, input_shape=self.input_shape)
        for ref in batch:
            if self.stop.is_set():
                return  # the node keeps what arrived; nothing half-sent is stored
            encoded = self._encoded.get(ref.weight)
            data = (chunk_data(self.weights[ref.weight], ref.offset) if encoded is None
                    else encoded[ref.offset:ref.offset + ref.size])
            self.uplink.bucket.consume(len(data))
            self.stats.bytes_sent += len(data)
            self.stats.chunks_sent += 1
            yield pb.PutChunksRequest(chunks=[pb.WeightChunk(
                weight=ref.weight, offset=ref.offset, digest=ref.digest, data=data,
                codec=ref.codec)])

    def _failed(self, e: grpc.RpcError) -> None:
        """A call failed: back off and let the caller retry, unless the edge refused for good
        or has been failing for ``patience_s`` (an edge restarting takes seconds)."""
        code = e.code()
        if code not in FALLBACK_CODES:
            raise UploadError(f"the edge refused the upload of {self.model}: {code.name}: "
                              f"{e.details()}") from None
        self.stats.broken += 1
        now = time.monotonic()
        self._down_since = self._down_since or now
        if now - self._down_since > self.patience_s:
            raise UploadError(f"the edge has failed the upload of {self.model} for "
                              f"{now - self._down_since:.0f} s ({code.name}: {e.details()})"
                              ) from None
        if self.stop.wait(self._backoff.fail()):
            raise UploadStopped

    def _recovered(self) -> None:
        self._down_since = None
        self._backoff.ok()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise UploadStopped

    def deploy(self, pkg: StagePackage, name: str, timeout_s: float = 300.0,
               serving: pb.ServingConfig | None = None) -> pb.DeployReply:
        """Have the node build ``pkg`` (as :meth:`package` made it) from chunks it holds;
        chunks it lacks (evicted, damaged on disk) are uploaded and the build asked for once
        more."""
        refs = self.chunks_of(spec.name for spec, _ in pkg.weights)
        req = pb.DeployFromChunksRequest(stage_digest=pkg.digest, recipe=pkg.recipe.to_proto(),
                                         name=name, chunks=[r.digest for r in refs],
                                         weight_codec=self.codec, serving=serving)
        sent = False
        while True:
            self._check_stop()
            try:
                reply = self.stub.DeployFromChunks(req, timeout=timeout_s)
                self._recovered()
                return reply
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    self._failed(e)
                    continue
                if sent:
                    raise UploadError(f"the edge cannot build stage {name}: {e.details()}"
                                      ) from None
            sent = True
            self.upload(refs)


def warm_edge(target: str, model: str, input_shape: Sequence[int], *,
              token: str | None = None, tls: ClientTLS | None = None,
              timeout_s: float = 120.0) -> threading.Thread:
    """Have the edge capture ``model`` now, in the background (a PutChunks naming it, with no
    chunk): the node checks every chunk against its own capture, which takes seconds for a
    large model (AlexNet: 5-9 s on a busy 2-core host), and the device starts this while it
    profiles and plans, so the first partition's bytes are all its first benefit waits for.
    A failure is only logged: the upload's own first call makes the same capture."""

    def go() -> None:
        try:
            with authed_channel(target, token=token, tls=tls) as channel:
                pb_grpc.NodeStub(channel).PutChunks(iter([pb.PutChunksRequest(
                    model=model, input_shape=list(input_shape))]), timeout=timeout_s)
        except grpc.RpcError as e:
            log.info("warming the edge up for %s failed (%s); the upload will capture it",
                     model, e.code().name)

    thread = threading.Thread(target=go, name="edgeweave-warm-edge", daemon=True)
    thread.start()
    return thread


def _batches(refs: Sequence[ChunkRef], nbytes: int) -> Iterator[list[ChunkRef]]:
    batch: list[ChunkRef] = []
    size = 0
    for ref in refs:
        if batch and size + ref.size > nbytes:
            yield batch
            batch, size = [], 0
        batch.append(ref)
        size += ref.size
    if batch:
        yield batch


def _unique(refs: Sequence[ChunkRef]) -> list[ChunkRef]:
    """One of each digest (identical chunks, e.g. zero-filled ones, travel once)."""
    seen: set[str] = set()
    out = []
    for r in refs:
        if r.digest not in seen:
            seen.add(r.digest)
            out.append(r)
    return out


def _dtype(tensor: torch.Tensor, name: str) -> str:
    from edgeweave.codec.wire import dtype_name

    return dtype_name(tensor.dtype, context=f"weight {name!r}")

