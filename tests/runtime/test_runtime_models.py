"""A node's model registry: built-ins are captured on the meta device (no random initialisation,
no forward pass), and that capture is exactly the one a real build gives."""

from __future__ import annotations

import pytest
import torch

from edgeweave.graph import capture, model_factory
from edgeweave.runtime.models import TrustedModels


@pytest.mark.parametrize(("name", "shape"), [("resnet18", (1, 3, 64, 64)),
                                              ("digits-cnn", (1, 1, 8, 8))])
def test_builtin_captured_on_meta_matches_a_real_capture(name: str,
                                                         shape: tuple[int, ...]) -> None:
    graph = TrustedModels().graph(name, shape)
    real = capture(model_factory(name)().module, shape, name=name, spec=name)

    assert [n.to_dict() for n in graph.nodes] == [n.to_dict() for n in real.nodes]
    assert (graph.outputs, graph.input_shape, graph.traced) == (real.outputs, real.input_shape,
                                                                real.traced)
    meta = {k: (v.shape, v.dtype, v.is_meta) for k, v in graph.module.state_dict().items()}
    assert meta == {k: (v.shape, v.dtype, True) for k, v in real.module.state_dict().items()}

    def specs(g):  # what a node reads from a capture to check a stage's values
        return [(n.name, tuple(n.meta["tensor_meta"].shape), n.meta["tensor_meta"].dtype)
                for n in g.module.graph.nodes if "tensor_meta" in n.meta]

    assert specs(graph) == specs(real) and specs(graph)


def test_meta_capture_still_tells_a_data_dependent_trace_from_the_model() -> None:
    """On meta only shapes and dtypes can be compared: a traced graph whose output shape differs
    from the model's is still caught (and the model captured by the fallback)."""

    class FirstCallOnly(torch.nn.Module):  # tracing (the second call) freezes the other branch
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            y = self.fc(x)
            return y if self.calls == 1 else y.sum(0, keepdim=True)

    with pytest.warns(UserWarning, match="tracing froze a data-dependent branch"):
        graph = capture(FirstCallOnly().to("meta"), torch.empty(2, 4, device="meta"))
    assert not graph.traced and graph.nodes[-1].out_shape == (2, 4)
