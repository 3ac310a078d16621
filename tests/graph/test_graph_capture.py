"""Capture details: node records, function ops, multiple outputs, and the fallbacks for models
torch.fx cannot trace."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgeweave.errors import GraphError, ModelError
from edgeweave.graph import NodeInfo, capture, run_stages, split
from edgeweave.graph.digits import DigitsCNN


class BranchyChain(nn.Module):
    """Children that chain, but a data-dependent branch that defeats symbolic tracing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        if x.sum() > 0:  # data-dependent control flow that changes no values
            x = x.contiguous()
        return self.fc(self.flat(self.pool(x)))


class BranchyFork(nn.Module):
    """Two children applied to the same input: running them as a chain is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.left(x) + self.right(x)
        return self.left(x) - self.right(x)


class TwoHeads(nn.Module):
    """Function and method ops, a weight read through get_attr, and a tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.randn(6, 5))
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x @ self.proj
        z = torch.relu(y) + y
        return self.head(z), torch.cat([z, y], dim=1).mean(dim=1) + self.proj.sum()


def test_node_info_round_trips_through_json() -> None:
    graph = capture(DigitsCNN(), (1, 1, 8, 8))
    for info in graph.nodes:
        again = NodeInfo.from_dict(json.loads(json.dumps(info.to_dict())))
        assert again == info
    conv = graph.node("_0")
    assert conv.attrs["kernel_size"] == [3, 3]
    assert hash(conv) == hash(NodeInfo.from_dict(conv.to_dict()))


def test_node_info_from_dict_names_missing_fields() -> None:
    with pytest.raises(GraphError, match="lacks field"):
        NodeInfo.from_dict({"name": "x"})


def test_digits_graph_is_a_chain_with_expected_ops() -> None:
    graph = capture(DigitsCNN(), (1, 1, 8, 8), name="digits")
    assert graph.is_chain()
    assert [n.op for n in graph.nodes] == [
        "placeholder",
        "conv2d",
        "relu",
        "conv2d",
        "relu",
        "max_pool2d",
        "flatten",
        "linear",
        "relu",
        "linear",
    ]
    pool = graph.node("_4")
    assert pool.flops == 32 * 4 * 4 * 4  # out_numel * kernel area
    assert graph.node("_5").flops == 0  # flatten moves no data
    assert graph.node("_1").flops == 16 * 8 * 8  # relu: one per element
    assert graph.edges[:2] == [(graph.placeholders[0], "_0"), ("_0", "_1")]
    assert graph.consumers(graph.placeholders[0]) == ["_0"]
    assert graph.outputs == ["_8"]


def test_function_ops_and_tuple_outputs() -> None:
    graph = capture(TwoHeads(), (2, 6))
    assert graph.traced
    ops = {n.name: n for n in graph.nodes}
    assert [n.op for n in graph.nodes] == [
        "placeholder",
        "matmul",
        "relu",
        "add",
        "linear",
        "cat",
        "mean",
        "sum",
        "add",
    ]
    assert ops["matmul"].flops == 2 * 2 * 5 * 6
    assert ops["matmul"].inputs == (graph.placeholders[0],)  # the weight (get_attr) is not a node
    assert ops["add"].flops == 2 * 5
    assert ops["cat"].flops == 0
    assert ops["mean"].flops == 2 * 10
    assert ops["sum_1"].inputs == ()  # it reads only the weight
    assert ops["sum_1"].flops == 30
    assert ops["matmul"].target == "_operator.matmul"
    assert ops["relu"].target == "torch.relu"
    assert len(graph.outputs) == 2
    assert not graph.is_chain()

    x = torch.randn(2, 6)
    with torch.no_grad():
        expected = graph.module(x)
        placement = {n.name: "device" for n in graph.nodes}
        placement[ops["head"].name] = "cloud"
        placement[ops["cat"].name] = "edge"
        placement[ops["mean"].name] = "edge"
        placement[ops["sum_1"].name] = "edge"
        placement[ops["add_1"].name] = "edge"
        stages = split(graph, placement)
        got = run_stages(stages, x)
    assert [s.key for s in stages] == ["device", "edge", "cloud"]
    # The weight is read in two stages: each gets its own copy rather than an input.
    assert all("proj" not in name for s in stages for name in s.inputs)
    assert "proj" in stages[0].module.code and "proj" in stages[1].module.code
    assert isinstance(got, tuple) and len(got) == 2
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b)
    assert stages[0].outputs == ["matmul", "add"]
    assert stages[1].inputs == ["matmul", "add"] and stages[1].outputs == ["add_1"]
    assert stages[2].inputs == ["add"] and stages[2].outputs == ["head"]


def test_size_ops_count_python_values() -> None:
    class Reshaper(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.size(0)
            return x.view(n, -1)

    graph = capture(Reshaper(), (2, 3, 4))
    size = next(n for n in graph.nodes if n.op == "size")
    assert size.out_bytes == 8 and size.out_shape is None and size.flops == 0
    view = next(n for n in graph.nodes if n.op == "view")
    assert view.in_bytes == 2 * 3 * 4 * 4 + 8


def test_chain_fallback_when_tracing_fails() -> None:
    model = BranchyChain()
    with pytest.warns(UserWarning, match="could not trace") as record:
        graph = capture(model, (1, 3, 8, 8), name="branchy")
    assert len(record) == 1
    assert not graph.traced
    assert "could not trace" in graph.fallback_reason
    assert "chain" in graph.fallback_reason
    assert [n.target for n in graph.nodes[1:]] == ["conv", "act", "pool", "flat", "fc"]
    assert graph.is_chain()
    assert graph.node("conv").flops == 2 * 4 * 8 * 8 * 27 + 4 * 8 * 8
    assert graph.node("fc").param_bytes == (4 * 2 + 2) * 4

    x = torch.randn(1, 3, 8, 8)
    names = [n.name for n in graph.nodes]
    placement = dict(zip(names, ["device"] * 3 + ["edge"] + ["cloud"] * 2, strict=True))
    with torch.no_grad():
        expected = model(x)
        got = run_stages(split(graph, placement), x)
    assert torch.equal(got, expected)


def test_single_node_fallback_when_children_do_not_chain() -> None:
    model = BranchyFork()
    with pytest.warns(UserWarning, match="single node"):
        graph = capture(model, (1, 3, 8, 8))
    assert not graph.traced
    assert "single node" in graph.fallback_reason
    assert [n.kind for n in graph.nodes] == ["placeholder", "call_module"]
    whole = graph.nodes[1]
    assert whole.op == "branchy_fork"
    assert whole.flops == 2 * (2 * 4 * 8 * 8 * 27 + 4 * 8 * 8)  # the two convs it calls
    assert whole.param_bytes == 2 * (4 * 27 + 4) * 4

    x = torch.randn(1, 3, 8, 8)
    placement = {graph.nodes[0].name: "device", whole.name: "cloud"}
    with torch.no_grad():
        assert torch.equal(run_stages(split(graph, placement), x), model(x))


def test_capture_accepts_an_example_tensor() -> None:
    x = torch.randn(3, 1, 8, 8)
    graph = capture(DigitsCNN(), x)
    assert graph.input_shape == (3, 1, 8, 8)
    assert graph.nodes[-1].out_shape == (3, 10)


def test_capture_rejects_bad_examples_and_outputs() -> None:
    with pytest.raises(ModelError, match="expected an input shape"):
        capture(DigitsCNN(), ("a", 2))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="failed"):
        capture(DigitsCNN(), (1, 3, 8, 8))  # wrong channel count

    class DictOut(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"y": x}

    with pytest.raises(ModelError, match="returned dict"):
        capture(DictOut(), (1, 2))


def test_graph_node_lookup_names_the_graph() -> None:
    graph = capture(DigitsCNN(), (1, 1, 8, 8), name="digits")
    with pytest.raises(GraphError, match="'digits' has no node named 'nope'"):
        graph.node("nope")


@pytest.mark.parametrize(
    ("layer", "op", "flops"),
    [
        (nn.Conv2d(3, 8, 3), "conv2d", 2 * 8 * 6 * 6 * 27 + 8 * 6 * 6),
        (nn.BatchNorm2d(3), "batch_norm", 2 * 3 * 8 * 8),  # its forward is not traceable
        (nn.MaxPool2d(2), "max_pool2d", 3 * 4 * 4 * 4),
    ],
)
def test_bare_layer_is_one_module_node(layer: nn.Module, op: str, flops: int) -> None:
    graph = capture(layer, (1, 3, 8, 8))
    assert graph.traced
    assert [n.kind for n in graph.nodes] == ["placeholder", "call_module"]
    assert graph.nodes[1].op == op and graph.nodes[1].flops == flops


def test_two_input_model() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.a(x) * self.b(y)

    x, y = torch.randn(2, 4), torch.randn(2, 4)
    graph = capture(Pair(), (x, y))
    assert graph.placeholders == ["x", "y"]
    placement = {"x": "device", "y": "edge", "a": "device", "b": "edge", "mul": "cloud"}
    stages = split(graph, placement)
    assert stages[1].inputs == ["y"]
    with torch.no_grad():
        assert torch.equal(run_stages(stages, x, y), graph.module(x, y))


def test_traced_graph_that_disagrees_with_the_model_falls_back() -> None:
    class Noisy(nn.Module):
        """Traceable, but each run draws new noise, so the traced graph cannot be verified."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + torch.rand(3)

    with pytest.warns(UserWarning, match="differs"):
        graph = capture(Noisy(), (1, 3))
    assert not graph.traced
    assert "traced graph's output differs" in graph.fallback_reason
    assert [n.kind for n in graph.nodes] == ["placeholder", "call_module"]
