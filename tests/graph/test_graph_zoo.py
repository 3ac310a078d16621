"""Model specifiers: built-ins, user files, weights, and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeweave.errors import ModelError
from edgeweave.graph import (
    ModelSpec,
    capture_spec,
    list_models,
    load_model,
    model_factory,
    model_skeleton,
    names_a_file,
    zoo,
)
from edgeweave.graph.digits import DigitsCNN

USER_MODELS = """
import torch
from torch import nn


class Tiny(nn.Module):
    input_shape = (1, 4)

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def with_attr():
    return Tiny()


def with_tuple():
    return nn.Sequential(nn.Linear(3, 3), nn.ReLU()), (2, 3)


def without_shape():
    return nn.Linear(3, 3)


def broken():
    raise ValueError("no such checkpoint")


def not_a_module():
    return 42
"""


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(USER_MODELS)
    return path


def test_list_models_describes_input_shapes() -> None:
    described = dict(list_models())
    assert "1x1x8x8" in described["digits-cnn"]
    assert "1x3x224x224" in described["resnet18"]


def test_builtin_digits_cnn() -> None:
    spec = load_model("digits-cnn")
    assert isinstance(spec, ModelSpec)
    assert spec.name == "digits-cnn" and spec.input_shape == (1, 1, 8, 8)
    assert not spec.module.training
    assert spec.module(torch.randn(spec.input_shape)).shape == (1, 10)


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(ModelError) as info:
        load_model("resnet19")
    message = str(info.value)
    assert "'resnet19'" in message
    assert all(name in message for name, _ in list_models())
    assert "file.py:factory" in message


def test_factory_with_input_shape_attribute(user_file: Path) -> None:
    spec = load_model(f"{user_file}:with_attr")
    assert spec.name == "my_models:with_attr"
    assert spec.input_shape == (1, 4)
    assert not spec.module.training


def test_factory_returning_module_and_shape(user_file: Path) -> None:
    graph = capture_spec(f"{user_file}:with_tuple")
    assert graph.input_shape == (2, 3)
    assert [n.op for n in graph.nodes] == ["placeholder", "linear", "relu"]


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        ("missing", "has no callable 'missing'"),
        ("without_shape", "gave no input shape; return (module, input_shape)"),
        ("broken", "raised ValueError: no such checkpoint"),
        ("not_a_module", "returned int; expected an nn.Module"),
    ],
)
def test_factory_errors(user_file: Path, factory: str, fragment: str) -> None:
    with pytest.raises(ModelError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as info:
        load_model(f"{user_file}:{factory}")
    assert factory in str(info.value) or "my_models.py" in str(info.value)


def test_missing_model_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.py"
    with pytest.raises(ModelError, match=r"model file '.*nope\.py'.*does not exist"):
        load_model(f"{path}:make")


def test_file_without_factory(user_file: Path) -> None:
    with pytest.raises(ModelError, match="no factory"):
        load_model(str(user_file))


def test_file_that_fails_to_import(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(ModelError, match=r"importing model file .*bad\.py.*ModuleNotFoundError"):
        load_model(f"{path}:make")


def test_weights_round_trip(tmp_path: Path) -> None:
    trained = DigitsCNN()
    path = tmp_path / "digits.pt"
    torch.save(trained.state_dict(), path)
    spec = load_model("digits-cnn", weights=str(path))
    loaded = spec.module.state_dict()
    assert loaded.keys() == trained.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in trained.state_dict().items())


def test_weights_with_mismatched_keys(tmp_path: Path) -> None:
    state = DigitsCNN().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["0.bias"]
    path = tmp_path / "mismatch.pt"
    torch.save(state, path)
    with pytest.raises(ModelError) as info:
        load_model("digits-cnn", weights=str(path))
    message = str(info.value)
    assert "mismatch.pt" in message
    assert "missing keys '0.bias'" in message
    assert "unexpected keys 'extra.weight'" in message


def test_weights_with_wrong_shapes(tmp_path: Path) -> None:
    state = DigitsCNN().state_dict()
    state["0.bias"] = torch.zeros(3)
    path = tmp_path / "shapes.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"shapes\.pt.*0\.bias"):
        load_model("digits-cnn", weights=str(path))


def test_weights_into_a_meta_built_model_with_buffers(tmp_path: Path) -> None:
    """A built-in with a weights file is built on the meta device and takes the file's tensors:
    the result is the model a real build would give (batch-norm statistics included), in the
    model's dtypes, with nothing left on meta, and the same input gives the same output."""
    torch.manual_seed(0)
    reference = model_factory("shufflenet_v2_x1_0")().module
    for name, buf in reference.named_buffers():
        if buf.is_floating_point():
            buf.uniform_(0.5, 1.5)  # not the constructor's zeros and ones
        elif name == "conv1.1.num_batches_tracked":
            buf.fill_(7)
    state = reference.state_dict()
    state["fc.weight"] = state["fc.weight"].double()  # copying would cast it; so must assign
    path = tmp_path / "shufflenet.pt"
    torch.save(state, path)
    skeleton = model_skeleton("shufflenet_v2_x1_0")
    assert skeleton is not None and all(p.is_meta for p in skeleton.module.parameters())

    loaded = load_model("shufflenet_v2_x1_0", weights=str(path)).module
    tensors = [*loaded.named_parameters(), *loaded.named_buffers()]
    assert tensors and not [n for n, t in tensors if t.is_meta]
    assert loaded.fc.weight.dtype == torch.float32 and loaded.fc.weight.requires_grad
    assert int(loaded.conv1[1].num_batches_tracked) == 7 and not loaded.training
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference.eval()(x))


def test_model_skeleton_only_for_models_a_state_dict_fully_covers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model with a tensor no state dict carries (a non-persistent buffer) or a file's model
    gets no skeleton, so loading weights builds it for real and keeps that tensor."""

    class WithTable(torch.nn.Linear):
        def __init__(self) -> None:
            super().__init__(2, 2)
            self.register_buffer("table", torch.arange(3.0), persistent=False)

    builtin = zoo._Builtin(WithTable, (1, 2), "test model")
    monkeypatch.setitem(zoo._BUILTINS, "with-table", builtin)
    assert model_skeleton("with-table") is None
    assert model_skeleton("./net.py:make") is None
    path = tmp_path / "table.pt"
    torch.save(WithTable().state_dict(), path)
    loaded = load_model("with-table", weights=str(path)).module
    assert torch.equal(loaded.table, torch.arange(3.0))


def test_weights_that_leave_a_meta_tensor_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strict loading covers every tensor; should one stay on meta all the same, the load
    fails naming it instead of handing on a model that cannot run."""
    path = tmp_path / "digits.pt"
    torch.save(DigitsCNN().state_dict(), path)
    state = torch.load(path, weights_only=True)
    state["0.bias"] = torch.empty(16, device="meta")
    monkeypatch.setattr(zoo.torch, "load", lambda *_a, **_k: state)
    with pytest.raises(ModelError, match=r"digits\.pt.* without values for '0\.bias'"):
        load_model("digits-cnn", weights=str(path))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"definitely not a torch file", "could not be read as a torch state dict"),
        (None, "holds list; expected a state dict"),
    ],
)
def test_bad_weights_file(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=rf"bad\.pt.*{fragment}"):
        load_model("digits-cnn", weights=str(path))


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"weights file '.*gone\.pt' does not exist"):
        load_model("digits-cnn", weights=str(tmp_path / "gone.pt"))


def test_model_factory_imports_once_and_builds_a_fresh_model_each_call(user_file: Path) -> None:
    factory = model_factory(f"{user_file}:with_tuple")
    a, b = factory(), factory()
    assert a.name == "my_models:with_tuple" and a.input_shape == (2, 3)
    assert a.module is not b.module and not a.module.training


@pytest.mark.parametrize(("spec", "is_file"), [
    ("resnet18", False), ("net:factory", False), ("digits-branchy:side=16,width=8", False),
    ("net.py:factory", True), ("/abs/net.py:factory", True), ("../x:f", True), ("~/x", True),
    ("sub/dir:f", True),
])
def test_names_a_file(spec: str, is_file: bool) -> None:
    assert names_a_file(spec) is is_file
