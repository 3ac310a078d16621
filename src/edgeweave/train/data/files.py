"""The user's own data on disk: ``.npz`` arrays, a folder of per-client files or class
subfolders of images, and local copies of MNIST (IDX files) and CIFAR-10 (binary version).

Nothing here unpickles: ``np.load(allow_pickle=False)`` and raw byte parsing only, because a
federated client loads files it did not write, and a pickle is code. That is why CIFAR-10 is read
from its binary distribution (``data_batch_1.bin``...) rather than the python one. Every error
names the file and what was expected there.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeweave.train.task import FederatedData
from edgeweave.train.types import TrainError

Arrays = tuple[torch.Tensor, torch.Tensor]


def _x_tensor(x: np.ndarray, where: str) -> torch.Tensor:
    """Float32 features; uint8 is taken to be pixels and scaled to [0, 1]."""
    if x.dtype == np.uint8:
        return torch.from_numpy(x.astype(np.float32) / 255.0)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TrainError(f"{where}: key 'x' has dtype {x.dtype}, expected a numeric array")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def load_npz(path: str | Path) -> Arrays:
    """(x, y) from an ``.npz`` holding ``x`` (N, ...) numeric and ``y`` (N,) integer labels."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such file (expected an .npz with keys 'x' and 'y')")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise TrainError(f"{path}: not a readable .npz without pickled objects ({e})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise TrainError(f"{path}: missing key {key!r} (has {sorted(arrays)}); expected x, y")
    x, y = arrays["x"], arrays["y"]
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise TrainError(
            f"{path}: key 'y' must be a 1-D integer array of class labels, got dtype {y.dtype} "
            f"shape {y.shape}"
        )
    if x.ndim < 1 or x.shape[0] != y.shape[0]:
        raise TrainError(
            f"{path}: key 'x' has shape {x.shape}, expected ({y.shape[0]}, ...) to match 'y'"
        )
    if y.size and y.min() < 0:
        raise TrainError(f"{path}: key 'y' has negative label {int(y.min())}")
    return _x_tensor(x, str(path)), torch.from_numpy(y.astype(np.int64))


@dataclass
class FolderData:
    """Data found in a folder: either already split by client (``data`` set, one client per
    ``.npz``; a ``test.npz`` becomes the test set) or centralised (``x``, ``y``, to partition)."""

    data: FederatedData | None
    x: torch.Tensor | None
    y: torch.Tensor | None
    test: Arrays | None
    names: list[str]


def load_folder(path: str | Path) -> FolderData:
    """One ``.npz`` per client (sorted by file name), or class subfolders of images."""
    path = Path(path)
    if not path.is_dir():
        raise TrainError(f"{path}: not a directory (expected client .npz files or class folders)")
    files = sorted(p for p in path.glob("*.npz") if p.name != "test.npz")
    test = load_npz(path / "test.npz") if (path / "test.npz").is_file() else None
    if files:
        loaded = [load_npz(p) for p in files]
        shapes = {tuple(x.shape[1:]) for x, _ in loaded}
        if len(shapes) > 1:
            raise TrainError(f"{path}: client files disagree on the sample shape: {sorted(shapes)}")
        x = torch.cat([a for a, _ in loaded])
        y = torch.cat([b for _, b in loaded])
        sizes = torch.tensor([len(b) for _, b in loaded])
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        return FolderData(FederatedData(x, y, offsets), None, None, test, [p.stem for p in files])
    x, y, classes = load_image_folder(path)
    return FolderData(None, x, y, test, classes)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def load_image_folder(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``path/<class>/<image>``: (N, C, H, W) float32 in [0, 1], labels by sorted class name."""
    from PIL import Image

    path = Path(path)
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise TrainError(f"{path}: no client .npz files and no class subfolders of images")
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in sorted((path / name).iterdir()):
            if f.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            with Image.open(f) as im:
                a = np.asarray(im.convert("L" if im.mode in ("1", "L", "P") else "RGB"))
            xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise TrainError(f"{path}: class folders {classes} hold no images ({_IMAGE_SUFFIXES})")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise TrainError(f"{path}: images differ in size {sorted(shapes)}; resize them first")
    x = torch.from_numpy(np.stack(xs).astype(np.float32) / 255.0)
    return x, torch.tensor(ys, dtype=torch.long), classes


def _open_maybe_gz(directory: Path, name: str) -> bytes:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            raw = candidate.read_bytes()
            return gzip.decompress(raw) if candidate.suffix == ".gz" else raw
    raise TrainError(f"{directory}: missing {name} (or {name}.gz), the MNIST IDX file")


def _idx(raw: bytes, name: str, ndim: int) -> np.ndarray:
    """An IDX array (LeCun's MNIST format): 0, 0, type 0x08 (ubyte), ndim, then big-endian
    int32 sizes, then the bytes."""
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise TrainError(f"{name}: not an unsigned-byte IDX file with {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise TrainError(f"{name}: header says {dims} ({int(np.prod(dims))} bytes), "
                         f"file has {body.size}")
    return body.reshape(dims)


def mnist(directory: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) from the four standard IDX files: (N, 1, 28, 28)
    float32 in [0, 1] and int64 labels."""
    d = Path(directory)
    out = []
    for split in ("train", "t10k"):
        imgs = _idx(_open_maybe_gz(d, f"{split}-images-idx3-ubyte"), f"{split}-images", 3)
        labels = _idx(_open_maybe_gz(d, f"{split}-labels-idx1-ubyte"), f"{split}-labels", 1)
        if len(imgs) != len(labels):
            raise TrainError(f"{d}: {split} has {len(imgs)} images but {len(labels)} labels")
        out += [torch.from_numpy(imgs[:, None].astype(np.float32) / 255.0),
                torch.from_numpy(labels.astype(np.int64))]
    return out[0], out[1], out[2], out[3]


_CIFAR_RECORD = 1 + 3 * 32 * 32


def _cifar_file(path: Path) -> Arrays:
    if not path.is_file():
        raise TrainError(f"{path.parent}: missing {path.name} (CIFAR-10 binary version)")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise TrainError(
            f"{path}: {raw.size} bytes is not a whole number of {_CIFAR_RECORD}-byte records "
            "(1 label byte + 3072 pixel bytes)"
        )
    rec = raw.reshape(-1, _CIFAR_RECORD)
    if rec[:, 0].max() > 9:
        raise TrainError(f"{path}: label byte {int(rec[:, 0].max())} out of range 0..9")
    x = rec[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return torch.from_numpy(x), torch.from_numpy(rec[:, 0].astype(np.int64))


def cifar10(directory: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) from ``data_batch_1..5.bin`` and ``test_batch.bin``
    (in ``directory`` or its ``cifar-10-batches-bin`` subfolder): (N, 3, 32, 32) in [0, 1]."""
    d = Path(directory)
    if (d / "cifar-10-batches-bin").is_dir():
        d = d / "cifar-10-batches-bin"
    train = [_cifar_file(d / f"data_batch_{i}.bin") for i in range(1, 6)]
    x_te, y_te = _cifar_file(d / "test_batch.bin")
    return (torch.cat([a for a, _ in train]), torch.cat([b for _, b in train]), x_te, y_te)
