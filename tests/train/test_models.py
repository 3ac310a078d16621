import pytest
import torch

from edgeweave.train.models import build_model
from edgeweave.train.types import TrainError


def test_cnn_spec_has_the_advertised_size_and_shape():
    m = build_model("cnn:32,64,128")
    assert sum(p.numel() for p in m.parameters()) == 151_306
    assert m(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert build_model("cnn:4,8,16,3")(torch.zeros(1, 1, 8, 8)).shape == (1, 3)


@pytest.mark.parametrize("spec", ["cnn:", "cnn:1,2", "cnn:a,b,c", "cnn:0,8,16"])
def test_bad_cnn_specs_name_the_expected_form(spec):
    with pytest.raises(TrainError, match=r"cnn:C1,C2,HIDDEN|integers"):
        build_model(spec)
