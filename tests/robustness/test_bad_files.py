"""The catalogue: the CLI on a table of malformed inputs and faults. Each one must end with exactly one
line on stderr, exit status 2, no traceback, and every file that was there before left byte-identical.

Most cases call ``bitcl.cli.main`` in-process (fast); a few run ``python -m bitcl`` as a real
subprocess. The tables of single defects come from the unit tests of each reader
(checkpoints, results.json) so that every defect they know is also tried through the CLI.
"""
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from bitcl.cli import main
from tests.conftest import run_cli
from tests.test_checkpoint import BAD_CHECKPOINTS
from tests.robustness import fixtures as fx
from tests.robustness.test_results_files import BAD_RESULTS, _results_of


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished run (2 tasks, checkpoints) and valid data files, copied per case."""
    folder = tmp_path_factory.mktemp("base")
    fx.write_run(folder / "run")
    return folder


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_refusal(argv, capsys, folder: Path, needle: str) -> str:
    """Run the CLI in-process; one line on stderr containing ``needle``, exit 2, ``folder`` unchanged."""
    before = snapshot(folder)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, (needle, err)
    after = snapshot(folder)
    assert after == before, sorted(set(after) ^ set(before)) or "a file changed"
    return err


# -- data files given to `bitcl run --data` (class: data) --------------------------------------------------
def _npz(path: Path, **arrays) -> Path:
    return fx.write_npz(path, **arrays)


def _npz_bytes(path: Path, damage) -> Path:
    fx.write_npz(path)
    path.write_bytes(damage(path.read_bytes()))
    return path


def _forged_npz(path: Path) -> Path:
    from tests.data.test_sources import _forged_npz as forge
    return forge(path, (10 ** 6, 10 ** 3, 10 ** 3))


def _idx(folder: Path, images=None, labels=None, damage=None) -> Path:
    fx.write_idx_dir(folder, images, labels)
    if damage:
        path = folder / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(damage(path.read_bytes()))
    return folder


def _cifar(folder: Path, changes: dict) -> Path:
    return fx.write_cifar_dir(folder, test={**fx.cifar_batch(), **changes})


def _pickle_with_code(folder: Path) -> Path:
    import os
    return fx.write_cifar_dir(folder, test=pickle.dumps({b"data": os.system, b"labels": []}))


DATA_CASES = [
    ("npz truncated", lambda d: _npz_bytes(d / "a.npz", lambda b: b[: len(b) // 2]), "not a readable .npz"),
    ("npz CRC corrupt", lambda d: _npz_bytes(d / "a.npz", lambda b: b[:200] + bytes([b[200] ^ 255]) + b[201:]),
     "not a readable .npz"),
    ("npz empty file", lambda d: _npz_bytes(d / "a.npz", lambda b: b""), "not a readable .npz"),
    ("npz header claims 10^12", lambda d: _forged_npz(d / "a.npz"), "claims shape (1000000, 1000, 1000)"),
    ("npz object array", lambda d: _npz(d / "a.npz", x=np.array([None] * 4, dtype=object)), "holds Python objects"),
    ("npz complex pixels", lambda d: _npz(d / "a.npz", x=np.zeros((40, 8, 8), np.complex64)), "integer or real"),
    ("npz NaN pixels", lambda d: _npz(d / "a.npz", x=np.full((40, 8, 8), np.nan)), "NaN or infinite"),
    ("npz pixels 1e30", lambda d: _npz(d / "a.npz", x=np.full((40, 8, 8), 1e30)), "0..1 or 0..255"),
    ("npz negative label", lambda d: _npz(d / "a.npz", y=np.full(40, -1)), "labels must lie in"),
    ("npz label 10^6", lambda d: _npz(d / "a.npz", y=np.full(40, 10 ** 6)), "labels must lie in"),
    ("npz fractional labels", lambda d: _npz(d / "a.npz", y=np.full(40, 0.5)), "labels must be integers"),
    ("npz label count", lambda d: _npz(d / "a.npz", y=np.zeros(39, int)), "vector of 40 labels"),
    ("npz no y", lambda d: (np.savez(d / "a.npz", x=np.zeros((4, 8, 8), np.uint8)), d / "a.npz")[1], "missing"),
    ("npz 5-d x", lambda d: _npz(d / "a.npz", x=np.zeros((40, 2, 2, 2, 2), np.uint8)), "x must have shape"),
    ("idx gzip truncated", lambda d: _idx(d / "idx", damage=lambda b: b[: len(b) // 2]), "unreadable IDX"),
    ("idx gzip CRC", lambda d: _idx(d / "idx", damage=lambda b: b[:-8] + bytes(8)), "unreadable IDX"),
    ("idx header 10^12", lambda d: _idx(d / "idx", images=b"\0\0\x08\x03" + (10 ** 4).to_bytes(4, "big") * 3),
     "refusing to allocate"),
    ("idx body short", lambda d: _idx(d / "idx", images=b"\0\0\x08\x03" + (100).to_bytes(4, "big") * 3),
     "IDX body has 0 bytes"),
    ("idx wrong ndim", lambda d: _idx(d / "idx", images=b"\0\0\x08\x01" + (4).to_bytes(4, "big") + bytes(4)),
     "1 dimensions, expected 3"),
    ("idx not ubyte", lambda d: _idx(d / "idx", labels=b"\0\0\x0b\x01" + bytes(8)), "not an unsigned-byte IDX"),
    ("cifar label 10", lambda d: _cifar(d / "c", {b"labels": [10] * 10}), "label 10 outside 0..9"),
    ("cifar label -1", lambda d: _cifar(d / "c", {b"labels": [-1] * 10}), "label -1 outside"),
    ("cifar float labels", lambda d: _cifar(d / "c", {b"labels": [1.0] * 10}), "list of integers"),
    ("cifar wrong width", lambda d: _cifar(d / "c", {b"data": np.zeros((10, 1024), np.uint8)}), "(n, 3072)"),
    ("cifar label count", lambda d: _cifar(d / "c", {b"labels": [1] * 3}), "10 images but 3 labels"),
    ("cifar pickled code", _pickle_with_code, "refusing to load"),
    ("cifar garbage", lambda d: fx.write_cifar_dir(d / "c", test=b"\x80\x05garbage"), "not a CIFAR python batch"),
]


@pytest.mark.parametrize("name, make, needle", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(tmp_path, capsys, name, make, needle):
    """`bitcl run --data BAD` refuses in one line and writes no run directory."""
    data = make(tmp_path)
    expect_refusal(["run", "--method", "finetune", "--data", data, "--out", tmp_path / "out", "--epochs", "1"],
                   capsys, tmp_path, needle)
    assert not (tmp_path / "out").exists()


# -- checkpoints given to `bitcl export` and `bitcl analyze bits` (class: checkpoint) ------------------------
@pytest.mark.parametrize("name, change, needle", BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_bad_checkpoint_through_export(tmp_path, capsys, name, change, needle):
    """`bitcl export BAD.safetensors` refuses each checkpoint defect in one line and writes nothing."""
    tensors, meta = fx.checkpoint_parts()
    change(tensors, meta)
    path = fx.write_parts(tmp_path / "task-0.safetensors", tensors, meta)
    expect_refusal(["export", path, "--format", "packed", "--task", "0", "--out", tmp_path / "x.safetensors"],
                   capsys, tmp_path, needle)
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("damage, needle", [
    (lambda b: b[: len(b) // 3], "not a readable safetensors checkpoint"),
    (lambda b: b"\xff" * 8 + b[8:], "not a readable safetensors checkpoint"),
    (lambda b: b"{}", "not a readable safetensors checkpoint"),
])
def test_corrupt_latest_checkpoint_through_resume_and_analyze(base, tmp_path, capsys, damage, needle):
    """`bitcl run --resume` and `bitcl analyze bits` on a run whose newest checkpoint is damaged: refused,
    the run left exactly as it was (nothing resumed from half a file)."""
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    latest = run / "checkpoints" / "task-1.safetensors"
    latest.write_bytes(damage(latest.read_bytes()))
    expect_refusal(["analyze", "bits", run], capsys, tmp_path, needle)
    (run / "results.json").unlink()  # an interrupted run: checkpoints without results
    expect_refusal(["run", "--method", "finetune", "--data", fx.write_npz(tmp_path / "d.npz"), "--hidden", "12",
                    "--tasks", "2", "--resume", "--out", run, "--epochs", "1"], capsys, tmp_path, needle)


# -- results.json given to `bitcl report` (class: results) ------------------------------------------------
@pytest.mark.parametrize("name, change, needle", BAD_RESULTS, ids=[c[0] for c in BAD_RESULTS])
def test_bad_results_through_report(tmp_path, capsys, name, change, needle):
    """`bitcl report RUN` refuses results.json that is valid JSON but not results, writing no report."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(_results_of(change)))
    expect_refusal(["report", run, "--out", tmp_path / "rep" / "r.md"], capsys, tmp_path, needle)


# -- run directories and writers (class: run directory) --------------------------------------------------
RUN_DIR_CASES = [
    ("report over results.json", lambda r, t: ["report", r, "--out", r / "results.json"], "write it elsewhere"),
    ("report over log.txt", lambda r, t: ["report", r, "--out", r / "log.txt"], "write it elsewhere"),
    ("report into checkpoints", lambda r, t: ["report", r, "--out", r / "checkpoints" / "r.md"], "write it elsewhere"),
    ("export over its checkpoint", lambda r, t: ["export", r / "checkpoints" / "task-1.safetensors", "--format",
                                                 "packed", "--task", "1", "--out", r / "checkpoints" /
                                                 "task-1.safetensors"], "write it elsewhere"),
    ("export into checkpoints", lambda r, t: ["export", r / "checkpoints" / "task-1.safetensors", "--format",
                                              "packed", "--task", "1", "--out", r / "checkpoints" / "x.bin"],
     "write it elsewhere"),
    ("export over results.json", lambda r, t: ["export", r / "checkpoints" / "task-1.safetensors", "--format",
                                               "onnx", "--task", "1", "--out", r / "results.json"],
     "write it elsewhere"),
    ("export onto the run folder", lambda r, t: ["export", r / "checkpoints" / "task-0.safetensors", "--format",
                                                 "packed", "--task", "0", "--out", r], "is a directory"),
    ("run --out a file", lambda r, t: ["run", "--out", r / "log.txt"], "not a directory"),
    ("run --out inside checkpoints", lambda r, t: ["run", "--out", r / "checkpoints" / "x"], "inside the checkpoints"),
    ("run on a finished run", lambda r, t: ["run", "--out", r], "already holds a run"),
    ("run --overwrite --resume", lambda r, t: ["run", "--out", r, "--overwrite", "--resume"], "each other"),
    ("run --out empty", lambda r, t: ["run", "--out", ""], "--out"),
    ("analyze a missing run", lambda r, t: ["analyze", "bits", t / "nothing"], "no such run directory"),
    ("report a missing run", lambda r, t: ["report", t / "nothing"], "no such results file"),
]


@pytest.mark.parametrize("name, argv, needle", RUN_DIR_CASES, ids=[c[0] for c in RUN_DIR_CASES])
def test_run_directory_is_protected(base, tmp_path, capsys, name, argv, needle):
    """Writers pointed at a run's files, folders that hold a run, contradictory flags: refused, run intact."""
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    expect_refusal(argv(run, tmp_path), capsys, tmp_path, needle)


def test_failed_overwrite_keeps_the_old_run(base, tmp_path, capsys, small_npz):
    """`bitcl run --overwrite` whose new run diverges: exit 2, one line saying the old run is unchanged,
    the old run byte-identical, no staging folder left."""
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    expect_refusal(["run", "--method", "finetune", "--data", small_npz, "--tasks", "2", "--epochs", "1", "--hidden",
                    "8", "--lr", "1e30", "--overwrite", "--quiet", "--out", run], capsys, tmp_path,
                   f"the previous run in {run} is unchanged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# -- a handful as real subprocesses ------------------------------------------------------------------------
@pytest.mark.slow  # two new interpreters
def test_real_subprocesses(base, tmp_path):
    """As a user runs it: a corrupt gzip IDX folder and a results.json that is a list, one line, exit 2."""
    idx = _idx(tmp_path / "idx", damage=lambda b: b[: len(b) // 2])
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("[1, 2, 3]")
    for args, needle in ((["run", "--data", idx, "--out", tmp_path / "out"], "unreadable IDX file"),
                         (["report", run], "expected a JSON object, got a list")):
        done = run_cli(*args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
