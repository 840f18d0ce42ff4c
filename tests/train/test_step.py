"""The one training step (bitcl.train.step) and the one task sequence (bitcl.train.task) that
`bitcl run` and `bitcl.fit` share: hook order, projection, divergence, and both loops using them."""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import bitcl
from bitcl.errors import TrainingDiverged
from bitcl.quant import bit_states
from bitcl.train import step as step_module
from bitcl.train.results import RunResult, bit_capacity
from bitcl.train.step import StepRunner, make_optimizer, make_scheduler


class Recorder:
    """A strategy stand-in that records what each per-step hook saw."""

    def __init__(self, model):
        self.model, self.events = model, []

    def after_backward(self, ctx):
        self.events.append(("after_backward", self.model.weight.grad is not None))

    def after_step(self, ctx):
        self.events.append(("after_step", self.model.weight.detach().clone()))


def _quantised_linear(bits=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    bitcl.quantize_(model, bitcl.BitConfig(bits=bits, range="fixed"))
    return model[0]


def test_step_runs_hooks_in_order_and_projects_before_after_step():
    """after_backward sees the gradients; after_step sees weights already inside their frozen-bit windows."""
    layer = _quantised_linear()
    state = dict(bit_states(layer))["weight"]
    state.frozen.fill_(4)  # every bit frozen: the projection must undo any update
    frozen_values = state.dequantized().clone()
    recorder = Recorder(layer)
    optimizer = make_optimizer(layer.parameters(), "sgd", lr=10.0)
    run = StepRunner(recorder, None, optimizer, None, layer.project_)
    value = run(layer(torch.ones(5, 3)).sum(), torch.tensor(0.5), task=0, epoch=0, step=0)
    assert [e[0] for e in recorder.events] == ["after_backward", "after_step"]
    assert recorder.events[0][1] is True
    assert torch.equal(recorder.events[1][1], frozen_values) and isinstance(value, float)
    assert run.hook_seconds >= 0.0


def test_non_finite_loss_raises_before_any_update():
    """A NaN total names task, epoch and step, and leaves weights and hooks untouched."""
    layer = _quantised_linear()
    before = layer.weight.detach().clone()
    recorder = Recorder(layer)
    run = StepRunner(recorder, None, make_optimizer(layer.parameters(), "adam", lr=1.0), None, layer.project_,
                     hint="lower --lr?")
    with pytest.raises(TrainingDiverged, match=r"task 2, epoch 1, step 7: loss is nan \(lower --lr\?\)"):
        run(layer(torch.ones(1, 3)).sum() * float("nan"), None, task=2, epoch=1, step=7)
    assert torch.equal(layer.weight, before) and recorder.events == []


def test_cosine_schedule_anneals_over_the_given_steps():
    """'cosine' reaches lr 0 after exactly ``steps`` steps; 'none' gives no scheduler."""
    p = nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer([p], "sgd", lr=0.1, momentum=0.5)
    assert make_scheduler(optimizer, "none", 10) is None
    scheduler = make_scheduler(optimizer, "cosine", 4)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert optimizer.param_groups[0]["momentum"] == 0.5


def test_bit_capacity_counts_frozen_bits_and_is_none_without_bit_layers():
    """capacity = frozen bits / all bits of the quantised weights; a float model has none."""
    layer = _quantised_linear(bits=4)
    dict(bit_states(layer))["weight"].frozen[0].fill_(4)  # one row of 3 weights, 4 bits each
    overall, per_tensor = bit_capacity(layer)
    assert per_tensor == {"weight": 0.5, "bias": 0.0}
    assert overall == pytest.approx(12 / (6 * 4 + 2 * 4))
    assert bit_capacity(nn.Linear(3, 2)) is None


def test_result_records_a_task_in_the_results_json_shape():
    """record_* fill timing, the accuracy row, capacity and state in order; task_line reports the task."""
    class Config:
        method, benchmark, scenario, seed = "blip", "user", "task", 0

        def to_dict(self):
            return {}

    result = RunResult(Config(), 2)
    result.record_training(2.0, 0.5, [1.0, 1.0])
    result.record_consolidation(0.5)
    result.record_evaluation([0.75, 0.25], 0.1, (0.2, {"w": 0.2}), 40, {"lam": 1.0})
    assert result.timing["importance_fraction"] == [0.5] and result.timing["epoch_seconds"] == [1.0]
    assert result.accuracy_matrix == [[0.75, 0.25]] and result.capacity == [0.2] and result.state_bytes == [40]
    assert result.extra == {"lam": [1.0]}
    assert result.task_line().startswith("task 1/2: acc on task 0 0.7500, mean over seen 0.7500")


def test_fit_and_the_engine_both_step_through_step_runner(monkeypatch, small_npz):
    """bitcl.fit and bitcl run's Trainer take every optimiser step through StepRunner (one place to fix)."""
    calls = []
    original = step_module.StepRunner.__call__

    def counting(self, loss, penalty, task, epoch, step):
        calls.append(self.hint)
        return original(self, loss, penalty, task, epoch, step)

    monkeypatch.setattr(step_module.StepRunner, "__call__", counting)
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(20, 4), torch.randint(0, 2, (20,)))
    bitcl.fit(nn.Linear(4, 2), [(data, data)], "finetune", batch_size=10)
    assert calls == ["lower lr?"] * 2
    from bitcl.config import RunConfig
    from bitcl.engine import Engine
    engine = Engine(RunConfig(method="finetune", data=small_npz, hidden=[8], epochs=1, batch_size=800,
                              classes=[0, 1], tasks=1, quiet=True))
    engine.train_task(engine.scenario.tasks[0])
    assert calls[2:] and set(calls[2:]) == {"lower --lr?"}
