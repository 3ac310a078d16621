"""A client's claimed sample count, bounded before any strategy weighs it.

Sample-weighted aggregation (FedAvg, FedOpt, FedAvgM, weighted norm bounding, the weighted train
loss) trusts ``num_examples``: one device claiming 2^62 examples with a zero model outweighs the
whole fleet and replaces the global model every round (measured on digits: test accuracy 0.08
against 0.936 honest). The server cannot verify a count, but it can refuse to let it grow: a
round counts at most what the device declared when it registered (``ClientInfo.num_examples``,
what selection already used) and at most the server's own cap ``max_client_examples``. A device
that lies consistently still gets at most the cap; the cap is the operator's statement of how
much data one device can plausibly hold. Clipped claims are logged and named in the round's
metrics line (``clipped``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from edgeweave.train.types import Updates

log = logging.getLogger(__name__)

#: default server-side cap on one client's num_examples (YAML ``max_client_examples``)
DEFAULT_MAX_CLIENT_EXAMPLES = 1_000_000


def bound_examples(updates: Updates, registered: Mapping[int, int], cap: int,
                   round_num: int) -> list[int]:
    """Clip ``updates.num_examples`` in place to min(claim, registered, cap) per client; return
    the ids whose claim was clipped (each logged as a warning). A client the server never saw
    registered is held to the cap alone."""
    if len(updates) == 0:
        return []
    limit = torch.tensor([min(registered.get(c, cap), cap) for c in updates.client_ids],
                         dtype=updates.num_examples.dtype)
    over = updates.num_examples > limit
    clipped = [updates.client_ids[i] for i in torch.nonzero(over).flatten().tolist()]
    for i in torch.nonzero(over).flatten().tolist():
        cid = updates.client_ids[i]
        log.warning("round %d: client %d claimed %d examples; counted as %d (its registration "
                    "%s, max_client_examples=%d)", round_num, cid,
                    int(updates.num_examples[i]), int(limit[i]),
                    registered.get(cid, "unknown"), cap)
    if clipped:
        updates.num_examples = torch.minimum(updates.num_examples, limit)
    return clipped
