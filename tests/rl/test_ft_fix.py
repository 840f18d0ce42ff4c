"""ft-fix in the supervised engine (task-incremental) and at the strategy level."""
import json

import pytest
import torch
from safetensors.torch import load_file

from bitcl.models import build_model
from bitcl.strategies.base import get_strategy, make_options
from bitcl.strategies.context import RunInfo, TaskContext
from tests.conftest import cli


def test_before_task_freezes_the_backbone_from_the_second_task():
    """Task 0 trains everything; from task 1 on, only the per-task heads require gradients."""
    model = build_model("mlp", (1, 28, 28), [2, 2], "task", hidden=(16,))
    cls = get_strategy("ft-fix")
    strategy = cls(make_options(cls), model, RunInfo(2, "task"))
    strategy.before_task(TaskContext(model, 0, strategy.info))
    assert all(p.requires_grad for p in model.parameters())
    strategy.before_task(TaskContext(model, 1, strategy.info))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.backbone_parameters()} and frozen
    assert all(p.requires_grad for p in model.heads.parameters())


@pytest.mark.slow
def test_supervised_task_incremental_run_keeps_task_zero(tmp_path):
    """`bitcl run --method ft-fix`: the backbone of task 1's checkpoint is task 0's; task 0 is not forgotten."""
    out = tmp_path / "run"
    done = cli("run", "--method", "ft-fix", "--benchmark", "split-mnist", "--tasks", "2", "--epochs", "1",
                   "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    first = load_file(str(out / "checkpoints" / "task-0.safetensors"))
    second = load_file(str(out / "checkpoints" / "task-1.safetensors"))
    backbone = [k for k in first if k.startswith("backbone.")]
    assert backbone and all(torch.equal(first[k], second[k]) for k in backbone)
    r = json.loads((out / "results.json").read_text())
    a = r["accuracy_matrix"]
    assert a[1][0] == a[0][0] and a[1][1] > 0.6


def test_refused_outside_task_incremental(tmp_path):
    """ft-fix declares scenarios=("task",): other scenarios are refused with one line, exit 2."""
    done = cli("run", "--method", "ft-fix", "--scenario", "class", "--out", tmp_path / "x", "--quiet")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
