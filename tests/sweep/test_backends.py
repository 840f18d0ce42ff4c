"""`bitcl sweep` end to end on each backend: local worker processes, Ray (a local instance) and
submitit's local executor; and `bitcl run --seeds`. Real runs on the small MNIST file. The sweep's
own command runs in this process (``cli``: its runs are new interpreters anyway) except for Ray and
submitit, which start their own machinery and are run as a user runs them (``run_cli``)."""
import json

import pytest

from tests.conftest import cli, run_cli

pytestmark = pytest.mark.slow


def spec(tmp_path, small_npz, extra="", seeds="[0, 1]"):
    path = tmp_path / "spec.toml"
    path.write_text(f'benchmark = "split-mnist"\ntasks = 2\nepochs = 1\nhidden = [16]\nclasses = [0, 1, 2, 3]\n'
                    f'data = "{small_npz}"\nmethod = "finetune"\nseeds = {seeds}\n{extra}')
    return path


def finished(out, names):
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["failed"], summary["failed"]
    assert sorted(r["name"] for r in summary["runs"]) == sorted(names)
    for name in names:
        results = json.loads((out / name / "results.json").read_text())
        assert results["config"]["seed"] == int(name.rsplit("=", 1)[1])
    return summary


def test_local_backend_end_to_end_and_idempotent(tmp_path, small_npz):
    out = tmp_path / "out"
    done = cli("sweep", spec(tmp_path, small_npz), "--out", out)
    assert done.returncode == 0, done.stderr
    summary = finished(out, ["split-mnist/finetune/seed=0", "split-mnist/finetune/seed=1"])
    row = summary["benchmarks"]["split-mnist"]["ranking"][0]
    assert row["configuration"] == "finetune" and row["n"] == 2 and row["acc"]["low"] < row["acc"]["mean"]
    assert "| 1 | finetune |" in done.stdout
    again = cli("sweep", spec(tmp_path, small_npz), "--out", out)
    assert again.returncode == 0 and "2 of 2 runs already finished (not rerun)" in again.stdout


def test_failed_runs_are_reported_exit_1(tmp_path, small_npz):
    """A run that fails every attempt: the sweep still writes its summary, and exits 1 naming the run."""
    out = tmp_path / "out"
    done = cli("sweep", spec(tmp_path, tmp_path / "missing.npz", seeds="[0]"), "--out", out, "--retries", "1")
    assert done.returncode == 1
    assert done.stderr.startswith("bitcl sweep: error: 1 run(s) failed, first split-mnist/finetune/seed=0: bitcl run:")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"][0]["attempts"] == 2 and "missing.npz" in summary["failed"][0]["error"]


def test_ray_backend_local_instance(tmp_path, small_npz):
    out = tmp_path / "out"
    done = run_cli("sweep", spec(tmp_path, small_npz, 'backend = "ray"\n', seeds="[3]"), "--out", out)
    assert done.returncode == 0, done.stderr
    finished(out, ["split-mnist/finetune/seed=3"])


def test_submitit_local_executor(tmp_path, small_npz):
    out = tmp_path / "out"
    done = run_cli("sweep", spec(tmp_path, small_npz, 'backend = "slurm"\n[slurm]\ncluster = "local"\n', seeds="[4]"),
                   "--out", out)
    assert done.returncode == 0, done.stderr
    finished(out, ["split-mnist/finetune/seed=4"])
    assert (out / ".submitit").is_dir()


def test_run_seeds_groups_the_seeds(tmp_path, small_npz):
    out = tmp_path / "seeds"
    done = cli("run", "--method", "finetune", "--tasks", "2", "--epochs", "1", "--hidden", "16", "--classes",
                   "0,1,2,3", "--data", small_npz, "--seeds", "0,1", "--out", out)
    assert done.returncode == 0, done.stderr
    accs = [json.loads((out / f"seed-{s}" / "results.json").read_text())["acc"] for s in (0, 1)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["acc"]["n"] == 2
    assert abs(summary["acc"]["mean"] - sum(accs) / 2) < 1e-12
    assert f"ACC        {summary['acc']['mean']:.4f} ± " in done.stdout and "95 % Student t" in done.stdout
