from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class FitConfig(_message.Message):
    __slots__ = ("lr", "batch_size", "epochs", "local_steps", "prox_mu", "momentum", "weight_decay", "seed")
    LR_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PROX_MU_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    lr: float
    batch_size: int
    epochs: int
    local_steps: int
    prox_mu: float
    momentum: float
    weight_decay: float
    seed: int
    def __init__(self, lr: _Optional[float] = ..., batch_size: _Optional[int] = ..., epochs: _Optional[int] = ..., local_steps: _Optional[int] = ..., prox_mu: _Optional[float] = ..., momentum: _Optional[float] = ..., weight_decay: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("client_id", "num_examples", "model_specs", "device")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MODEL_SPECS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    num_examples: int
    model_specs: _containers.RepeatedScalarFieldContainer[str]
    device: str
    def __init__(self, client_id: _Optional[int] = ..., num_examples: _Optional[int] = ..., model_specs: _Optional[_Iterable[str]] = ..., device: _Optional[str] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("session", "model_spec", "max_update_bytes", "heartbeat_s")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SPEC_FIELD_NUMBER: _ClassVar[int]
    MAX_UPDATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_S_FIELD_NUMBER: _ClassVar[int]
    session: str
    model_spec: str
    max_update_bytes: int
    heartbeat_s: float
    def __init__(self, session: _Optional[str] = ..., model_spec: _Optional[str] = ..., max_update_bytes: _Optional[int] = ..., heartbeat_s: _Optional[float] = ...) -> None: ...

class TasksRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("kind", "task_id", "round", "model_spec", "params", "config", "secagg_setup", "secagg")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PING: _ClassVar[Task.Kind]
        FIT: _ClassVar[Task.Kind]
        SHUTDOWN: _ClassVar[Task.Kind]
        SECAGG: _ClassVar[Task.Kind]
    PING: Task.Kind
    FIT: Task.Kind
    SHUTDOWN: Task.Kind
    SECAGG: Task.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_SPEC_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SECAGG_SETUP_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    kind: Task.Kind
    task_id: str
    round: int
    model_spec: str
    params: _containers.RepeatedCompositeFieldContainer[Tensor]
    config: FitConfig
    secagg_setup: SecAggSetup
    secagg: SecAggStep
    def __init__(self, kind: _Optional[_Union[Task.Kind, str]] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., model_spec: _Optional[str] = ..., params: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., config: _Optional[_Union[FitConfig, _Mapping]] = ..., secagg_setup: _Optional[_Union[SecAggSetup, _Mapping]] = ..., secagg: _Optional[_Union[SecAggStep, _Mapping]] = ...) -> None: ...

class Update(_message.Message):
    __slots__ = ("session", "task_id", "round", "params", "num_examples", "train_loss", "error")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    session: str
    task_id: str
    round: int
    params: _containers.RepeatedCompositeFieldContainer[Tensor]
    num_examples: int
    train_loss: float
    error: str
    def __init__(self, session: _Optional[str] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., params: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., num_examples: _Optional[int] = ..., train_loss: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class UpdateReply(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class SecAggSetup(_message.Message):
    __slots__ = ("ring_bits", "threshold", "frac_bits", "loss_frac_bits", "clip", "max_weight", "label", "active")
    RING_BITS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ring_bits: int
    threshold: int
    frac_bits: int
    loss_frac_bits: int
    clip: float
    max_weight: int
    label: bytes
    active: bool
    def __init__(self, ring_bits: _Optional[int] = ..., threshold: _Optional[int] = ..., frac_bits: _Optional[int] = ..., loss_frac_bits: _Optional[int] = ..., clip: _Optional[float] = ..., max_weight: _Optional[int] = ..., label: _Optional[bytes] = ..., active: _Optional[bool] = ...) -> None: ...

class PublicKeys(_message.Message):
    __slots__ = ("client_id", "c_pk", "s_pk", "sig")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    C_PK_FIELD_NUMBER: _ClassVar[int]
    S_PK_FIELD_NUMBER: _ClassVar[int]
    SIG_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    c_pk: bytes
    s_pk: bytes
    sig: bytes
    def __init__(self, client_id: _Optional[int] = ..., c_pk: _Optional[bytes] = ..., s_pk: _Optional[bytes] = ..., sig: _Optional[bytes] = ...) -> None: ...

class EncryptedShare(_message.Message):
    __slots__ = ("client_id", "ciphertext")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    ciphertext: bytes
    def __init__(self, client_id: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class FieldShare(_message.Message):
    __slots__ = ("client_id", "values")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, client_id: _Optional[int] = ..., values: _Optional[_Iterable[int]] = ...) -> None: ...

class SecAggStep(_message.Message):
    __slots__ = ("roster", "inbox", "survivors", "consistency", "proof")
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    INBOX_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    roster: Roster
    inbox: Inbox
    survivors: Survivors
    consistency: Survivors
    proof: ConsistencyProof
    def __init__(self, roster: _Optional[_Union[Roster, _Mapping]] = ..., inbox: _Optional[_Union[Inbox, _Mapping]] = ..., survivors: _Optional[_Union[Survivors, _Mapping]] = ..., consistency: _Optional[_Union[Survivors, _Mapping]] = ..., proof: _Optional[_Union[ConsistencyProof, _Mapping]] = ...) -> None: ...

class Roster(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[PublicKeys]
    def __init__(self, keys: _Optional[_Iterable[_Union[PublicKeys, _Mapping]]] = ...) -> None: ...

class Inbox(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class Survivors(_message.Message):
    __slots__ = ("client_ids",)
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    client_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, client_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("client_id", "sig")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIG_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    sig: bytes
    def __init__(self, client_id: _Optional[int] = ..., sig: _Optional[bytes] = ...) -> None: ...

class ConsistencyProof(_message.Message):
    __slots__ = ("sigs",)
    SIGS_FIELD_NUMBER: _ClassVar[int]
    sigs: _containers.RepeatedCompositeFieldContainer[Signature]
    def __init__(self, sigs: _Optional[_Iterable[_Union[Signature, _Mapping]]] = ...) -> None: ...

class SharedKeys(_message.Message):
    __slots__ = ("b_commit", "shares")
    B_COMMIT_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    b_commit: bytes
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, b_commit: _Optional[bytes] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class UnmaskShares(_message.Message):
    __slots__ = ("b_shares", "s_shares")
    B_SHARES_FIELD_NUMBER: _ClassVar[int]
    S_SHARES_FIELD_NUMBER: _ClassVar[int]
    b_shares: _containers.RepeatedCompositeFieldContainer[FieldShare]
    s_shares: _containers.RepeatedCompositeFieldContainer[FieldShare]
    def __init__(self, b_shares: _Optional[_Iterable[_Union[FieldShare, _Mapping]]] = ..., s_shares: _Optional[_Iterable[_Union[FieldShare, _Mapping]]] = ...) -> None: ...

class SecAggMessage(_message.Message):
    __slots__ = ("session", "task_id", "round", "keys", "shared", "masked", "unmask", "consistency", "error")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    UNMASK_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    session: str
    task_id: str
    round: int
    keys: PublicKeys
    shared: SharedKeys
    masked: bytes
    unmask: UnmaskShares
    consistency: bytes
    error: str
    def __init__(self, session: _Optional[str] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., keys: _Optional[_Union[PublicKeys, _Mapping]] = ..., shared: _Optional[_Union[SharedKeys, _Mapping]] = ..., masked: _Optional[bytes] = ..., unmask: _Optional[_Union[UnmaskShares, _Mapping]] = ..., consistency: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...
