import gzip
import struct

import numpy as np
import pytest
import torch

from edgeweave.train.data import (
    cifar10,
    digits,
    load_folder,
    load_npz,
    make_task,
    mnist,
    synthetic,
)
from edgeweave.train.types import TrainError


def test_digits_is_the_benchmark_split():
    xtr, _ytr, xte, yte = digits(test_size=360, seed=0)
    assert xtr.dtype == torch.float32 and xtr.shape[1] == 64
    assert len(xte) == 360 and len(xtr) + len(xte) == 1797
    assert float(xtr.min()) >= 0.0 and float(xtr.max()) == 1.0
    again = digits(test_size=360, seed=0)
    assert torch.equal(again[3], yte)
    assert not torch.equal(digits(seed=1)[3], yte)


def test_synthetic_heterogeneity_follows_alpha_beta():
    data, _tx, ty = synthetic(1.0, 1.0, n_clients=50, seed=0)
    assert data.num_clients == 50 and int(data.sizes().min()) >= 50
    assert data.x.shape[1] == 60 and int(data.y.max()) < 10 and len(ty) == 2000

    def feature_spread(a, b):
        d, _, _ = synthetic(a, b, n_clients=40, seed=3)
        means = torch.stack([d.client(i)[0].mean(0) for i in range(d.num_clients)])
        return float(means.mean(1).std())

    assert feature_spread(0.0, 0.0) < feature_spread(0.0, 5.0)
    iid_data, _, _ = synthetic(n_clients=20, seed=1, iid=True)
    assert iid_data.num_clients == 20


def test_synthetic_scales_to_ten_thousand_clients():
    data, _, _ = synthetic(1, 1, n_clients=10_000, seed=0, size_mu=2, size_sigma=1,
                           min_samples=5, test_size=100)
    assert data.num_clients == 10_000
    assert int(data.sizes().min()) >= 5


def test_load_npz_roundtrip_and_errors(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.arange(12, dtype=np.uint8).reshape(3, 4), y=np.array([0, 1, 2]))
    x, y = load_npz(p)
    assert x.dtype == torch.float32 and float(x.max()) == pytest.approx(11 / 255)
    assert y.tolist() == [0, 1, 2]
    np.savez(tmp_path / "nokey.npz", x=np.zeros((2, 2)))
    with pytest.raises(TrainError, match=r"nokey\.npz: missing key 'y'"):
        load_npz(tmp_path / "nokey.npz")
    np.savez(tmp_path / "floaty.npz", x=np.zeros((2, 2)), y=np.array([0.5, 1.0]))
    with pytest.raises(TrainError, match=r"floaty\.npz: key 'y' must be a 1-D integer"):
        load_npz(tmp_path / "floaty.npz")
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 2)), y=np.array([0, 1]))
    with pytest.raises(TrainError, match=r"short\.npz: key 'x' has shape \(3, 2\)"):
        load_npz(tmp_path / "short.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(TrainError, match="pickled"):
        load_npz(tmp_path / "obj.npz")
    with pytest.raises(TrainError, match="no such file"):
        load_npz(tmp_path / "absent.npz")


def test_load_folder_of_client_files_is_a_natural_split(tmp_path):
    rng = np.random.default_rng(0)
    for i, n in enumerate([3, 5, 2]):
        np.savez(tmp_path / f"client{i}.npz", x=rng.normal(size=(n, 4)).astype(np.float32),
                 y=rng.integers(0, 3, n))
    np.savez(tmp_path / "test.npz", x=rng.normal(size=(4, 4)), y=rng.integers(0, 3, 4))
    f = load_folder(tmp_path)
    assert f.data is not None and f.data.sizes().tolist() == [3, 5, 2]
    assert f.names == ["client0", "client1", "client2"] and f.test is not None
    task = make_task(f"folder:{tmp_path}", "natural", 3, "logreg:4,3")
    assert task.data.num_clients == 3 and len(task.test_y) == 4


def test_load_folder_of_class_images(tmp_path):
    from PIL import Image

    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for j in range(3):
            Image.fromarray(np.full((5, 5), 40 * c + j, dtype=np.uint8)).save(
                tmp_path / name / f"{j}.png")
    f = load_folder(tmp_path)
    assert f.data is None and f.x is not None and f.y is not None
    assert f.x.shape == (6, 1, 5, 5) and f.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert f.names == ["cat", "dog"]


def _idx(path, arr, gz):
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + b"".join(struct.pack(">i", d)
                                                            for d in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def test_mnist_reads_idx_files_plain_and_gzipped(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28))
    _idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, gz=True)
    _idx(tmp_path / "train-labels-idx1-ubyte", np.arange(7) % 10, gz=False)
    _idx(tmp_path / "t10k-images-idx3-ubyte", imgs[:2], gz=False)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 4]), gz=True)
    xtr, _ytr, _xte, yte = mnist(tmp_path)
    assert xtr.shape == (7, 1, 28, 28) and yte.tolist() == [3, 4]
    assert torch.allclose(xtr[3, 0], torch.tensor(imgs[3] / 255, dtype=torch.float32))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(TrainError, match="missing t10k-labels-idx1-ubyte"):
        mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09\x01")
    with pytest.raises(TrainError, match="header says"):
        mnist(tmp_path)


def test_cifar10_reads_binary_batches(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    for name, n in [(f"data_batch_{i}.bin", 2) for i in range(1, 6)] + [("test_batch.bin", 3)]:
        rec = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], 1)
        (d / name).write_bytes(rec.astype(np.uint8).tobytes())
    xtr, _ytr, xte, yte = cifar10(tmp_path)
    assert xtr.shape == (10, 3, 32, 32) and xte.shape == (3, 3, 32, 32)
    raw = np.frombuffer((d / "test_batch.bin").read_bytes(), np.uint8).reshape(3, 3073)
    assert yte.tolist() == raw[:, 0].tolist()
    assert torch.allclose(xte[1, 2], torch.tensor(raw[1, 1 + 2048:].reshape(32, 32) / 255,
                                                  dtype=torch.float32))
    (d / "data_batch_4.bin").unlink()
    with pytest.raises(TrainError, match=r"missing data_batch_4\.bin"):
        cifar10(tmp_path)
    (d / "data_batch_4.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(TrainError, match="not a whole number"):
        cifar10(tmp_path)


def test_make_task_shapes_and_errors():
    t = make_task("digits", "iid", 10, "digits-cnn", seed=0)
    assert t.data.x.shape[1:] == (1, 8, 8) and t.test_x.shape == (360, 1, 8, 8)
    assert t.model_fn()(t.test_x[:2]).shape == (2, 10)
    s = make_task("synthetic:0.5,0.5", "natural", 12, "logreg:60,10", seed=2)
    assert s.data.num_clients == 12
    with pytest.raises(TrainError, match="already split by client"):
        make_task("synthetic:1,1", "iid", 12, "logreg:60,10")
    with pytest.raises(TrainError, match="no natural client split"):
        make_task("digits", "natural", 12, "mlp:64,10")
    with pytest.raises(TrainError, match="unknown"):
        make_task("imagenet", "iid", 12, "mlp:64,10")
