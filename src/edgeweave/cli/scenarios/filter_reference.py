"""The input-filter scenario's reference model as a model file a node's operator installs
(``edgeweave serve --model .../filter_reference.py:reference``): the zoo's SqueezeNet 1.0 with
its head resized to 11 classes (no object, or which digit), taking the scenario's 32x32 frames.

``edgeweave front filter --processes`` starts its node processes with this file, as a user
installs their own model: the node imports it (operator code, never a peer's), builds the
architecture itself, and the device deploys only the trained weights as raw tensors.
"""

from __future__ import annotations

from torch import nn

from edgeweave.cli.scenarios.input_filter import REFERENCE_CLASSES, SHAPE, with_classes
from edgeweave.graph import load_model


def reference(spec: str = "squeezenet1_0") -> tuple[nn.Module, tuple[int, ...]]:
    """A fresh (untrained) reference and the frame shape it takes."""
    return with_classes(load_model(spec).module, REFERENCE_CLASSES), SHAPE
