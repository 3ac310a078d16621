"""The node side of incremental upload: HaveChunks, PutChunks and DeployFromChunks.

Chunks arrive ahead of any stage (IONN uploads a model's layers while the device is already
answering queries), so each is checked on its own before it is stored: the first PutChunks
message names a model from this node's registry and its input shape, and every chunk must be a
chunk of one of that model's weights on the grid of :mod:`edgeweave.runtime.chunks` (known
weight name, offset on the grid, exactly the chunk's size), its name 64 hex digits and its bytes
hashing to that name. A chunk whose bytes do not hash to its name is not stored and is listed in
the reply for the device to send again; any other mismatch ends the call (INVALID_ARGUMENT).
A chunk names its weight's encoding (raw, fp16 or per-channel int8, `codec.weights`): the grid
is that of the encoded bytes, whose size follows from the weight's dtype and shape.

A stage is then built from chunks this node holds: DeployFromChunks carries the stage's digest
and recipe (as Deploy's first message) and its chunk digests, weights in name order. The chunks
are read back (each re-checked against its name: a chunk damaged on disk is deleted and the
call refused, so the device sends it again), fed through Deploy's own checks (order, exact
metadata and sizes, the stage digest over the recipe and every byte) and built by the same code.
Encoded weights are decoded first (each checked to be exactly its encoding's size, its int8
scales finite): the digest then covers the weights the stage will run.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from edgeweave.codec import CodecError
from edgeweave.codec.weights import WEIGHT_CODECS, decode_weight, encoded_nbytes, weight_codec
from edgeweave.runtime.chunk_store import ChunkStore
from edgeweave.runtime.chunks import CHUNK_BYTES, chunk_count, chunk_size, is_digest
from edgeweave.runtime.deploy import MB, Deployed, Deployer, DeployRefused, invalid
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.recipe import SLICE_BYTES, StageRecipe, WeightSpec, tensor_pieces, weights_of

#: Digests one HaveChunks may ask about (AlexNet has 250 chunks, VGG-16 about 530).
MAX_HAVE = 4096
#: Refused digests listed in one PutChunks reply; more refusals end the call.
MAX_REFUSED = 64


def _missing(what: str, count: int, total: int) -> DeployRefused:
    return DeployRefused(grpc.StatusCode.FAILED_PRECONDITION, "missing_chunks",
                         f"{count} of the {total} chunks {what} are not on this node (never "
                         f"sent, evicted under --chunk-budget-mb, or damaged on disk); send "
                         f"them with PutChunks")


class ChunkDeployer:
    """See module doc; ``deployer`` builds stages, ``chunks`` holds what has arrived."""

    def __init__(self, deployer: Deployer, chunks: ChunkStore):
        self.deployer, self.chunks = deployer, chunks

    def have(self, req: pb.HaveChunksRequest) -> pb.HaveChunksReply:
        if len(req.digests) > MAX_HAVE:
            raise invalid("bad_chunks", f"digests: at most {MAX_HAVE} per HaveChunks, got "
                                        f"{len(req.digests)}")
        _check_digests(req.digests, "digests")
        return pb.HaveChunksReply(missing=self.chunks.missing(req.digests))

    def put(self, stream: Iterator[pb.PutChunksRequest]) -> pb.PutChunksReply:
        head = next(stream, None)
        if head is None:
            raise invalid("bad_chunks", "empty PutChunks stream")
        if not head.model:
            raise invalid("bad_chunks", "the first PutChunks message names no model")
        graph = self.deployer.graph(head.model, head.input_shape)
        specs = {spec.name: spec for spec, _ in weights_of(graph.module)}
        reply = pb.PutChunksReply()
        refused = 0
        for msg in _rest(head, stream):
            for chunk in msg.chunks:
                if self._store(chunk, specs):
                    reply.stored += 1
                    continue
                refused += 1
                if refused > MAX_REFUSED:
                    raise invalid("bad_chunks", f"more than {MAX_REFUSED} chunks in one call "
                                                f"did not hash to their digests")
                reply.refused.append(chunk.digest)
        return reply

    def _store(self, chunk: pb.WeightChunk, specs: dict[str, WeightSpec]) -> bool:
        """Check one chunk's claims against the model, then store it; False if its bytes do
        not hash to its digest (nothing stored)."""
        spec = specs.get(chunk.weight)
        if spec is None:
            raise invalid("bad_chunks", f"weight {chunk.weight[:80]!r} is not one of the "
                                        f"model's {len(specs)} parameters and buffers")
        codec = _codec(chunk.codec, "codec")
        nbytes = encoded_nbytes(codec, spec.dtype, spec.shape)
        if weight_codec(codec, spec.dtype, spec.shape) != codec:
            raise invalid("bad_chunks", f"weight {spec.name!r} ({spec.dtype} "
                                        f"{list(spec.shape)}) does not travel as {codec}")
        size = chunk_size(nbytes, chunk.offset)
        if size is None:
            raise invalid("bad_chunks", f"weight {spec.name!r} ({nbytes} bytes): no chunk "
                                        f"starts at offset {chunk.offset} (chunks start every "
                                        f"{CHUNK_BYTES} bytes)")
        if len(chunk.data) != size:
            raise invalid("bad_chunks", f"weight {spec.name!r}: the chunk at offset "
                                        f"{chunk.offset} has {size} bytes, got {len(chunk.data)}")
        _check_digests([chunk.digest], "digest")
        return self.chunks.put(chunk.digest, chunk.data)

    def deploy(self, req: pb.DeployFromChunksRequest, can_forward: bool) -> Deployed:
        name, hops = req.name[:120], max(0, req.hops_ahead)
        cached = self.deployer.cached(req.stage_digest, name, hops, can_forward,
                                      "DeployFromChunks")
        if cached is not None:
            return cached
        if not req.HasField("recipe"):
            raise invalid("bad_recipe", "DeployFromChunks carries no recipe")
        recipe = StageRecipe.from_proto(req.recipe)
        blueprint = self.deployer.blueprint(recipe, name)
        self.deployer.check_size(blueprint.nbytes,
                                 (self.chunks.budget, "--chunk-budget-mb"))
        codec = _codec(req.weight_codec, "weight_codec")
        want = sum(chunk_count(encoded_nbytes(codec, w.dtype, w.shape))
                   for w in blueprint.expected)
        if len(req.chunks) != want:
            raise invalid("bad_chunks", f"the stage's {len(blueprint.expected)} weights "
                                        f"({blueprint.nbytes / MB:.1f} MiB) are {want} chunks; "
                                        f"the request lists {len(req.chunks)}")
        _check_digests(req.chunks, "chunks")
        missing = self.chunks.missing(req.chunks)
        if missing:
            raise _missing("of the stage", len(set(missing)), len(set(req.chunks)))
        return self.deployer.build_from(recipe, req.stage_digest, blueprint,
                                        self._slices(blueprint.expected, list(req.chunks),
                                                     codec), name, hops)

    def _slices(self, expected: list[WeightSpec], digests: list[str], codec: str
                ) -> Iterator[pb.WeightSlice]:
        """The stage's weights as Deploy slices, read chunk by chunk from disk (an encoded
        weight whole, then decoded)."""
        it = iter(digests)
        for spec in expected:
            used = weight_codec(codec, spec.dtype, spec.shape)
            chunks = self._chunks(spec, encoded_nbytes(used, spec.dtype, spec.shape), it)
            pieces: Iterator[tuple[int, bytes]]
            if used == "none":
                pieces = ((k * CHUNK_BYTES, data) for k, data in enumerate(chunks))
            else:
                try:
                    weight = decode_weight(used, b"".join(chunks), spec.dtype, spec.shape)
                except CodecError as e:
                    raise invalid("bad_chunks", f"weight {spec.name!r}: {e}") from None
                pieces = tensor_pieces(weight, SLICE_BYTES)
            for offset, data in pieces:
                yield pb.WeightSlice(name=spec.name, dtype=spec.dtype if offset == 0 else "",
                                     shape=list(spec.shape) if offset == 0 else [],
                                     offset=offset, data=data)

    def _chunks(self, spec: WeightSpec, nbytes: int, digests: Iterator[str]
                ) -> Iterator[bytes]:
        """One weight's ``nbytes`` upload bytes, chunk by chunk, each re-checked."""
        for k in range(chunk_count(nbytes)):
            digest, offset = next(digests), k * CHUNK_BYTES
            data = self.chunks.read(digest)
            if data is None:
                raise _missing(f"of weight {spec.name!r}", 1, chunk_count(nbytes))
            if len(data) != chunk_size(nbytes, offset):
                raise invalid("bad_chunks", f"chunk {digest[:12]} listed at offset {offset} "
                                            f"of weight {spec.name!r} has {len(data)} "
                                            f"bytes, not {chunk_size(nbytes, offset)}")
            yield data


def _rest(head: pb.PutChunksRequest, stream: Iterator[pb.PutChunksRequest]
          ) -> Iterator[pb.PutChunksRequest]:
    yield head
    for msg in stream:
        if msg.model or msg.input_shape:
            raise invalid("bad_chunks", "only the first PutChunks message names the model")
        yield msg


def _codec(name: str, field: str) -> str:
    """A weight encoding a peer names ("" is raw)."""
    if name in ("", "none"):
        return "none"
    if name not in WEIGHT_CODECS:
        raise invalid("bad_chunks", f"{field}: {name[:40]!r} is not a weight encoding (none, "
                                    f"fp16 or int8)")
    return name


def _check_digests(digests: object, field: str) -> None:
    for d in digests:  # type: ignore[attr-defined]
        if not is_digest(d):
            raise invalid("bad_chunks", f"{field}: {d[:80]!r} is not a chunk digest (64 "
                                        f"lowercase hex digits, sha256)")
