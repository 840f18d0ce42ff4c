"""The shared machinery of importance-based regularisers (EWC, SI, MAS and their kin).

Every method adds ``c * sum_i Ω_i (θ_i − θ*_i)²`` to the loss, θ* the parameters
at the end of the previous task and Ω the importance accumulated over tasks
(Benzing, "Unifying Importance Based Regularisation Methods for Continual
Learning", AISTATS 2022, arXiv 2006.06357, Eq. 1). Per-task heads are not
regularised (each is trained on its own task only); shared heads are.
Measures are computed with the model in eval mode (dropout off) on ``samples``
training samples of the task just learned, with vectorised per-sample gradients.

A subclass implements :meth:`task_importance` (or the per-step hooks) and may
override :meth:`accumulate` (EWC online decays the old Ω).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bitcl.importance import layers_of
from bitcl.settings import setting

from .base import Strategy, protected_parameters
from .context import RunInfo, TaskContext
from .state import TASKS_SEEN, StateEntry


# Where the searched defaults come from (issue 13: chosen on validation data, never on the test split).
SEARCHED = ("chosen on validation data by benchmarks/search_regularizers.py -> "
            "benchmarks/results/search_regularizers.json on Split-MNIST, task-incremental, MLP, 5 epochs per task; "
            "another protocol may need another value: search it with --validation")


def c_field(default: float, source: str = SEARCHED):
    """The penalty strength ``c`` (>= 0) with its default and where that default comes from."""
    return setting(default, f"penalty strength c ({source})", low=0.0)


def samples_field(default: int = 1000, what: str = "the importance", aliases: tuple[str, ...] = ()):
    """``--samples``: every method's count of training samples for its end-of-task estimate."""
    return setting(default, f"training samples of the task for {what} (0: all)", low=0, aliases=aliases)


def batch_field(default: int = 256, what: str = "the importance computation", aliases: tuple[str, ...] = ()):
    """``--batch``: every method's batch size of its end-of-task estimate."""
    return setting(default, f"batch size of {what}", low=1, aliases=aliases)


@dataclass
class SampledImportanceOptions:
    """c plus the samples and batch of an end-of-task importance measure; a method
    subclasses it to set its own default c (and add options)."""
    c: float = c_field(1.0, "a subclass sets its own default")
    samples: int = samples_field()
    batch: int = batch_field()


class ImportanceRegularizer(Strategy):
    """Quadratic penalty around the previous task's parameters, weighted by accumulated importance."""

    state_entries = (StateEntry("omega/{param}", "nonneg"), StateEntry("anchor/{param}"), TASKS_SEEN)

    def __init__(self, options, model, info: RunInfo):
        super().__init__(options, model, info)
        self.params = protected_parameters(model)
        self.layers = layers_of(self.model, self.params)
        for name, p in self.params.items():
            self.state[f"omega/{name}"] = torch.zeros_like(p.detach())
            self.state[f"anchor/{name}"] = p.detach().clone()
        self.state["tasks_seen"] = torch.zeros((), dtype=torch.int64)

    @property
    def strength(self) -> float:
        """The penalty's multiplier (c; ANPyC calls it λ)."""
        return self.options.c

    def penalty(self):
        if int(self.state["tasks_seen"]) == 0 or self.strength == 0:
            return None
        total = 0.0
        for name, p in self.params.items():
            total = total + (self.state[f"omega/{name}"] * (p - self.state[f"anchor/{name}"]).pow(2)).sum()
        return self.strength * total

    def task_importance(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def accumulate(self, name: str, importance: torch.Tensor) -> None:
        self.state[f"omega/{name}"] = self.state[f"omega/{name}"] + importance

    def end_task(self, ctx: TaskContext) -> None:
        importance = self.task_importance(ctx)
        for name, p in self.params.items():
            self.accumulate(name, importance[name].detach())
            self.state[f"anchor/{name}"] = p.detach().clone()
        self.state["tasks_seen"] = self.state["tasks_seen"] + 1
