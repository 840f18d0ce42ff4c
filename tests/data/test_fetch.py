"""Fetching datasets: real-format fixture archives served by a local HTTP server (no internet).

Covers a good download, a truncated one, a wrong checksum, a server error, an interrupted
download resumed with Range, a read-only cache, offline, and `bitcl run` fetching on first use.
"""
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from bitcl.cli import main
from bitcl.data import registry
from bitcl.data.fetch import FetchError, data_root, fetch, mirror_base
from bitcl.data.readers import load_dataset, read_cifar_binary, read_svhn_mat
from bitcl.data.registry import RemoteDataset, RemoteFile
from bitcl.errors import DataError
from tests.conftest import REPO_DATA
from tests.data.fixture_server import FixtureServer, cifar_binary_tar_gz, mnist_like_files

IDX = Path(REPO_DATA) / "mnist-idx"
UNREACHABLE = "http://127.0.0.1:9/"  # discard port: nothing listens, the connection is refused


def _real_digits(n=120):
    with gzip.open(IDX / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8)[16:].reshape(-1, 28, 28)[:n]
    with gzip.open(IDX / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8)[8:][:n]
    return x, y


def _entry(name, files, reader="idx", sha=True):
    """A registry entry for fixture bytes, pinned to their own digests (official host unreachable)."""
    pins = [RemoteFile(f, (UNREACHABLE + f,), **({"sha256": hashlib.sha256(b).hexdigest()} if sha
                                                 else {"md5": hashlib.md5(b).hexdigest()}))
            for f, b in files.items()]
    return RemoteDataset(name, f"fixture {name}", tuple(pins), reader, "", "test fixture", classes=10)


@pytest.fixture
def mnist_fixture(monkeypatch):
    x, y = _real_digits()
    files = mnist_like_files(x, y, 100)
    entry = _entry("mnist", files)
    monkeypatch.setitem(registry.DATASETS, "mnist", entry)
    return entry, files, x, y


@pytest.fixture
def server():
    with FixtureServer() as srv:
        yield srv


def _serve(srv, name, files):
    for f, b in files.items():
        srv.files[f"/{name}/{f}"] = b


def test_good_download_is_verified_cached_and_read(tmp_path, server, mnist_fixture):
    """All four files arrive under ROOT/mnist under their own names; a second call downloads nothing."""
    entry, files, x, y = mnist_fixture
    _serve(server, "mnist", files)
    paths = fetch(entry, tmp_path, server.url, quiet=True)
    assert [p.name for p in paths] == list(files) and all(p.read_bytes() == files[p.name] for p in paths)
    assert not list((tmp_path / "mnist").glob("*.part"))
    before = len(server.requests)
    data = load_dataset("mnist", tmp_path, server.url, quiet=True)
    assert len(server.requests) == before  # cached: nothing fetched again
    assert data.x_train.shape == (100, 1, 28, 28) and data.y_test.tolist() == y[100:].tolist()
    assert np.array_equal((data.x_train[:, 0] * 255).round().numpy().astype(np.uint8), x[:100])


def test_truncated_download_is_refused_and_deleted(tmp_path, server, mnist_fixture):
    """A short file with a consistent length is complete for HTTP but fails its digest: never used."""
    entry, files, *_ = mnist_fixture
    _serve(server, "mnist", files)
    server.broken["/mnist/train-images-idx3-ubyte.gz"] = "truncate"
    with pytest.raises(FetchError, match="does not match its pinned sha256.*deleted"):
        fetch(entry, tmp_path, server.url, quiet=True)
    folder = tmp_path / "mnist"
    assert not (folder / "train-images-idx3-ubyte.gz").exists()
    assert not (folder / "train-images-idx3-ubyte.gz.part").exists()


def test_wrong_checksum_exits_1_with_one_line(tmp_path, server, mnist_fixture, monkeypatch, capsys):
    """A pin that the served file does not match: `bitcl data get` prints one line and exits 1."""
    entry, files, *_ = mnist_fixture
    bad = RemoteDataset("mnist", "", (RemoteFile(entry.files[0].name, entry.files[0].urls, md5="0" * 32),),
                        "idx", "", "")
    monkeypatch.setitem(registry.DATASETS, "mnist", bad)
    _serve(server, "mnist", files)
    code = main(["data", "get", "mnist", "--data-root", str(tmp_path), "--mirror", server.url, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "md5 " + "0" * 32 in err
    assert not any((tmp_path / "mnist").iterdir())


def test_server_error_names_the_url_and_where_to_put_the_file(tmp_path, server, mnist_fixture, capsys):
    entry, files, *_ = mnist_fixture
    _serve(server, "mnist", files)
    server.broken["/mnist/t10k-images-idx3-ubyte.gz"] = "500"
    code = main(["data", "get", "mnist", "--data-root", str(tmp_path), "--mirror", server.url, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"{server.url}/mnist/t10k-images-idx3-ubyte.gz: server answered 500" in err
    assert f"put t10k-images-idx3-ubyte.gz (sha256 " in err and str(tmp_path / "mnist") in err
    assert not (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").exists()


def test_interrupted_download_resumes_with_range(tmp_path, server, mnist_fixture):
    """The connection drops halfway: the .part is kept; the next call asks for the rest only."""
    entry, files, *_ = mnist_fixture
    name = "train-images-idx3-ubyte.gz"
    _serve(server, "mnist", files)
    server.broken[f"/mnist/{name}"] = "drop-once"
    with pytest.raises(FetchError, match="interrupted.*run the command again to resume"):
        fetch(entry, tmp_path, server.url, quiet=True)
    part = tmp_path / "mnist" / (name + ".part")
    half = len(files[name]) // 2
    assert part.stat().st_size == half and not (tmp_path / "mnist" / name).exists()
    fetch(entry, tmp_path, server.url, quiet=True)
    assert (f"/mnist/{name}", f"bytes={half}-") in server.requests
    assert (tmp_path / "mnist" / name).read_bytes() == files[name] and not part.exists()


def test_read_only_cache_exits_1_naming_the_path(tmp_path, server, mnist_fixture, monkeypatch, capsys):
    """A cache folder that cannot be written (simulated: the tests may run as root, whom
    permissions do not stop) fails before any download, one line with the path and OS reason."""
    _, files, *_ = mnist_fixture
    _serve(server, "mnist", files)
    real_touch = Path.touch

    def refuse(self, *a, **k):
        if self.name.endswith(".write-test"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_touch(self, *a, **k)
    monkeypatch.setattr(Path, "touch", refuse)
    code = main(["data", "get", "mnist", "--data-root", str(tmp_path), "--mirror", server.url, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"{tmp_path / 'mnist'}: cannot write (Permission denied)" in err
    assert server.requests == []


def test_offline_one_line_names_url_file_and_folder(tmp_path, mnist_fixture, monkeypatch, capsys):
    monkeypatch.delenv("BITCL_DATA_MIRROR", raising=False)
    code = main(["data", "get", "mnist", "--data-root", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert UNREACHABLE + "train-images-idx3-ubyte.gz: cannot connect" in err
    assert "put train-images-idx3-ubyte.gz (sha256" in err and str(tmp_path / "mnist") in err


def test_cached_file_that_was_altered_is_refused(tmp_path, server, mnist_fixture):
    entry, files, *_ = mnist_fixture
    _serve(server, "mnist", files)
    paths = fetch(entry, tmp_path, server.url, quiet=True)
    paths[1].write_bytes(b"not labels")
    with pytest.raises(FetchError, match="does not match its pinned"):
        fetch(entry, tmp_path, server.url, quiet=True)


def test_verify_and_list_report_the_cache(tmp_path, server, mnist_fixture, capsys):
    entry, files, *_ = mnist_fixture
    assert main(["data", "verify", "mnist", "--data-root", str(tmp_path)]) == 1
    _serve(server, "mnist", files)
    fetch(entry, tmp_path, server.url, quiet=True)
    capsys.readouterr()
    assert main(["data", "verify", "mnist", "--data-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count(": ok") == 4
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"x")
    assert main(["data", "verify", "--data-root", str(tmp_path)]) == 1
    assert "t10k-labels-idx1-ubyte.gz: MISMATCH" in capsys.readouterr().out
    assert main(["data", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cifar-10-binary.tar.gz  sha256 c4a38c50" in out and "notmnist" in out


def test_unknown_and_unfetchable_names_are_bad_input(tmp_path, capsys):
    assert main(["data", "get", "imagenet", "--data-root", str(tmp_path)]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert main(["data", "get", "facescrub", "--data-root", str(tmp_path)]) == 2
    assert "cannot fetch it" in capsys.readouterr().err


def test_data_root_and_mirror_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("BITCL_DATA_ROOT", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root(tmp_path / "flag") == tmp_path / "flag"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("BITCL_DATA_ROOT")
    assert data_root() == tmp_path / "xdg" / "bitcl"
    monkeypatch.setenv("BITCL_DATA_MIRROR", "http://env/")
    assert mirror_base("http://flag/") == "http://flag" and mirror_base() == "http://env"


def test_pinned_mnist_test_files_match_the_real_files_in_the_repo():
    """data/mnist-idx holds the official test files' data (recompressed: data/README.md's
    SHA-256 differ from the pins, the gzip header carries another time stamp) with exactly
    the official compressed sizes; their digits read back as MNIST's 10,000 test images."""
    pins = {f.name: f for f in registry.MNIST.files}
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (IDX / name).stat().st_size == pins[name].size
    x, y = _real_digits(10_000)
    assert x.shape == (10_000, 28, 28) and np.bincount(y).tolist()[:3] == [980, 1135, 1032]


def test_every_registered_file_has_a_strong_or_documented_pin():
    for entry in [*registry.DATASETS.values(), *registry.WEIGHTS.values()]:
        for f in entry.files:
            algorithm, digest = f.digest
            assert algorithm in ("sha256", "md5", "sha256-prefix") and all(c in "0123456789abcdef" for c in digest)
            assert len(digest) == {"sha256": 64, "md5": 32, "sha256-prefix": 8}[algorithm]
            assert all(u.endswith("/" + f.name) for u in f.urls)


def test_cifar_binary_archives_read_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    y10, y100 = np.arange(60) % 10, np.arange(60) % 100
    (tmp_path / "c10.tar.gz").write_bytes(cifar_binary_tar_gz(x, y10, 50, 10))
    (tmp_path / "c100.tar.gz").write_bytes(cifar_binary_tar_gz(x, y100, 50, 100))
    c10 = read_cifar_binary(tmp_path / "c10.tar.gz", "cifar10-binary")
    assert c10.x_train.shape == (50, 3, 32, 32) and c10.y_test.tolist() == y10[50:].tolist()
    assert np.array_equal((c10.x_test * 255).round().numpy().astype(np.uint8), x[50:])
    c100 = read_cifar_binary(tmp_path / "c100.tar.gz", "cifar100-binary")
    assert c100.y_train.tolist() == y100[:50].tolist()  # the fine label, not the coarse one
    (tmp_path / "bad.tar.gz").write_bytes(cifar_binary_tar_gz(x, y10, 50, 10)[:-200])
    with pytest.raises(DataError, match="bad.tar.gz"):
        read_cifar_binary(tmp_path / "bad.tar.gz", "cifar10-binary")
    with pytest.raises(DataError, match="not the CIFAR binary archive"):
        read_cifar_binary(tmp_path / "c10.tar.gz", "cifar100-binary")


def test_svhn_mat_reads_and_maps_label_10_to_0(tmp_path):
    import scipy.io
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (32, 32, 3, 7), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "t.mat", {"X": x, "y": np.array([[10], [1], [2], [3], [9], [10], [5]])})
    images, labels = read_svhn_mat(tmp_path / "t.mat")
    assert images.shape == (7, 3, 32, 32) and labels.tolist() == [0, 1, 2, 3, 9, 0, 5]
    assert np.array_equal(images[2, 1], x[:, :, 1, 2])
    scipy.io.savemat(tmp_path / "bad.mat", {"X": x, "y": np.zeros((7, 1))})
    with pytest.raises(DataError, match="labels must lie in 1..10"):
        read_svhn_mat(tmp_path / "bad.mat")


@pytest.mark.slow
def test_bitcl_run_fetches_a_benchmarks_data_on_first_use(tmp_path, server, monkeypatch, capsys):
    """`bitcl run --benchmark split-fashion-mnist` with an empty data root downloads (from the
    mirror set in BITCL_DATA_MIRROR), verifies, trains; the run records where the data came from."""
    import json
    x, y = _real_digits(400)
    files = mnist_like_files(x, y, 300)
    monkeypatch.setitem(registry.DATASETS, "fashion-mnist", _entry("fashion-mnist", files, sha=False))
    _serve(server, "fashion-mnist", files)
    monkeypatch.setenv("BITCL_DATA_ROOT", str(tmp_path / "cache"))
    monkeypatch.setenv("BITCL_DATA_MIRROR", server.url)
    out = tmp_path / "run"
    code = main(["run", "--method", "finetune", "--benchmark", "split-fashion-mnist", "--epochs", "1",
                 "--hidden", "16", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "cache" / "fashion-mnist").iterdir()) == sorted(files)
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["data_source"]["source"] == "fetched and verified by bitcl data: fashion-mnist"
    assert config["data_source"]["train_shape"] == [300, 1, 28, 28]
    requests = len(server.requests)
    assert main(["run", "--method", "finetune", "--benchmark", "split-fashion-mnist", "--epochs", "0",
                 "--hidden", "16", "--quiet"]) == 0
    assert len(server.requests) == requests  # second run: from the cache


def test_pretrained_weights_are_fetched_verified_by_prefix_and_read_weights_only(tmp_path, server, monkeypatch):
    """The ResNet-18 entry pins only an 8-hex SHA-256 prefix (all torchvision publishes): a file
    with that prefix loads with torch.load(weights_only=True); another file is refused."""
    import io

    import torch

    from bitcl.data.readers import load_weights
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.arange(6.0).view(2, 3)}, buffer)
    blob = buffer.getvalue()
    name = "resnet18-f37072fd.pth"
    entry = RemoteDataset("resnet18-imagenet", "fixture", (RemoteFile(name, (UNREACHABLE + name,),
                          sha256_prefix=hashlib.sha256(blob).hexdigest()[:8]),), "weights", "", "")
    monkeypatch.setitem(registry.WEIGHTS, "resnet18-imagenet", entry)
    server.files[f"/resnet18-imagenet/{name}"] = blob
    state = load_weights("resnet18-imagenet", tmp_path, server.url, quiet=True)
    assert torch.equal(state["conv1.weight"], torch.arange(6.0).view(2, 3))
    (tmp_path / "resnet18-imagenet" / name).unlink()
    server.files[f"/resnet18-imagenet/{name}"] = blob + b"tampered"
    with pytest.raises(FetchError, match="sha256-prefix"):
        load_weights("resnet18-imagenet", tmp_path, server.url, quiet=True)
    assert registry.RESNET18_IMAGENET.files[0].digest == ("sha256-prefix", "f37072fd")
