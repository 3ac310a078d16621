"""A tiny real workload, trained once per session: three digits tasks from one backbone at
three sharing depths (8x8 input, width 4, two epochs: about a second on one thread)."""

from __future__ import annotations

import pytest
import torch

from edgeweave.serve.stems import pretrain_backbone, stem_data, train_tenants

SIDE, WIDTH = 8, 4
DEPTHS = (0, 2, 5)


@pytest.fixture(scope="session")
def stem_workload():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared 2-core host train far slower
    try:
        data = stem_data(SIDE)
        backbone = pretrain_backbone(data, SIDE, WIDTH, epochs=2)
        tenants = train_tenants(backbone, ["digit", "odd", "zero"], data, DEPTHS, epochs=2)
    finally:
        torch.set_num_threads(before)
    return data, backbone, tenants
