"""The continual runner (bitcl.train.runner), the step's gradient clipping, the one seeding module and
the one checkpoint progress format (older bitcl rl checkpoints read into it)."""
import json
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from torch import nn

from bitcl import checkpoint as ckpt
from bitcl.errors import CheckpointError
from bitcl.train import seeds
from bitcl.train.resume import current_progress
from bitcl.train.results import RunResult
from bitcl.train.rundir import RunDirectory
from bitcl.train.runner import ContinualRun
from bitcl.train.step import StepRunner, make_optimizer
from bitcl.train.validate import validate_progress


class Calls:
    """A task loop and strategy stand-in that log every call of the runner, in order."""

    def __init__(self, model):
        self.log, self.hook_seconds, self.model = [], 0.0, model
        self.info = SimpleNamespace(device=torch.device("cpu"))

    def task_context(self, t):
        self.log.append(f"context {t}")
        return SimpleNamespace(task_index=t)

    def before_task(self, ctx):
        self.log.append(f"before_task {ctx.task_index}")

    def train(self, t, ctx):
        self.log.append(f"train {t}")
        self.hook_seconds = 0.25
        return [1.0]

    def end_task(self, ctx):
        self.log.append(f"end_task {ctx.task_index}")

    def after_consolidation(self, t):
        self.log.append(f"after_consolidation {t}")

    def evaluate_all(self):
        self.log.append("evaluate_all")
        return [0.5, 0.5]

    def state_bytes(self):
        return 0

    def training_module(self):
        return None  # the model itself trains (no linearised copy)

    def check_saved_state(self, saved, tasks_done, where):
        """Nothing saved to check: this stand-in keeps no state."""

    def task_results(self):
        return {}

    def run_results(self):
        self.log.append("run_results")
        return {}

    def state_tensors(self):
        return {}

    def load_state_tensors(self, tensors):
        self.log.append("load_state")


def _config():
    return SimpleNamespace(method="m", benchmark="b", scenario="task", seed=0, to_dict=lambda: {"lr": 1.0})


def test_runner_sequence_checkpoints_and_results(tmp_path):
    """context -> before_task -> train -> end_task -> driver check -> evaluation -> checkpoint, per task;
    each checkpoint's progress is {task, config, result}; results.json at the end."""
    model = nn.Linear(2, 2)
    calls = Calls(model)
    result = RunResult(_config(), 2)
    rundir = RunDirectory(tmp_path / "run")
    ContinualRun(calls, calls, model, 2, result, rundir, {"lr": 1.0}).run()
    assert calls.log == ["context 0", "before_task 0", "train 0", "end_task 0", "after_consolidation 0",
                         "evaluate_all", "context 1", "before_task 1", "train 1", "end_task 1",
                         "after_consolidation 1", "evaluate_all", "run_results"]
    assert result.accuracy_matrix == [[0.5, 0.5], [0.5, 0.5]] and result.timing["step_hook_seconds"] == [0.25, 0.25]
    _, meta = ckpt.read_checkpoint(tmp_path / "run" / "checkpoints" / "task-1.safetensors", task=1)
    progress = meta["bitcl_progress"]
    assert set(progress) == {"task", "config", "result"} and progress["task"] == 1
    assert progress["result"]["accuracy_matrix"] == result.accuracy_matrix
    assert json.loads((tmp_path / "run" / "results.json").read_text())["accuracy_matrix"] == result.accuracy_matrix


def test_runner_resumes_after_the_last_complete_task(tmp_path):
    """With resume, only the tasks after the newest checkpoint are trained, and the result so far is restored."""
    model = nn.Linear(2, 2)
    ContinualRun(Calls(model), Calls(model), model, 2, RunResult(_config(), 2), RunDirectory(tmp_path / "r"),
                 {"lr": 1.0}).run()
    (tmp_path / "r" / "checkpoints" / "task-1.safetensors").unlink()
    (tmp_path / "r" / "results.json").unlink()
    calls, result = Calls(model), RunResult(_config(), 2)
    ContinualRun(calls, calls, model, 2, result, RunDirectory(tmp_path / "r", resume=True), {"lr": 1.0},
                 resume=True).run()
    assert calls.log[:3] == ["load_state", "context 1", "before_task 1"]
    assert len(result.accuracy_matrix) == 2


def test_step_clips_the_gradient_norm_after_after_backward():
    """max_grad_norm: the strategy's after_backward sees the raw gradient, the optimiser the clipped one."""
    p = nn.Parameter(torch.zeros(2))
    seen = []
    strategy = SimpleNamespace(after_backward=lambda ctx: seen.append(p.grad.clone()),
                               after_step=lambda ctx: seen.append(p.detach().clone()))
    step = StepRunner(strategy, None, make_optimizer([p], "sgd", lr=1.0), None, lambda: None, max_grad_norm=0.5)
    step((p * torch.tensor([30.0, 40.0])).sum(), None, 0, 0, 0)
    assert torch.equal(seen[0], torch.tensor([30.0, 40.0]))                     # norm 50, unclipped
    assert torch.allclose(seen[1], -torch.tensor([0.3, 0.4]))                    # the step of norm 0.5
    unclipped = StepRunner(strategy, None, make_optimizer([p], "sgd", lr=1.0), None, lambda: None)
    assert unclipped.clipped == []


def test_seeds_keep_their_values():
    """Every driver's streams keep the values published results were made with."""
    assert seeds.derived_seed(0, "order", 0, 0) == seeds.derived_seed(0, "order", 0, 0)
    assert seeds.derived_seed(0, "order", 0, 0) != seeds.derived_seed(0, "order", 0, 1)
    assert seeds.derived_seed(0, "order", 0, 0) == 6106747882082121107  # as bitcl has always drawn it
    assert seeds.rl_stream_seed(3, 2, 1) == 3 * 1_000_003 + 2 * 1009 + 1
    assert seeds.rl_purpose_seed(3, 2, "fisher") == 3 * 1_000_003 + 2 * 7919 + sum(map(ord, "fisher"))
    a, b = seeds.rl_generator(3, 2, "fisher"), torch.Generator().manual_seed(seeds.rl_purpose_seed(3, 2, "fisher"))
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.one_of(st.integers(0, 100), st.text(max_size=8)), max_size=4))
def test_derived_seeds_are_63_bit(seed, parts):
    assert 0 <= seeds.derived_seed(seed, *parts) < 2**63


def _legacy_rl_progress():
    """The progress of a bitcl rl checkpoint as bitcl wrote it before the runner was shared."""
    return {"config": {"games": ["breakout", "freeway"], "steps": 512},
            "random_returns": [1.0, 0.0], "return_matrix": [[1.5, 0.0]], "capacity": [0.1],
            "timing": {"train_seconds": [0.3], "steps_per_second": [1475.0], "consolidate_seconds": [0.05],
                       "eval_seconds": [0.16]},
            "state_bytes": [1193912], "train_curves": [{"steps": [256, 512], "returns": [0.35, 0.5]}], "extra": {}}


def test_legacy_rl_progress_is_read_into_the_current_shape():
    legacy = _legacy_rl_progress()
    validate_progress(legacy, "old.safetensors", task=0)
    current = current_progress(legacy, 0)
    assert current["task"] == 0 and current["config"] == legacy["config"]
    assert current["result"]["return_matrix"] == [[1.5, 0.0]] and "config" not in current["result"]
    validate_progress(current, "new.safetensors", task=0)
    assert current_progress(current, 0) is current


def test_rl_progress_of_the_wrong_length_is_refused():
    current = current_progress(_legacy_rl_progress(), 0)
    current["result"]["steps_trained"] = [512, 512]       # two games' worth after one game
    with pytest.raises(CheckpointError, match="steps_trained"):
        validate_progress(current, "bad.safetensors", task=0)
    with pytest.raises(CheckpointError, match="rows"):
        validate_progress(_legacy_rl_progress(), "bad.safetensors", task=1)


def test_checkpoint_progress_is_one_shape_for_every_driver(tmp_path):
    """A checkpoint written by the runner reads back with the progress it was given."""
    model = nn.Linear(2, 2)
    ContinualRun(Calls(model), Calls(model), model, 1, RunResult(_config(), 2), RunDirectory(tmp_path / "one"),
                 {"lr": 1.0}, model_spec=None).run()
    with safe_open(str(tmp_path / "one" / "checkpoints" / "task-0.safetensors"), "pt") as f:
        progress = json.loads(f.metadata()["bitcl_progress"])
    assert list(progress) == ["task", "config", "result"]
