"""What a device or the operator can get wrong with the grpc backend, checked in one place.

The backend's numbers (counts, seconds) are checked when it is built; a device's registration
and every update are checked before they touch the round, each refusal a :class:`Reject` that
goes back to the device as the gRPC status (the server keeps serving the others).
"""

from __future__ import annotations

import math
from collections.abc import Collection

import grpc

from edgeweave.train.backends.grpc_service import Reject
from edgeweave.train.types import Params, TrainError
from edgeweave.train.wire import fl_pb2
from edgeweave.train.wire.messages import decode_like, payload_bytes

DEFAULT_MAX_UPDATE_BYTES = 64 * 2**20


def check_numbers(*, min_clients: int, round_timeout_s: float, max_update_bytes: int,
                   wait_clients_s: float | None, heartbeat_s: float, max_client_examples: int,
                   quorum: int | None) -> None:
    """Counts >= 1 and finite positive seconds: a NaN timeout would make every wait spin."""
    counts = {"min_clients": min_clients, "max_update_bytes": max_update_bytes,
              "max_client_examples": max_client_examples, "quorum": quorum}
    for name, v in counts.items():
        if v is not None and v < 1:
            raise TrainError(f"grpc backend: {name} must be >= 1, got {v}")
    seconds = {"round_timeout_s": round_timeout_s, "wait_clients_s": wait_clients_s,
               "heartbeat_s": heartbeat_s}
    for name, x in seconds.items():
        if x is not None and not (math.isfinite(x) and x > 0):
            raise TrainError(f"grpc backend: {name} must be a finite number > 0, got {x}")


def check_registration(req: fl_pb2.RegisterRequest, *, model_spec: str,
                       allowed: Collection[int] | None, max_client_examples: int) -> int:
    """Refuse a registration this server cannot take; the examples it counts (the claim capped
    at ``max_client_examples``)."""
    if req.client_id < 0 or req.num_examples < 1:
        raise Reject(grpc.StatusCode.INVALID_ARGUMENT,
                      f"register: need client_id >= 0 and num_examples >= 1, got "
                      f"{req.client_id} and {req.num_examples}")
    if allowed is not None and req.client_id not in allowed:
        raise Reject(grpc.StatusCode.PERMISSION_DENIED,
                     f"register: client {req.client_id} does not train under this server "
                     f"(it takes clients {_ids(allowed)}; see the fleet's devices)")
    if req.model_specs and model_spec not in req.model_specs:
        raise Reject(grpc.StatusCode.FAILED_PRECONDITION,
                      f"register: this server trains {model_spec!r}; client "
                      f"{req.client_id} offers {list(req.model_specs)}")
    return min(int(req.num_examples), max_client_examples)


def check_update(req: fl_pb2.Update, like: Params, cid: int,
                 max_update_bytes: int) -> tuple[tuple[Params, int, float], int]:
    """Client ``cid``'s update as ``((params, examples, loss), tensor bytes)``, or a Reject
    naming what is wrong (the client's own error, size, counts, names, dtypes, shapes)."""
    where = f"update from client {cid} for round {req.round}"
    if req.error:
        raise Reject(grpc.StatusCode.ABORTED, f"{where}: the client failed: {req.error[:500]}")
    nbytes = payload_bytes(req.params)
    if nbytes > max_update_bytes:
        raise Reject(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"{where}: {nbytes} bytes exceeds max_update_bytes="
                      f"{max_update_bytes}")
    if req.num_examples < 1 or not math.isfinite(req.train_loss):
        raise Reject(grpc.StatusCode.INVALID_ARGUMENT,
                      f"{where}: need num_examples >= 1 and a finite train_loss, got "
                      f"{req.num_examples} and {req.train_loss}")
    try:
        params = decode_like(req.params, like, context=where)
    except TrainError as e:
        raise Reject(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
    return (params, int(req.num_examples), float(req.train_loss)), nbytes


def _ids(ids: Collection[int]) -> str:
    shown = sorted(ids)
    return ", ".join(map(str, shown[:20])) + (f" and {len(shown) - 20} more" if len(shown) > 20
                                               else "")
