from edgeweave.runtime.proto import edgeweave_pb2 as _edgeweave_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SplitLayer(_message.Message):
    __slots__ = ("unit", "kind", "row_bounds", "col_bounds", "parts")
    UNIT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROW_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    COL_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    unit: _containers.RepeatedScalarFieldContainer[str]
    kind: str
    row_bounds: _containers.RepeatedScalarFieldContainer[int]
    col_bounds: _containers.RepeatedScalarFieldContainer[int]
    parts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, unit: _Optional[_Iterable[str]] = ..., kind: _Optional[str] = ..., row_bounds: _Optional[_Iterable[int]] = ..., col_bounds: _Optional[_Iterable[int]] = ..., parts: _Optional[_Iterable[int]] = ...) -> None: ...

class ClusterSpec(_message.Message):
    __slots__ = ("method", "device", "fused_depth", "grid_rows", "grid_cols", "reuse", "regions_digest", "layers", "blocks")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FUSED_DEPTH_FIELD_NUMBER: _ClassVar[int]
    GRID_ROWS_FIELD_NUMBER: _ClassVar[int]
    GRID_COLS_FIELD_NUMBER: _ClassVar[int]
    REUSE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    method: str
    device: str
    fused_depth: int
    grid_rows: int
    grid_cols: int
    reuse: bool
    regions_digest: str
    layers: _containers.RepeatedCompositeFieldContainer[SplitLayer]
    blocks: _containers.RepeatedCompositeFieldContainer[FusedStage]
    def __init__(self, method: _Optional[str] = ..., device: _Optional[str] = ..., fused_depth: _Optional[int] = ..., grid_rows: _Optional[int] = ..., grid_cols: _Optional[int] = ..., reuse: _Optional[bool] = ..., regions_digest: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[SplitLayer, _Mapping]]] = ..., blocks: _Optional[_Iterable[_Union[FusedStage, _Mapping]]] = ...) -> None: ...

class FusedStage(_message.Message):
    __slots__ = ("depth", "grid_rows", "grid_cols", "reuse")
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    GRID_ROWS_FIELD_NUMBER: _ClassVar[int]
    GRID_COLS_FIELD_NUMBER: _ClassVar[int]
    REUSE_FIELD_NUMBER: _ClassVar[int]
    depth: int
    grid_rows: int
    grid_cols: int
    reuse: bool
    def __init__(self, depth: _Optional[int] = ..., grid_rows: _Optional[int] = ..., grid_cols: _Optional[int] = ..., reuse: _Optional[bool] = ...) -> None: ...

class SetupRequest(_message.Message):
    __slots__ = ("spec", "weights")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    spec: ClusterSpec
    weights: _edgeweave_pb2.DeployRequest
    def __init__(self, spec: _Optional[_Union[ClusterSpec, _Mapping]] = ..., weights: _Optional[_Union[_edgeweave_pb2.DeployRequest, _Mapping]] = ...) -> None: ...

class SetupReply(_message.Message):
    __slots__ = ("digest", "tasks", "build_ms")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    BUILD_MS_FIELD_NUMBER: _ClassVar[int]
    digest: str
    tasks: int
    build_ms: float
    def __init__(self, digest: _Optional[str] = ..., tasks: _Optional[int] = ..., build_ms: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task", "frame", "tile", "layer", "reused_from", "crop", "pieces", "return_codec", "deliver_at_ns", "clock", "block", "resident", "keep_r0", "keep_r1", "keep", "back", "out_r0", "out_r1")
    TASK_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    REUSED_FROM_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    PIECES_FIELD_NUMBER: _ClassVar[int]
    RETURN_CODEC_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_NS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    KEEP_R0_FIELD_NUMBER: _ClassVar[int]
    KEEP_R1_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    BACK_FIELD_NUMBER: _ClassVar[int]
    OUT_R0_FIELD_NUMBER: _ClassVar[int]
    OUT_R1_FIELD_NUMBER: _ClassVar[int]
    task: int
    frame: str
    tile: int
    layer: int
    reused_from: _containers.RepeatedScalarFieldContainer[int]
    crop: _edgeweave_pb2.Tensor
    pieces: _containers.RepeatedCompositeFieldContainer[_edgeweave_pb2.Tensor]
    return_codec: str
    deliver_at_ns: int
    clock: str
    block: int
    resident: bool
    keep_r0: int
    keep_r1: int
    keep: bool
    back: _containers.RepeatedScalarFieldContainer[int]
    out_r0: int
    out_r1: int
    def __init__(self, task: _Optional[int] = ..., frame: _Optional[str] = ..., tile: _Optional[int] = ..., layer: _Optional[int] = ..., reused_from: _Optional[_Iterable[int]] = ..., crop: _Optional[_Union[_edgeweave_pb2.Tensor, _Mapping]] = ..., pieces: _Optional[_Iterable[_Union[_edgeweave_pb2.Tensor, _Mapping]]] = ..., return_codec: _Optional[str] = ..., deliver_at_ns: _Optional[int] = ..., clock: _Optional[str] = ..., block: _Optional[int] = ..., resident: _Optional[bool] = ..., keep_r0: _Optional[int] = ..., keep_r1: _Optional[int] = ..., keep: _Optional[bool] = ..., back: _Optional[_Iterable[int]] = ..., out_r0: _Optional[int] = ..., out_r1: _Optional[int] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task", "output", "shares", "compute_ms", "wait_ms", "hello", "error_code", "error", "warm_ms", "decode_ms", "encode_ms")
    TASK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WARM_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    task: int
    output: _edgeweave_pb2.Tensor
    shares: _containers.RepeatedCompositeFieldContainer[_edgeweave_pb2.Tensor]
    compute_ms: float
    wait_ms: float
    hello: bool
    error_code: str
    error: str
    warm_ms: float
    decode_ms: float
    encode_ms: float
    def __init__(self, task: _Optional[int] = ..., output: _Optional[_Union[_edgeweave_pb2.Tensor, _Mapping]] = ..., shares: _Optional[_Iterable[_Union[_edgeweave_pb2.Tensor, _Mapping]]] = ..., compute_ms: _Optional[float] = ..., wait_ms: _Optional[float] = ..., hello: _Optional[bool] = ..., error_code: _Optional[str] = ..., error: _Optional[str] = ..., warm_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ...) -> None: ...
