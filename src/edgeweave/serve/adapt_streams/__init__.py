"""Stream configuration adaptation (VideoStorm, Chameleon, in small): per stream a frame rate,
input resolution and model variant, chosen to maximise the streams' total quality within the
server's capacity, and re-chosen (with hysteresis) when the load changes.

* :mod:`.configs` measures each resolution x variant's accuracy and cost;
* :mod:`.allocate` picks knobs for N streams (exact, or VideoStorm's greedy) and the fixed
  baseline;
* :mod:`.adaptor` re-picks as capacity and streams change, without flapping.
"""

from edgeweave.serve.adapt_streams.adaptor import Decision, StreamAdaptor
from edgeweave.serve.adapt_streams.allocate import (
    METHODS,
    Allocation,
    Knob,
    Space,
    Stream,
    allocate,
    fixed,
)
from edgeweave.serve.adapt_streams.configs import (
    RESOLUTIONS,
    VARIANTS,
    StreamConfig,
    digits_cnn_at,
    measure_configs,
    resize,
)

__all__ = [
    "METHODS",
    "RESOLUTIONS",
    "VARIANTS",
    "Allocation",
    "Decision",
    "Knob",
    "Space",
    "Stream",
    "StreamAdaptor",
    "StreamConfig",
    "allocate",
    "digits_cnn_at",
    "fixed",
    "measure_configs",
    "resize",
]
