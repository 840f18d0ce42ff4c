"""`bitcl run` is deterministic: the same command and seed at one thread give a bit-identical results.json
(timing aside) and accuracy_matrix.csv on the same machine."""
import json
import os

import pytest

from tests.conftest import run_cli


def _run(out, data):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: no reduction order left to the scheduler
    done = run_cli("run", "--method", "ewc", "--data", data, "--tasks", "2", "--classes", "0,1,2,3", "--epochs", "1",
                   "--batch-size", "128", "--fisher", "sampled", "--quiet", "--out", out, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    results.pop("timing")
    results["config"].pop("out")
    return results, (out / "accuracy_matrix.csv").read_text()


@pytest.mark.slow  # two processes: what differs between processes (hash order, threads) must not matter
def test_same_command_and_seed_give_bit_identical_results(tmp_path, small_npz):
    first = _run(tmp_path / "a", small_npz)
    second = _run(tmp_path / "b", small_npz)
    assert first == second
    assert first[0]["accuracy_matrix"][1][1] > 0.5   # it did learn: equal results are not two empty runs
