"""Model specs for training, as strings that cross the wire: a grpc client builds the same
architecture the server names without any code being shipped.

    mlp:64,64,10       Linear(64,64) ReLU Linear(64,10)   (input 64, hidden 64, 10 classes)
    logreg:60,10       Linear(60,10)
    digits-cnn         the 8x8 digits CNN from edgeweave.graph
"""

from __future__ import annotations

import itertools

from torch import nn

from edgeweave.train.types import TrainError


def build_model(spec: str) -> nn.Module:
    kind, _, args = spec.partition(":")
    if kind in ("mlp", "logreg"):
        try:
            dims = [int(a) for a in args.split(",") if a.strip()]
        except ValueError:
            raise TrainError(f"model {spec!r}: sizes must be integers, e.g. mlp:64,64,10") from None
        if len(dims) < 2 or any(d < 1 for d in dims) or (kind == "logreg" and len(dims) != 2):
            raise TrainError(
                f"model {spec!r}: expected {kind}:IN,{'HIDDEN,...,' if kind == 'mlp' else ''}"
                "CLASSES with positive sizes"
            )
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b))
        return nn.Sequential(*layers)
    if kind == "digits-cnn":
        from edgeweave.graph.digits import DigitsCNN

        return DigitsCNN()
    raise TrainError(f"model {spec!r}: unknown kind {kind!r}; expected mlp:, logreg: or digits-cnn")
