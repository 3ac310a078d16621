"""Weight codecs for uploads (issue 18, IONN): sizes follow from dtype and shape alone, int8 is
per output channel within half a step of every weight, and a node refuses bytes that do not
fit; the dequantized model agrees with the exact one (measured, on a small model)."""

import math

import pytest
import torch

from edgeweave.codec import CodecError
from edgeweave.codec.weights import (
    decode_weight,
    encode_weight,
    encoded_nbytes,
    roundtrip,
    weight_codec,
)
from edgeweave.graph import capture_spec
from edgeweave.profile.weight_codecs import upload_bytes, weight_agreement


@pytest.mark.parametrize("shape", [(8, 3, 3, 3), (5, 7), (4, 1), (3,)])
@pytest.mark.parametrize("codec", ["none", "fp16", "int8"])
def test_a_weight_decodes_to_what_it_was_within_its_codecs_step(codec, shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 3
    w[0] = 0.0  # an all-zero output channel (scale 0) decodes to zeros
    data = encode_weight(codec, w)
    assert len(data) == encoded_nbytes(codec, "float32", shape)
    back = decode_weight(codec, data, "float32", shape)
    assert back.dtype == torch.float32 and back.shape == w.shape
    used = weight_codec(codec, "float32", shape)
    if used == "int8":
        step = w.reshape(shape[0], -1).abs().amax(dim=1) / 127
        err = (back - w).reshape(shape[0], -1).abs().amax(dim=1)
        assert bool((err <= step / 2 + 1e-6).all()) and len(data) == 4 * shape[0] + w.numel()
    else:
        assert torch.allclose(back, w, rtol=1e-3 if used == "fp16" else 0.0, atol=0.0)
    assert torch.equal(back[0], torch.zeros_like(back[0]))
    assert torch.equal(roundtrip(codec, w), back)  # what the node holds, bit for bit


def test_only_float_weights_of_two_or_more_dims_go_int8():
    assert weight_codec("int8", "float32", (4, 3)) == "int8"
    assert weight_codec("int8", "float32", (4,)) == "none"  # a bias: small, kept exact
    assert weight_codec("int8", "int64", (4, 3)) == "none"  # e.g. num_batches_tracked
    assert weight_codec("fp16", "float32", (4,)) == "fp16"
    assert encoded_nbytes("int8", "int64", (2,)) == 16
    with pytest.raises(CodecError, match="--upload-codec"):
        weight_codec("int4", "float32", (4, 3))


def test_bytes_that_do_not_fit_their_weight_are_refused():
    data = encode_weight("int8", torch.randn(4, 3))
    with pytest.raises(CodecError, match="expected 28 bytes"):
        decode_weight("int8", data[:-1], "float32", (4, 3))
    bad = torch.tensor([math.nan, 1, 1, 1], dtype=torch.float32).numpy().tobytes()
    with pytest.raises(CodecError, match="finite"):
        decode_weight("int8", bad + bytes(12), "float32", (4, 3))
    with pytest.raises(CodecError, match="NaN"):
        encode_weight("int8", torch.tensor([[math.inf, 1.0]]))


def test_the_dequantized_model_agrees_with_the_exact_one_and_uploads_a_quarter():
    torch.manual_seed(0)  # the zoo's weights are random: this draw, every run
    graph = capture_spec("digits-cnn")
    agreement = weight_agreement(graph)
    assert agreement["fp16"] >= 0.98 and agreement["int8"] >= 0.95
    raw, int8 = upload_bytes(graph, "none"), upload_bytes(graph, "int8")
    assert raw.keys() == int8.keys() and sum(raw.values()) == sum(
        p.numel() * 4 for p in graph.module.state_dict().values())
    assert sum(int8.values()) < 0.3 * sum(raw.values())
