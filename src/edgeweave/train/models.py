"""Model specs for training, as strings that cross the wire: a grpc client builds the same
architecture the server names without any code being shipped.

    mlp:64,64,10       Linear(64,64) ReLU Linear(64,10)   (input 64, hidden 64, 10 classes)
    logreg:60,10       Linear(60,10)
    digits-cnn         the 8x8 digits CNN from edgeweave.graph (38k parameters)
    cnn:32,64,128      conv(1->32) relu conv(32->64) relu maxpool2 flatten linear(->128)
                       relu linear(128->10) on (N, 1, 8, 8) digits; 151k parameters, big
                       enough that update compression matters; a 4th number sets the classes
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
    if kind == "cnn":
        return _cnn(spec, args)
    raise TrainError(f"model {spec!r}: unknown kind {kind!r}; expected mlp:, logreg:, cnn: or "
                     "digits-cnn")


def sample_shape(spec: str) -> tuple[int, ...]:
    """The shape of ONE input sample of ``spec``'s model (no batch axis): what a peer must send
    to it, known without any data (split learning checks declared tensor shapes against it)."""
    kind, _, args = spec.partition(":")
    if kind in ("mlp", "logreg"):
        build_model(spec)  # validates the sizes
        return (int(args.split(",")[0]),)
    if kind in ("cnn", "digits-cnn"):
        build_model(spec)
        return (1, 8, 8)  # the 8x8 digits both CNNs are sized for
    build_model(spec)  # an unknown kind raises here
    raise TrainError(f"model {spec!r}: no known input shape")


def _cnn(spec: str, args: str) -> nn.Module:
    try:
        dims = [int(a) for a in args.split(",") if a.strip()]
    except ValueError:
        raise TrainError(f"model {spec!r}: sizes must be integers, e.g. cnn:32,64,128") from None
    if len(dims) not in (3, 4) or any(d < 1 for d in dims):
        raise TrainError(f"model {spec!r}: expected cnn:C1,C2,HIDDEN[,CLASSES] with positive "
                         "sizes, e.g. cnn:32,64,128")
    c1, c2, hidden = dims[:3]
    classes = dims[3] if len(dims) == 4 else 10
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(c2 * 16, hidden), nn.ReLU(),
        nn.Linear(hidden, classes),
    )
