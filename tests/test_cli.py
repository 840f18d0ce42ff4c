"""The CLI as a user runs it: results.json contract, one-line errors with exit 2, resume after kill -9."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors import safe_open

from bitcl.versions import code_digest
from tests.conftest import cli, run_cli

FAST = ["--hidden", "64", "--epochs", "1", "--quiet"]


def test_list_names_methods_and_benchmarks():
    """`bitcl list` prints one line per method and benchmark."""
    out = cli("list")
    assert out.returncode == 0
    for word in ("blip", "finetune", "joint", "split-mnist", "permuted-mnist"):
        assert word in out.stdout


@pytest.mark.slow
def test_run_writes_the_results_contract(tmp_path, small_npz):
    """A finished run writes results.json, accuracy_matrix.csv, log.txt and one checkpoint per task."""
    out_dir = tmp_path / "run"
    done = run_cli("run", "--method", "finetune", "--data", small_npz, "--out", out_dir, *FAST)
    assert done.returncode == 0, done.stderr
    assert "ACC" in done.stdout
    res = json.loads((out_dir / "results.json").read_text())
    for key in ("bitcl_version", "method", "benchmark", "scenario", "seed", "config", "tasks", "accuracy_matrix",
                "acc", "bwt", "forgetting", "timing", "memory"):
        assert key in res
    assert res["code_digest"] == code_digest()
    matrix = res["accuracy_matrix"]
    assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
    assert res["acc"] == pytest.approx(sum(matrix[-1]) / 5)
    assert res["bwt"] == pytest.approx(sum(matrix[4][j] - matrix[j][j] for j in range(4)) / 4)
    assert len(res["capacity"]) == 5 and res["capacity"][-1] == 0.0  # finetune freezes nothing
    assert {"train_seconds", "epoch_seconds", "consolidate_seconds", "eval_seconds"} <= set(res["timing"])
    assert all(len(v) == 5 for v in res["timing"].values())
    assert (out_dir / "accuracy_matrix.csv").read_text().count("\n") == 6
    names = sorted(os.listdir(out_dir / "checkpoints"))
    assert names == [f"task-{t}.safetensors" for t in range(5)]
    with safe_open(str(out_dir / "checkpoints" / "task-4.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["bitcl"])
        key = "backbone.layers.1.weight"
        assert meta[key]["bits"] == 20 and f.get_tensor(key + ".codes").dtype.is_floating_point is False
        assert str(f.get_tensor(key + ".frozen").dtype) == "torch.uint8"


@pytest.mark.parametrize("args, needle", [
    (["--method", "nope"], "unknown method"),
    (["--benchmark", "nope"], "unknown benchmark"),
    (["--epochs", "-1"], "--epochs"),
    (["--bits", "25"], "bits"),
    (["--bits", "1"], "bits"),
    (["--lr", "nan"], "--lr"),
    (["--data", "/no/such/file.npz"], "no such"),
    (["--method", "blip", "--backbone", "float"], "quantised backbone"),
    (["--method", "finetune", "--fisher-prior", "1"], "unrecognized"),
    (["--method", "blip", "--fisher-prior", "-1"], "fisher-prior"),
    pytest.param(["--tasks", "3"], "equal tasks", marks=pytest.mark.slow),  # loads the embedded digits
    (["--classes", "1,x"], "integers"),
    (["--method", "ewc", "--c", "abc"], "--c"),      # EWC's --c, not an abbreviation of --config
    (["--conf", "x.json"], "unrecognized"),          # no prefix abbreviations at all
])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    """Each bad input gets exactly one stderr line naming the problem, exit status 2, no traceback."""
    done = cli("run", *args, "--out", tmp_path / "r", "--quiet")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "r" / "results.json").exists()


@pytest.mark.slow
def test_method_option_c_is_not_read_as_config(tmp_path, small_npz):
    """`--method ewc --c 100` sets EWC's penalty strength (it once matched --config by abbreviation)."""
    done = cli("run", "--method", "ewc", "--c", "100", "--data", small_npz, "--out", tmp_path / "r", *FAST)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r" / "results.json").read_text())["config"]["method_options"]["c"] == 100


@pytest.mark.slow
def test_existing_run_is_never_overwritten_unless_asked(tmp_path, small_npz):
    """A second run into the same --out is refused (exit 2) and leaves the first run intact."""
    out_dir = tmp_path / "run"
    assert cli("run", "--method", "finetune", "--data", small_npz, "--out", out_dir, "--tasks", "1",
                   "--benchmark", "permuted-mnist", *FAST).returncode == 0
    before = (out_dir / "results.json").read_bytes()
    again = cli("run", "--method", "finetune", "--data", small_npz, "--out", out_dir, "--tasks", "1",
                    "--benchmark", "permuted-mnist", *FAST)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert (out_dir / "results.json").read_bytes() == before
    bad = cli("run", "--method", "finetune", "--data", "/no/such.npz", "--out", out_dir, "--overwrite", *FAST)
    assert bad.returncode == 2 and (out_dir / "results.json").read_bytes() == before  # bad input deletes nothing
    assert cli("run", "--method", "finetune", "--data", small_npz, "--out", out_dir, "--tasks", "1",
                   "--benchmark", "permuted-mnist", "--overwrite", *FAST).returncode == 0


def test_nan_loss_stops_with_task_epoch_step(tmp_path, small_npz):
    """A diverging run stops with one line naming task, epoch and step; earlier checkpoints stay."""
    done = cli("run", "--method", "finetune", "--data", small_npz, "--out", tmp_path / "r", "--optimizer", "sgd",
                   "--lr", "1e30", "--backbone", "float", *FAST)
    assert done.returncode == 2
    assert "task 0, epoch 0, step" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_python_m_bitcl_and_help():
    """`python -m bitcl run --help` works and lists method options."""
    done = run_cli("run", "--method", "blip", "--help")
    assert done.returncode == 0 and "--fisher-prior" in done.stdout


@pytest.mark.slow
def test_resume_after_kill_9_is_bit_exact(tmp_path, small_npz):
    """Kill -9 mid-run, --resume: the accuracy matrix and final codes equal an uninterrupted run's."""
    common = ["--method", "blip", "--data", small_npz, "--hidden", "300", "--epochs", "6", "--quiet",
              "--benchmark", "permuted-mnist", "--tasks", "4"]
    whole = tmp_path / "whole"
    assert cli("run", *common, "--out", whole).returncode == 0  # in this process: no second torch import
    broken = tmp_path / "broken"
    proc = subprocess.Popen([sys.executable, "-m", "bitcl", "run", *common, "--out", str(broken)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = broken / "checkpoints" / "task-1.safetensors"
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "run finished before it could be killed"
    assert not (broken / "results.json").exists()
    resumed = cli("run", *common, "--out", broken, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((whole / "results.json").read_text())
    b = json.loads((broken / "results.json").read_text())
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["capacity"] == b["capacity"]
    with safe_open(str(whole / "checkpoints/task-3.safetensors"), "pt") as fa, \
            safe_open(str(broken / "checkpoints/task-3.safetensors"), "pt") as fb:
        for key in fa.keys():
            assert fa.get_tensor(key).equal(fb.get_tensor(key)), key


def test_resume_of_a_missing_folder_exits_2_naming_it(tmp_path, small_npz):
    """`--resume` with a mistyped folder: exit 2 and one line naming the folder; nothing is created or trained."""
    missing = tmp_path / "runs" / "bilp"
    done = cli("run", "--data", small_npz, "--epochs", "1", "--tasks", "2", "--out", missing, "--resume")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"bitcl run: error: --resume: {missing} does not exist; there is no run to continue "
        "(check the folder name, or drop --resume to start a new run)"]
    assert not missing.exists() and done.stdout == ""


def test_help_states_each_default_once():
    """`bitcl run --help`: no flag repeats its default ('(default: preset, else 10) (default: preset, else 10)')."""
    import re
    for method in ("blip", "ewc"):
        done = cli("run", "--method", method, "--help")
        assert done.returncode == 0
        text = " ".join(done.stdout.split())  # argparse wraps lines
        flags = re.split(r"\s(?=--[a-z])", text)
        assert all(f.count("(default:") <= 1 for f in flags), [f for f in flags if f.count("(default:") > 1]
        assert "(default: preset, else 10)" in text and "(default: the benchmark's)" in text


def test_a_run_without_out_says_nothing_is_saved(small_npz):
    """Without --out the run starts with one stderr line saying nothing will be saved; --quiet silences it."""
    args = ["run", "--method", "finetune", "--data", small_npz, "--benchmark", "permuted-mnist", "--tasks", "1",
            "--epochs", "1", "--hidden", "16"]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == ("bitcl run: no --out given: nothing will be saved (results.json, "
                                           "checkpoints); the results are only printed")
    quiet = cli(*args, "--quiet")
    assert quiet.returncode == 0 and "nothing will be saved" not in quiet.stderr
