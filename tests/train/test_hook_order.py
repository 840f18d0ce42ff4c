"""Every driver calls a strategy's hooks in the one order (bitcl.strategies.base, bitcl.train.runner):

    per task: before_task -> [per step: penalty, after_backward, (optimiser step, projection),
    after_step]+ -> end_task

checked for ``bitcl run`` (the engine), ``bitcl.fit``, ``bitcl rl`` and the Avalanche plugins, on a
recording strategy. Each step must call ``penalty`` before the backward pass, ``after_backward`` with
the gradients in place and ``after_step`` after the optimiser changed the weights."""
import re

import pytest
import torch
from torch import nn

from bitcl.strategies import Strategy
from bitcl.strategies import base as strategy_base

EXPECTED = "B0 (PAS)+ E0 B1 (PAS)+ E1"


class Recorder(Strategy):
    """Records each hook call: B/E with the task, P (penalty), A (after_backward), S (after_step)."""

    name = "hook-recorder"
    rl = True
    events: list = []

    def __init__(self, options, model, info):
        super().__init__(options, model, info)
        self.watched = next(p for p in model.parameters() if p.requires_grad)
        self.at_backward = None

    def before_task(self, ctx):
        self.events.append(("B", ctx.task_index))

    def penalty(self):
        self.events.append(("P", None))
        return None

    def after_backward(self, ctx):
        self.at_backward = self.watched.detach().clone()
        self.events.append(("A", any(p.grad is not None for p in self.model.parameters())))

    def after_step(self, ctx):
        self.events.append(("S", not torch.equal(self.watched.detach(), self.at_backward)))

    def end_task(self, ctx):
        self.events.append(("E", ctx.task_index))


@pytest.fixture
def recorder(monkeypatch):
    strategy_base.discover()
    monkeypatch.setitem(strategy_base._REGISTRY, Recorder.name, Recorder)
    Recorder.events = []
    return Recorder


def pattern(events) -> str:
    """The hook sequence with each run of steps folded into ``(PAS)+``; every flag checked."""
    tokens = []
    for kind, value in events:
        if kind in "BE":
            tokens.append(f" {kind}{value} ")
        else:
            tokens.append(kind)
            if kind == "A":
                assert value, "after_backward was called without gradients"
            if kind == "S":
                assert value, "after_step was called before the optimiser changed the weights"
    text = re.sub(r"(PAS)+", "(PAS)+", "".join(tokens))
    return " ".join(text.split())


def test_cli_engine(recorder, small_npz):
    from bitcl.config import RunConfig
    from bitcl.engine import run
    run(RunConfig(method=recorder.name, data=str(small_npz), tasks=2, classes=[0, 1, 2, 3], epochs=1,
                  batch_size=128, quiet=True))
    assert pattern(recorder.events) == EXPECTED


def test_fit(recorder):
    from bitcl.api import benchmark_tasks, fit
    tasks = benchmark_tasks("split-mnist", tasks=2, classes=[0, 1, 2, 3])
    tasks = [(torch.utils.data.Subset(tr, range(300)), te) for tr, te in tasks]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    fit(model, tasks, recorder.name, scenario="domain", batch_size=128)
    assert pattern(recorder.events) == EXPECTED


def test_rl(recorder, tmp_path):
    pytest.importorskip("minatar", reason="the MinAtar suite needs bitcl[rl]")
    from bitcl.rl.config import RLConfig
    from bitcl.rl.loop import run_rl
    run_rl(RLConfig(method=recorder.name, games=("breakout", "freeway"), steps=64, envs=2, rollout=32, epochs=1,
                    minibatches=2, eval_episodes=1, eval_max_steps=5, backbone="float", quiet=True))
    assert pattern(recorder.events) == EXPECTED


@pytest.mark.slow  # importing Avalanche takes seconds
def test_avalanche_plugin(recorder):
    avalanche = pytest.importorskip("bitcl.avalanche", reason="avalanche-lib not installed")
    from avalanche.benchmarks import tensors_benchmark
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin
    from bitcl.api import benchmark_tasks
    tasks = benchmark_tasks("split-mnist", scenario="domain", tasks=2, classes=[0, 1, 2, 3])
    bench = tensors_benchmark(train_tensors=[tuple(t[:300] for t in tr.tensors) for tr, _ in tasks],
                              test_tensors=[te.tensors for _, te in tasks], task_labels=[0, 0])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                  criterion=nn.CrossEntropyLoss(), train_mb_size=128, train_epochs=1, plugins=[avalanche.BitclPlugin(recorder.name, scenario="domain")],
                  evaluator=EvaluationPlugin(loggers=[]), device="cpu")
    for experience in bench.train_stream:
        naive.train(experience)
    assert pattern(recorder.events) == EXPECTED


def test_pattern_catches_a_hook_out_of_order():
    """The checker fails on a step whose after_step comes before after_backward, or a missing end_task."""
    good = [("B", 0), ("P", None), ("A", True), ("S", True), ("E", 0)]
    assert pattern(good) == "B0 (PAS)+ E0"
    assert pattern([("B", 0), ("P", None), ("S", True), ("A", True), ("E", 0)]) != "B0 (PAS)+ E0"
    assert pattern(good[:-1]) != "B0 (PAS)+ E0"
    with pytest.raises(AssertionError, match="without gradients"):
        pattern([("A", False)])
