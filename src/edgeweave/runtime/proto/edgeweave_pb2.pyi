from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("name", "codec", "dtype", "shape", "payload", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    codec: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    payload: bytes
    params: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., codec: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., payload: _Optional[bytes] = ..., params: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Hop(_message.Message):
    __slots__ = ("stage", "needs", "codec", "link_mbps", "link_rtt_ms", "shape_bandwidth")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    LINK_MBPS_FIELD_NUMBER: _ClassVar[int]
    LINK_RTT_MS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    stage: str
    needs: _containers.RepeatedScalarFieldContainer[str]
    codec: str
    link_mbps: float
    link_rtt_ms: float
    shape_bandwidth: bool
    def __init__(self, stage: _Optional[str] = ..., needs: _Optional[_Iterable[str]] = ..., codec: _Optional[str] = ..., link_mbps: _Optional[float] = ..., link_rtt_ms: _Optional[float] = ..., shape_bandwidth: _Optional[bool] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("request_id", "tensors", "route", "want", "return_codec", "deliver_at_ns", "clock", "deadline_ms", "priority", "device", "prefetch", "grace_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    WANT_FIELD_NUMBER: _ClassVar[int]
    RETURN_CODEC_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_NS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    route: _containers.RepeatedCompositeFieldContainer[Hop]
    want: _containers.RepeatedScalarFieldContainer[str]
    return_codec: str
    deliver_at_ns: int
    clock: str
    deadline_ms: float
    priority: int
    device: str
    prefetch: int
    grace_ms: float
    def __init__(self, request_id: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., route: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., want: _Optional[_Iterable[str]] = ..., return_codec: _Optional[str] = ..., deliver_at_ns: _Optional[int] = ..., clock: _Optional[str] = ..., deadline_ms: _Optional[float] = ..., priority: _Optional[int] = ..., device: _Optional[str] = ..., prefetch: _Optional[int] = ..., grace_ms: _Optional[float] = ...) -> None: ...

class CacheEntry(_message.Message):
    __slots__ = ("uid", "label", "key")
    UID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    uid: str
    label: int
    key: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, uid: _Optional[str] = ..., label: _Optional[int] = ..., key: _Optional[_Iterable[float]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("node", "role", "queue_ms", "decode_ms", "compute_ms", "encode_ms", "forward_ms", "uplink_ms", "downlink_ms", "bytes_in", "bytes_out")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_MS_FIELD_NUMBER: _ClassVar[int]
    UPLINK_MS_FIELD_NUMBER: _ClassVar[int]
    DOWNLINK_MS_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    node: str
    role: str
    queue_ms: float
    decode_ms: float
    compute_ms: float
    encode_ms: float
    forward_ms: float
    uplink_ms: float
    downlink_ms: float
    bytes_in: int
    bytes_out: int
    def __init__(self, node: _Optional[str] = ..., role: _Optional[str] = ..., queue_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ..., forward_ms: _Optional[float] = ..., uplink_ms: _Optional[float] = ..., downlink_ms: _Optional[float] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ...) -> None: ...

class InferReply(_message.Message):
    __slots__ = ("request_id", "tensors", "timings", "fallback", "note", "deliver_at_ns", "clock", "error_code", "error", "queued_ms", "batch", "answered_by", "prefetched", "prefetch_embed", "filter_state", "filter_step")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_NS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    PREFETCHED_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_EMBED_FIELD_NUMBER: _ClassVar[int]
    FILTER_STATE_FIELD_NUMBER: _ClassVar[int]
    FILTER_STEP_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    timings: _containers.RepeatedCompositeFieldContainer[Timing]
    fallback: bool
    note: str
    deliver_at_ns: int
    clock: str
    error_code: str
    error: str
    queued_ms: float
    batch: int
    answered_by: str
    prefetched: _containers.RepeatedCompositeFieldContainer[CacheEntry]
    prefetch_embed: str
    filter_state: str
    filter_step: str
    def __init__(self, request_id: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[Timing, _Mapping]]] = ..., fallback: _Optional[bool] = ..., note: _Optional[str] = ..., deliver_at_ns: _Optional[int] = ..., clock: _Optional[str] = ..., error_code: _Optional[str] = ..., error: _Optional[str] = ..., queued_ms: _Optional[float] = ..., batch: _Optional[int] = ..., answered_by: _Optional[str] = ..., prefetched: _Optional[_Iterable[_Union[CacheEntry, _Mapping]]] = ..., prefetch_embed: _Optional[str] = ..., filter_state: _Optional[str] = ..., filter_step: _Optional[str] = ...) -> None: ...

class StageRecipe(_message.Message):
    __slots__ = ("model", "input_shape", "nodes", "inputs", "outputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    nodes: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., nodes: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ...) -> None: ...

class WeightSlice(_message.Message):
    __slots__ = ("name", "dtype", "shape", "offset", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ServingConfig(_message.Message):
    __slots__ = ("max_batch", "max_delay_ms", "preferred_batch", "max_queue", "slo_ms", "adaptive_batch")
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    SLO_MS_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_BATCH_FIELD_NUMBER: _ClassVar[int]
    max_batch: int
    max_delay_ms: float
    preferred_batch: _containers.RepeatedScalarFieldContainer[int]
    max_queue: int
    slo_ms: float
    adaptive_batch: bool
    def __init__(self, max_batch: _Optional[int] = ..., max_delay_ms: _Optional[float] = ..., preferred_batch: _Optional[_Iterable[int]] = ..., max_queue: _Optional[int] = ..., slo_ms: _Optional[float] = ..., adaptive_batch: _Optional[bool] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("program", "name", "hops_ahead", "stage_digest", "recipe", "weights", "serving")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOPS_AHEAD_FIELD_NUMBER: _ClassVar[int]
    STAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    program: bytes
    name: str
    hops_ahead: int
    stage_digest: str
    recipe: StageRecipe
    weights: _containers.RepeatedCompositeFieldContainer[WeightSlice]
    serving: ServingConfig
    def __init__(self, program: _Optional[bytes] = ..., name: _Optional[str] = ..., hops_ahead: _Optional[int] = ..., stage_digest: _Optional[str] = ..., recipe: _Optional[_Union[StageRecipe, _Mapping]] = ..., weights: _Optional[_Iterable[_Union[WeightSlice, _Mapping]]] = ..., serving: _Optional[_Union[ServingConfig, _Mapping]] = ...) -> None: ...

class DeployReply(_message.Message):
    __slots__ = ("digest", "cached", "load_ms", "max_batch")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    digest: str
    cached: bool
    load_ms: float
    max_batch: int
    def __init__(self, digest: _Optional[str] = ..., cached: _Optional[bool] = ..., load_ms: _Optional[float] = ..., max_batch: _Optional[int] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("stage_digest",)
    STAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    stage_digest: str
    def __init__(self, stage_digest: _Optional[str] = ...) -> None: ...

class RemoveReply(_message.Message):
    __slots__ = ("removed", "refused")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    refused: int
    def __init__(self, removed: _Optional[bool] = ..., refused: _Optional[int] = ...) -> None: ...

class HaveChunksRequest(_message.Message):
    __slots__ = ("digests",)
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, digests: _Optional[_Iterable[str]] = ...) -> None: ...

class HaveChunksReply(_message.Message):
    __slots__ = ("missing",)
    MISSING_FIELD_NUMBER: _ClassVar[int]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, missing: _Optional[_Iterable[str]] = ...) -> None: ...

class WeightChunk(_message.Message):
    __slots__ = ("weight", "offset", "digest", "data", "codec")
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    weight: str
    offset: int
    digest: str
    data: bytes
    codec: str
    def __init__(self, weight: _Optional[str] = ..., offset: _Optional[int] = ..., digest: _Optional[str] = ..., data: _Optional[bytes] = ..., codec: _Optional[str] = ...) -> None: ...

class PutChunksRequest(_message.Message):
    __slots__ = ("model", "input_shape", "chunks")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    chunks: _containers.RepeatedCompositeFieldContainer[WeightChunk]
    def __init__(self, model: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., chunks: _Optional[_Iterable[_Union[WeightChunk, _Mapping]]] = ...) -> None: ...

class PutChunksReply(_message.Message):
    __slots__ = ("stored", "refused")
    STORED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    stored: int
    refused: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stored: _Optional[int] = ..., refused: _Optional[_Iterable[str]] = ...) -> None: ...

class DeployFromChunksRequest(_message.Message):
    __slots__ = ("stage_digest", "recipe", "name", "hops_ahead", "chunks", "weight_codec", "serving")
    STAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOPS_AHEAD_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_CODEC_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    stage_digest: str
    recipe: StageRecipe
    name: str
    hops_ahead: int
    chunks: _containers.RepeatedScalarFieldContainer[str]
    weight_codec: str
    serving: ServingConfig
    def __init__(self, stage_digest: _Optional[str] = ..., recipe: _Optional[_Union[StageRecipe, _Mapping]] = ..., name: _Optional[str] = ..., hops_ahead: _Optional[int] = ..., chunks: _Optional[_Iterable[str]] = ..., weight_codec: _Optional[str] = ..., serving: _Optional[_Union[ServingConfig, _Mapping]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("role", "status", "stages", "inflight", "next", "queued", "queued_ms")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    role: str
    status: str
    stages: int
    inflight: int
    next: str
    queued: int
    queued_ms: float
    def __init__(self, role: _Optional[str] = ..., status: _Optional[str] = ..., stages: _Optional[int] = ..., inflight: _Optional[int] = ..., next: _Optional[str] = ..., queued: _Optional[int] = ..., queued_ms: _Optional[float] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, values: _Optional[_Mapping[str, float]] = ...) -> None: ...
