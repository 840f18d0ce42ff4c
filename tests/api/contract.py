"""The run-directory contract (docs/contracts/results.md) as one check, for any loop that writes a run:
``bitcl run``, ``bitcl.fit``. The CLI's own tests (tests/test_cli.py) assert the same keys."""
import json
import os

import pytest
from safetensors import safe_open

RESULT_KEYS = ("bitcl_version", "code_digest", "method", "benchmark", "scenario", "seed", "config", "tasks", "accuracy_matrix",
               "acc", "bwt", "forgetting", "timing", "memory")
TIMING_KEYS = {"train_seconds", "epoch_seconds", "consolidate_seconds", "eval_seconds"}


def check_run_directory(out_dir, tasks: int, quantised: bool = True) -> dict:
    """Assert results.json, accuracy_matrix.csv and one contract checkpoint per task; return results.json."""
    res = json.loads((out_dir / "results.json").read_text())
    for key in RESULT_KEYS:
        assert key in res, key
    matrix = res["accuracy_matrix"]
    assert res["tasks"] == tasks and len(matrix) == tasks and all(len(row) == tasks for row in matrix)
    assert all(0.0 <= a <= 1.0 for row in matrix for a in row)
    assert res["acc"] == pytest.approx(sum(matrix[-1]) / tasks)
    if tasks > 1:
        assert res["bwt"] == pytest.approx(sum(matrix[-1][j] - matrix[j][j] for j in range(tasks - 1)) / (tasks - 1))
        assert res["forgetting"] == pytest.approx(
            sum(max(matrix[i][j] for i in range(j, tasks - 1)) - matrix[-1][j] for j in range(tasks - 1)) / (tasks - 1))
    assert TIMING_KEYS <= set(res["timing"]) and all(len(res["timing"][k]) == tasks for k in TIMING_KEYS)
    assert res["memory"]["params"] > 0 and len(res["memory"]["state_bytes"]) == tasks
    assert (out_dir / "accuracy_matrix.csv").read_text().count("\n") == tasks + 1
    assert sorted(os.listdir(out_dir / "checkpoints")) == sorted(f"task-{t}.safetensors" for t in range(tasks))
    if quantised:
        assert len(res["capacity"]) == tasks and res["capacity"] == sorted(res["capacity"])
        with safe_open(str(out_dir / "checkpoints" / f"task-{tasks - 1}.safetensors"), "pt") as f:
            meta = json.loads(f.metadata()["bitcl"])
            assert meta, "no quantised tensor in the checkpoint metadata"
            for name, entry in meta.items():
                assert set(entry) >= {"bits", "scale"} and entry["scale"] > 0
                assert str(f.get_tensor(name + ".codes").dtype) == "torch.int32"
                assert str(f.get_tensor(name + ".frozen").dtype) == "torch.uint8"
    return res


def checkpoint_tensors(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}
