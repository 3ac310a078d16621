from edgeweave.train.wire import fl_pb2 as _fl_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PushRequest(_message.Message):
    __slots__ = ("sender", "weight", "params", "step")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    sender: int
    weight: float
    params: _containers.RepeatedCompositeFieldContainer[_fl_pb2.Tensor]
    step: int
    def __init__(self, sender: _Optional[int] = ..., weight: _Optional[float] = ..., params: _Optional[_Iterable[_Union[_fl_pb2.Tensor, _Mapping]]] = ..., step: _Optional[int] = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("weight",)
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    weight: float
    def __init__(self, weight: _Optional[float] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("sender",)
    SENDER_FIELD_NUMBER: _ClassVar[int]
    sender: int
    def __init__(self, sender: _Optional[int] = ...) -> None: ...

class PullReply(_message.Message):
    __slots__ = ("node", "weight", "params", "steps", "pushes", "merged", "wire_bytes_sent", "payload_bytes_sent", "done")
    NODE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    PUSHES_FIELD_NUMBER: _ClassVar[int]
    MERGED_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    node: int
    weight: float
    params: _containers.RepeatedCompositeFieldContainer[_fl_pb2.Tensor]
    steps: int
    pushes: int
    merged: int
    wire_bytes_sent: int
    payload_bytes_sent: int
    done: bool
    def __init__(self, node: _Optional[int] = ..., weight: _Optional[float] = ..., params: _Optional[_Iterable[_Union[_fl_pb2.Tensor, _Mapping]]] = ..., steps: _Optional[int] = ..., pushes: _Optional[int] = ..., merged: _Optional[int] = ..., wire_bytes_sent: _Optional[int] = ..., payload_bytes_sent: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class ChunkRequest(_message.Message):
    __slots__ = ("sender", "round", "hop", "chunk", "part")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    HOP_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    sender: int
    round: int
    hop: int
    chunk: int
    part: _fl_pb2.Tensor
    def __init__(self, sender: _Optional[int] = ..., round: _Optional[int] = ..., hop: _Optional[int] = ..., chunk: _Optional[int] = ..., part: _Optional[_Union[_fl_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ChunkReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GradRequest(_message.Message):
    __slots__ = ("worker", "read_version", "grad")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    READ_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    worker: int
    read_version: int
    grad: _containers.RepeatedCompositeFieldContainer[_fl_pb2.Tensor]
    def __init__(self, worker: _Optional[int] = ..., read_version: _Optional[int] = ..., grad: _Optional[_Iterable[_Union[_fl_pb2.Tensor, _Mapping]]] = ...) -> None: ...

class GradReply(_message.Message):
    __slots__ = ("version", "staleness")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STALENESS_FIELD_NUMBER: _ClassVar[int]
    version: int
    staleness: int
    def __init__(self, version: _Optional[int] = ..., staleness: _Optional[int] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("worker", "clock")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    worker: int
    clock: int
    def __init__(self, worker: _Optional[int] = ..., clock: _Optional[int] = ...) -> None: ...

class ModelReply(_message.Message):
    __slots__ = ("version", "params")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    version: int
    params: _containers.RepeatedCompositeFieldContainer[_fl_pb2.Tensor]
    def __init__(self, version: _Optional[int] = ..., params: _Optional[_Iterable[_Union[_fl_pb2.Tensor, _Mapping]]] = ...) -> None: ...
