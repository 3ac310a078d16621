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

class ForwardRequest(_message.Message):
    __slots__ = ("client_id", "step", "activations", "labels", "train")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    step: int
    activations: Tensor
    labels: Tensor
    train: bool
    def __init__(self, client_id: _Optional[int] = ..., step: _Optional[int] = ..., activations: _Optional[_Union[Tensor, _Mapping]] = ..., labels: _Optional[_Union[Tensor, _Mapping]] = ..., train: _Optional[bool] = ...) -> None: ...

class ForwardReply(_message.Message):
    __slots__ = ("step", "gradient", "loss", "correct")
    STEP_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    step: int
    gradient: Tensor
    loss: float
    correct: int
    def __init__(self, step: _Optional[int] = ..., gradient: _Optional[_Union[Tensor, _Mapping]] = ..., loss: _Optional[float] = ..., correct: _Optional[int] = ...) -> None: ...

class DeviceWeights(_message.Message):
    __slots__ = ("client_id", "params", "codec")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    params: _containers.RepeatedCompositeFieldContainer[Tensor]
    codec: str
    def __init__(self, client_id: _Optional[int] = ..., params: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., codec: _Optional[str] = ...) -> None: ...

class MiddleRequest(_message.Message):
    __slots__ = ("client_id", "step", "activations", "train")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    step: int
    activations: Tensor
    train: bool
    def __init__(self, client_id: _Optional[int] = ..., step: _Optional[int] = ..., activations: _Optional[_Union[Tensor, _Mapping]] = ..., train: _Optional[bool] = ...) -> None: ...

class MiddleReply(_message.Message):
    __slots__ = ("step", "features")
    STEP_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    step: int
    features: Tensor
    def __init__(self, step: _Optional[int] = ..., features: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class MiddleBackwardRequest(_message.Message):
    __slots__ = ("client_id", "step", "gradient")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    step: int
    gradient: Tensor
    def __init__(self, client_id: _Optional[int] = ..., step: _Optional[int] = ..., gradient: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class MiddleBackwardReply(_message.Message):
    __slots__ = ("step", "gradient")
    STEP_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    step: int
    gradient: Tensor
    def __init__(self, step: _Optional[int] = ..., gradient: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
