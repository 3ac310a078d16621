"""The codecs tensors cross a cluster's shared medium in, and what each costs in bytes.

A fixed-width codec (``none``, ``fp16``, ``int8``) has the same bytes per element whatever the
data, so the plan prices it exactly. A lossless compressor after it (``fp16+zstd``) depends on
the data. Most feature maps are about half zeros after a ReLU, and zstd takes fp16 maps of
vgg16 to 0.46-0.64 of their bytes, so the layer-wise halo and gathers put 35-42% fewer bytes on
the medium. Measured on emulated rpi4s (a device's encoding and decoding dilated with its
compute: runtime.dilation), that did not make a frame faster, at 18.88 or at 6 Mbit/s: the
encoding costs the devices about what the medium saves (CHANGELOG, seventeenth session).

Such a codec is priced by its ratio on the model's own tensors: one seeded random frame, as
the benchmark and the calibration pass send, and the feature maps the model computes from it
(:func:`samples`). The runtime's schedulers use the same ratio; the medium is charged the
bytes really sent. A user's camera frames compress better than random ones, so the price errs
on the slow side. One ratio is used for every map; vgg16's range from 0.46 (ReLU outputs) to
0.81 (a max-pool output).
"""

from __future__ import annotations

import math
from weakref import WeakKeyDictionary

import torch
from torch import fx, nn

from edgeweave.codec import get_codec
from edgeweave.errors import PlanError
from edgeweave.graph.capture import Graph

#: Codecs tensors may cross a cluster's medium in: fixed width (priced exactly), or fixed
#: width then a lossless compressor (priced by its ratio on a sample of the model's tensors).
FIXED_CODECS = ("none", "fp16", "int8")
MEDIUM_CODECS = (*FIXED_CODECS, "fp16+zstd", "int8+zstd", "fp16+lz4", "int8+lz4")
MAX_SAMPLE = 4_000_000  # elements of feature maps a ratio is measured on (about 0.1 s)

_SAMPLES: WeakKeyDictionary[nn.Module, tuple[torch.Tensor, torch.Tensor]] = \
    WeakKeyDictionary()


def check_codec(codec: str, flag: str = "--input-codec") -> str:
    """``codec`` if the cluster's medium can price it, else a PlanError naming ``flag``."""
    if codec not in MEDIUM_CODECS:
        raise PlanError(f"{flag}: {codec!r} is not a codec the cluster's medium can price; "
                        f"expected one of {', '.join(MEDIUM_CODECS)}")
    return codec


def codec_ratio(codec: str, flag: str = "--input-codec",
                sample: torch.Tensor | None = None) -> float:
    """Wire bytes per byte of a float32 tensor under ``codec``, measured through the codec
    itself, so it is the runtime's own figure (per-tensor parameters excluded): on ``sample``
    (the tensors it will carry; a compressing codec needs them), else on any values (a
    fixed-width codec's ratio does not depend on them)."""
    check_codec(codec, flag)
    if sample is None:
        if codec not in FIXED_CODECS:
            raise PlanError(f"{flag}: {codec!r} compresses, so its ratio needs a sample of the "
                            "tensors it carries")
        sample = torch.linspace(-1.0, 1.0, 4096)
    return get_codec(codec).encode(sample).nbytes / max(1, sample.numel() * 4)


def ratios(graph: Graph | None, input_codec: str, result_codec: str) -> tuple[float, float]:
    """The wire ratios of the frame's crops and of computed maps; a compressing codec's is
    measured on ``graph``'s own tensors (:func:`samples`), so it needs the graph."""
    check_codec(input_codec, "--input-codec")  # before the model runs for a sample
    check_codec(result_codec, "--result-codec")
    if input_codec in FIXED_CODECS and result_codec in FIXED_CODECS:
        return codec_ratio(input_codec), codec_ratio(result_codec)
    if graph is None:
        raise PlanError("a compressing medium codec is priced on the model's tensors; "
                        "no model was given")
    frame, maps = samples(graph)
    # a fixed-width codec's ratio is the same on any values: not measured on the sample
    return (codec_ratio(input_codec, sample=None if input_codec in FIXED_CODECS else frame),
            codec_ratio(result_codec, sample=None if result_codec in FIXED_CODECS else maps))


def samples(graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random frame of ``graph``'s input shape, and the feature maps the model
    computes from it that a convolution, pooling or linear layer reads (what a split or a
    fused block has cross the medium: not, say, a convolution's output before its ReLU),
    flattened and joined: at most ``MAX_SAMPLE`` elements, the same leading share of each
    map's rows across all its channels. Kept per model while it lives."""
    got = _SAMPLES.get(graph.module)
    if got is not None:
        return got
    g = torch.Generator().manual_seed(0)
    frame = torch.randn(graph.input_shape, generator=g)
    maps: list[torch.Tensor] = []
    if isinstance(graph.module, fx.GraphModule):
        with torch.inference_mode():
            _Maps(graph.module, maps).run(frame)
    total = sum(m.numel() for m in maps)
    share = min(1.0, MAX_SAMPLE / total) if total else 1.0
    joined = torch.cat([m[:, :, :max(1, math.ceil(m.shape[2] * share))].flatten()
                        for m in maps]) if maps else frame.flatten()
    _SAMPLES[graph.module] = (frame, joined)
    return frame, joined


_READERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d,
            nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class _Maps(fx.Interpreter):
    """Runs the graph, keeping (a copy of) every 4-D floating-point map a layer of
    ``_READERS`` (or a convolution or pooling function) reads, other than the frame itself."""

    def __init__(self, module: fx.GraphModule, out: list[torch.Tensor]) -> None:
        super().__init__(module)
        self.out = out
        self.seen: set[str] = set()

    def run_node(self, n: fx.Node) -> object:
        if self._reads_maps(n) and n.args and isinstance(n.args[0], fx.Node):
            src = n.args[0]
            value = self.env.get(src)
            if (src.op != "placeholder" and src.name not in self.seen
                    and isinstance(value, torch.Tensor) and value.dim() == 4
                    and value.is_floating_point()):
                self.seen.add(src.name)
                self.out.append(value.detach().clone())  # a later in-place op must not alter it
        return super().run_node(n)

    def _reads_maps(self, n: fx.Node) -> bool:
        if n.op == "call_module":
            return isinstance(self.module.get_submodule(str(n.target)), _READERS)
        if n.op == "call_function":
            name = getattr(n.target, "__name__", "")
            return "conv" in name or "pool" in name or name == "linear"
        return False
