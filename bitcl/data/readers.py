"""Readers of the fetched archives, without pickle: IDX (MNIST family), the CIFAR-10/100
*binary* versions (read from the .tar.gz in place, nothing extracted) and SVHN's MATLAB files.

``load_dataset(name)`` fetches (if needed), verifies and reads a registered dataset into an
:class:`~bitcl.data.sources.ArrayData` with its official train/test split.
"""
from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from bitcl.errors import DataError
from bitcl.train.validate import check_fits_memory

from .fetch import fetch
from .registry import find
from .sources import ArrayData, from_arrays, load_idx_dir, load_source, read_exactly

CIFAR_PIXELS = 3 * 32 * 32
# (members of the training split, member of the test split, label bytes per record, classes)
CIFAR_LAYOUT = {
    "cifar10-binary": ([f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
                       "cifar-10-batches-bin/test_batch.bin", 1, 10),
    "cifar100-binary": (["cifar-100-binary/train.bin"], "cifar-100-binary/test.bin", 2, 100),
}
MAX_MEMBER_BYTES = 1 << 30  # a CIFAR binary member is 30 MB; a bigger claim means a forged archive


def cifar_records(raw: bytes, label_bytes: int, classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Records of ``label_bytes`` label bytes (CIFAR-100: coarse, fine; the last is used) and
    3,072 pixel bytes (red, green, blue planes of 32x32). Returns uint8 images (n, 3, 32, 32)
    and int64 labels."""
    record = label_bytes + CIFAR_PIXELS
    if len(raw) == 0 or len(raw) % record:
        raise DataError(f"{where}: {len(raw):,} bytes is not a whole number of {record}-byte CIFAR records")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)
    if labels.max() >= classes:
        raise DataError(f"{where}: label {int(labels.max())} outside 0..{classes - 1}")
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), labels


def read_cifar_binary(archive: Path, layout: str) -> ArrayData:
    """CIFAR-10/100 from the official binary ``.tar.gz``, members read in place."""
    train_members, test_member, label_bytes, classes = CIFAR_LAYOUT[layout]
    parts = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in [*train_members, test_member]:
                info = tar.getmember(member)
                if not info.isfile() or info.size > MAX_MEMBER_BYTES:
                    raise DataError(f"{archive}: {member} is not a regular CIFAR batch file")
                check_fits_memory(4 * info.size, f"{archive}: {member}")
                handle = tar.extractfile(info)
                parts[member] = cifar_records(read_exactly(handle, info.size), label_bytes, classes,
                                              f"{archive}: {member}")
    except KeyError as error:
        raise DataError(f"{archive}: not the CIFAR binary archive (no member {error})") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(f"{archive}: unreadable tar.gz ({error})") from None
    train = [parts[m] for m in train_members]
    x = np.concatenate([p[0] for p in train] + [parts[test_member][0]])
    y = np.concatenate([p[1] for p in train] + [parts[test_member][1]])
    n_train = sum(len(p[1]) for p in train)
    mask = np.concatenate([np.ones(n_train, bool), np.zeros(len(parts[test_member][1]), bool)])
    return from_arrays("cifar10" if classes == 10 else "cifar100", x, y, mask)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN format 2: ``X`` uint8 (32, 32, 3, n), ``y`` (n, 1) with 10 standing for the digit 0."""
    import scipy.io
    try:
        mat = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except (ValueError, OSError, TypeError, NotImplementedError, zlib.error) as error:
        raise DataError(f"{path}: not a readable SVHN .mat file ({str(error).splitlines()[0][:120]})") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X must be uint8 of shape (32, 32, 3, n), got {getattr(x, 'shape', None)}")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise DataError(f"{path}: y must hold {x.shape[3]} labels, got {getattr(y, 'shape', None)}")
    labels = y.reshape(-1).astype(np.int64)
    if labels.min() < 1 or labels.max() > 10:
        raise DataError(f"{path}: SVHN labels must lie in 1..10, got {labels.min()}..{labels.max()}")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels % 10  # 10 -> digit 0


def read_dataset(name: str, files: list[Path]) -> ArrayData:
    """Read the verified ``files`` of registered dataset ``name``."""
    entry = find(name)
    if entry.reader == "idx":
        data = load_idx_dir(files[0].parent)
        return ArrayData(entry.name, data.x_train, data.y_train, data.x_test, data.y_test)
    if entry.reader in CIFAR_LAYOUT:
        return read_cifar_binary(files[0], entry.reader)
    if entry.reader == "svhn-mat":
        (xtr, ytr), (xte, yte) = read_svhn_mat(files[0]), read_svhn_mat(files[1])
        mask = np.concatenate([np.ones(len(ytr), bool), np.zeros(len(yte), bool)])
        return from_arrays("svhn", np.concatenate([xtr, xte]), np.concatenate([ytr, yte]), mask)
    raise DataError(f"{name}: not an image dataset (reader {entry.reader!r})")


def load_dataset(name: str, root: Optional[str | os.PathLike] = None, mirror: Optional[str] = None,
                 quiet: bool = False, download: bool = True) -> ArrayData:
    """A registered dataset, fetched into the data root on first use and verified, as ArrayData."""
    entry = find(name)
    data = read_dataset(entry.name, fetch(entry, root, mirror, quiet, download))
    data.source = f"fetched and verified by bitcl data: {entry.name}"
    return data


def load_data(data: Optional[str | os.PathLike], quiet: bool = False) -> ArrayData:
    """``--data``: a path (:func:`bitcl.data.sources.load_source`), or, when no such path exists,
    the name of a dataset bitcl fetches (``bitcl data list``), fetched on first use."""
    from .registry import DATASETS
    if data is not None and not Path(data).exists() and str(data).lower() in DATASETS:
        return load_dataset(str(data).lower(), quiet=quiet)
    return load_source(data)


def load_weights(name: str, root: Optional[str | os.PathLike] = None, mirror: Optional[str] = None,
                 quiet: bool = False) -> dict:
    """A registered weights file (e.g. ``resnet18-imagenet``), fetched and verified like data,
    read with ``torch.load(weights_only=True)`` (no arbitrary unpickling): name -> tensor."""
    import torch
    entry = find(name)
    if entry.reader != "weights":
        raise DataError(f"{name}: a dataset, not a weights file")
    path, = fetch(entry, root, mirror, quiet)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a malformed file can raise almost anything
        raise DataError(f"{path}: not a weights-only torch file ({str(error).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: not a state dict of tensors")
    return state
