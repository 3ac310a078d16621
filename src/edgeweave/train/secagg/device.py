"""A device's side of secure aggregation over the grpc backend.

:class:`edgeweave.train.grpc_client.FLClient` trains as usual; when the FIT task carries a
``secagg_setup`` it hands the new model here instead of uploading it. The update is encoded as
the round's ring vector at once and the trained model dropped from this object, so what leaves
the device from then on is only what :class:`~edgeweave.train.secagg.client.SecAggClient`
produces: public keys, encrypted shares, the masked vector and unmasking shares (and, when the
setup says ``active``, its signatures on its keys and on the survivor set; the device then
needs its long-term signing key and the registry of verification keys, see
:class:`~edgeweave.train.secagg.client.SecAggClient`).
"""

from __future__ import annotations

from collections import OrderedDict

from edgeweave.train.secagg import keys, wire
from edgeweave.train.secagg.client import SecAggClient
from edgeweave.train.secagg.messages import Params as SecAggParams
from edgeweave.train.secagg.quantize import FixedPoint
from edgeweave.train.secagg.vector import LOSS_CLIP, UpdateVector
from edgeweave.train.types import Params, TrainError
from edgeweave.train.wire import fl_pb2


class DeviceSecAgg:
    """One task's protocol state: built after local training, stepped by SECAGG tasks."""

    LAST_STEPS = ("survivors", "proof")  # the server's steps answered with unmasking shares

    def __init__(self, cid: int, setup: fl_pb2.SecAggSetup, global_params: Params,
                 new_params: Params, num_examples: int, loss: float,
                 signing_key: keys.SigningKey | None = None,
                 registry: dict[int, bytes] | None = None) -> None:
        try:
            vec = UpdateVector(
                tuple(global_params), tuple(tuple(v.shape) for v in global_params.values()),
                FixedPoint(setup.ring_bits, setup.frac_bits, setup.clip),
                FixedPoint(setup.ring_bits, setup.loss_frac_bits, LOSS_CLIP),
                int(setup.max_weight))
            self.params = SecAggParams(setup.ring_bits, setup.threshold, vec.length,
                                       bytes(setup.label), active=setup.active)
        except TrainError as e:
            raise TrainError(f"secure-aggregation setup from the server: {e}") from None
        delta = OrderedDict((k, new_params[k].double() - global_params[k].double())
                            for k in global_params)
        x = vec.encode(delta, num_examples, loss)
        self.client = SecAggClient(cid, x, self.params, signing_key, registry)

    def advertise(self, msg: fl_pb2.SecAggMessage) -> None:
        msg.keys.CopyFrom(wire.keys_to_msg(self.client.advertise()))

    def step(self, step: fl_pb2.SecAggStep, msg: fl_pb2.SecAggMessage) -> None:
        """Fill ``msg`` with the answer to the server's next step."""
        kind = step.WhichOneof("step")
        if kind == "roster":
            roster = {int(k.client_id): wire.keys_from_msg(k) for k in step.roster.keys}
            msg.shared.CopyFrom(wire.shared_to_msg(self.client.share_keys(roster)))
        elif kind == "inbox":
            inbox = {int(e.client_id): bytes(e.ciphertext) for e in step.inbox.shares}
            msg.masked = wire.masked_to_bytes(self.client.masked_input(inbox))
        elif kind == "survivors":
            unmask = self.client.unmask([int(c) for c in step.survivors.client_ids])
            msg.unmask.CopyFrom(wire.unmask_to_msg(unmask))
        elif kind == "consistency":
            msg.consistency = self.client.consistency(
                [int(c) for c in step.consistency.client_ids]).sig
        elif kind == "proof":
            u3 = self.client.u3 or []
            proof = wire.proof_from_msg(step.proof, len(u3))
            msg.unmask.CopyFrom(wire.unmask_to_msg(self.client.unmask(None, proof)))
        else:
            raise TrainError(f"secagg: the server sent an empty or unknown step {kind!r}")
