"""Secure aggregation (Bonawitz et al. 2017; sparse graphs: Bell et al. 2020): the server learns
only the sum of the clients' fixed-point-quantised updates, even when clients drop out.

Layers, bottom up: :mod:`quantize` (fixed point in Z_{2^k}), :mod:`prg` (AES-CTR mask
expansion), :mod:`shamir` (t-of-n sharing), :mod:`keys` (X25519 + HKDF + AES-GCM),
:mod:`messages`, :mod:`client` and :mod:`server` (the four rounds), :mod:`simulate` (all of it
in one process), :mod:`vector` (a FedAvg update as a ring vector), :mod:`aggregate` (the
strategy) and :mod:`backend` / :mod:`device` (the same protocol over the grpc backend).

Two threat models: by default (``Params.active`` False) an honest-but-curious server; with
``active=True`` (Params, SecAggFedAvg, SecAggGrpcBackend) a server that may lie, met with
Ed25519-signed advertisements checked against a PKI registry and the ConsistencyCheck round
(see :mod:`client`). Off by default: it adds a signature check per neighbour and per survivor
to every client's work, and O(n) bytes down per client.
"""

from edgeweave.train.secagg.aggregate import SecAggFedAvg
from edgeweave.train.secagg.simulate import SecAggResult, make_graph, secure_sum

__all__ = ["SecAggFedAvg", "SecAggResult", "make_graph", "secure_sum"]
