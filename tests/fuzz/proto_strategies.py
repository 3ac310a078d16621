"""Hypothesis strategies for any protobuf message, built from its descriptor: a field added to a
``.proto`` tomorrow is fuzzed without touching this file.

Two kinds of message come out, mixed:

* generated: every field unset or drawn from boundary-heavy values for its type (empty, NaN,
  +-inf, int64 extremes, huge repeats within the message limit, random bytes, codec / dtype /
  shape strings that are invalid or extreme), nested messages recursively to a small depth,
  at most one member per oneof;
* mutated: a valid message (a *seed*, e.g. the request a real client sends) with a few fields
  replaced, cleared or mutated recursively, so the fuzz gets past the first check and into the
  code behind it.

Huge values come from constants scaled by a small draw (``bytes(2**k)``), never from drawing
megabytes through Hypothesis, which keeps examples cheap and shrinkable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from edgeweave.codec import list_codecs
from edgeweave.codec.base import list_compressors, list_families
from edgeweave.codec.wire import DTYPES

F = FieldDescriptor
MAX_DEPTH = 3
#: Longest generated repeat (elements of a repeated field, characters, bytes); kept below every
#: server's message limit (the FL server's can be a few MiB) so the handler, not gRPC, answers.
HUGE = 2**20

_INT_RANGES = {
    F.TYPE_INT64: (-(2**63), 2**63 - 1), F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1), F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1), F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1), F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
}


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (0, 1, -1, 2, 7, 8, 255, 256, 2**31 - 1, 2**31, 2**32, -(2**31),
                                2**53 + 1, lo, lo + 1, hi, hi - 1) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(-64, 64).filter(lambda v: lo <= v <= hi),
                     st.integers(lo, hi))


FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e308, -1e308,
                     5e-324, 2.0**53 + 1, 1e-9]),
    st.floats(allow_nan=True, allow_infinity=True),
)

#: Names that mean something to some server: every codec, compressor and dtype it knows, with
#: near misses; values that are plain wrong come from st.text.
_TOKENS = sorted({*list_codecs(), *list_compressors(), *DTYPES,
                  *(f.split(":")[0] + ":" for f in list_families())})
_ODD = ["", " ", "none+", "+zstd", "int8+zstd+zstd", "zstd+int8", "fp16+", "lowrank:0",
        "lowrank:nan", "lowrank:-1", "lowrank:1e309", "qsgd:0", "qsgd:99999999999", "qsgd:1,0",
        "topk:-1", "topk:nan", "randk:0", "float32\x00", "complex128", "object", "Float32",
        "int8 ", "\u00e9\u00e9", "\ud7ff", "../../../etc/passwd", "%s%s%n", "0", "-1", "nan"]


def _strings() -> st.SearchStrategy[str]:
    token = st.sampled_from(_TOKENS + _ODD)
    repeated = st.tuples(token, st.sampled_from(["+", ":", ",", ""]),
                         st.integers(2, 4096)).map(lambda t: t[1].join([t[0]] * t[2]))
    long = st.integers(1, 20).map(lambda k: "x" * min(HUGE, 2**k))
    return st.one_of(token, st.text(max_size=24), repeated, long)


STRINGS = _strings()
BYTES = st.one_of(st.binary(max_size=64),
                  st.integers(0, 20).map(lambda k: bytes(2**k)),
                  st.integers(0, 20).map(lambda k: b"\xff" * (2**k)),
                  st.tuples(st.binary(min_size=1, max_size=8), st.integers(1, 2**16)).map(
                      lambda t: t[0] * t[1]))


def scalar(field: FieldDescriptor) -> st.SearchStrategy:
    """Boundary-heavy values for one scalar (or enum) field."""
    t = field.type
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return FLOATS
    if t in _INT_RANGES:
        return _ints(*_INT_RANGES[t])
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_STRING:
        return STRINGS
    if t == F.TYPE_BYTES:
        return BYTES
    if t == F.TYPE_ENUM:  # proto3 enums are open: numbers outside the enum are legal on the wire
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]),
                         _ints(-(2**31), 2**31 - 1))
    raise TypeError(f"no strategy for field {field.full_name} of type {t}")


def _size(value: object) -> int:
    if isinstance(value, Message):
        return value.ByteSize() + 2
    return len(value) + 2 if isinstance(value, str | bytes) else 10


def repeated(element: st.SearchStrategy, small: int = 6, most: int = 16
            ) -> st.SearchStrategy[list]:
    """Lists: usually short, sometimes one element repeated into a huge count, up to 2**most
    and about HUGE bytes in all (so nesting cannot multiply sizes past the message limits)."""
    huge = st.tuples(element, st.integers(0, most)).map(
        lambda t: [t[0]] * max(1, min(2**t[1], HUGE // _size(t[0]))))
    return st.one_of(st.lists(element, max_size=small), huge)


def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry)


class MessageStrategies:
    """Strategies for the messages of one service, sharing ``seeds``: valid messages by full
    type name (a callable returns them at draw time, for state that changes while fuzzing)."""

    def __init__(self, seeds: Mapping[str, Callable[[], Sequence[Message]]] | None = None):
        self.seeds = dict(seeds or {})

    def message(self, cls: type[Message], depth: int = 0) -> st.SearchStrategy[Message]:
        return self._of(cls.DESCRIPTOR, cls, depth)

    def _of(self, desc: Descriptor, cls: type[Message] | None, depth: int
            ) -> st.SearchStrategy[Message]:
        cls = cls or _class_of(desc)
        options = [self._generated(desc, cls, depth)]
        if desc.full_name in self.seeds:
            options.append(self._mutated(desc, cls, depth))
        return st.one_of(*options)

    # -- generated ---------------------------------------------------------------------------
    def _field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy:
        if _is_map(field):
            k, v = field.message_type.fields_by_name["key"], field.message_type.fields_by_name[
                "value"]
            return st.dictionaries(scalar(k), scalar(v), max_size=6)
        if field.type == F.TYPE_MESSAGE:
            one = self._of(field.message_type, None, depth + 1)
        else:
            one = scalar(field)
        if field.is_repeated:  # messages cost far more to copy: fewer of them
            nested = field.type == F.TYPE_MESSAGE
            return repeated(one, small=3 if nested else 8, most=10 if nested else 16)
        return one

    def _generated(self, desc: Descriptor, cls: type[Message], depth: int
                   ) -> st.SearchStrategy[Message]:
        @st.composite
        def build(draw: st.DrawFn) -> Message:
            msg = cls()
            if depth >= MAX_DEPTH:
                return msg
            taken: set[str] = set()
            for field in desc.fields:
                oneof = field.containing_oneof
                if oneof is not None and oneof.name in taken:
                    continue
                if not draw(st.booleans()):
                    continue
                if oneof is not None:
                    taken.add(oneof.name)
                _set(msg, field, draw(self._field(field, depth)))
            return msg

        return build()

    # -- mutated -----------------------------------------------------------------------------
    def _mutated(self, desc: Descriptor, cls: type[Message], depth: int
                 ) -> st.SearchStrategy[Message]:
        seeds = self.seeds[desc.full_name]

        @st.composite
        def mutate(draw: st.DrawFn) -> Message:
            pool = list(seeds())
            if not pool:
                return cls()
            msg = cls()
            msg.CopyFrom(pool[draw(st.integers(0, len(pool) - 1))])
            for field in desc.fields:
                action = draw(st.sampled_from(["keep"] * 5 + ["replace", "clear", "inner"]))
                if action == "clear":
                    msg.ClearField(field.name)
                elif action == "replace":
                    _set(msg, field, draw(self._field(field, depth)))
                elif action == "inner" and field.type == F.TYPE_MESSAGE and not _is_map(field):
                    self._mutate_inner(draw, msg, field, depth)
            return msg

        return mutate()

    def _mutate_inner(self, draw: st.DrawFn, msg: Message, field: FieldDescriptor,
                      depth: int) -> None:
        """Mutate a nested message (one element of a repeated one) in place, keeping the rest."""
        inner = self._of(field.message_type, None, depth + 1)
        if not field.is_repeated:
            getattr(msg, field.name).CopyFrom(draw(inner))
            return
        items = getattr(msg, field.name)
        if len(items):
            items[draw(st.integers(0, len(items) - 1))].CopyFrom(draw(inner))
        else:
            items.add().CopyFrom(draw(inner))


def _class_of(desc: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


def _set(msg: Message, field: FieldDescriptor, value: object) -> None:
    name = field.name
    if _is_map(field):
        target = getattr(msg, name)
        target.clear()
        target.update(value)
    elif field.is_repeated:
        target = getattr(msg, name)
        del target[:]
        target.extend(value)
    elif field.type == F.TYPE_MESSAGE:
        getattr(msg, name).CopyFrom(value)
    else:
        setattr(msg, name, value)
