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

import math
from dataclasses import dataclass, field

import torch

from bitcl.errors import ConfigError
from bitcl.importance import layers_of

from .base import Strategy, protected_parameters
from .context import RunInfo, TaskContext
from .state import TASKS_SEEN, StateEntry


# Where the searched defaults come from (issue 13: chosen on validation data, never on the test split).
SEARCHED = ("chosen on validation data by benchmarks/search_regularizers.py -> "
            "benchmarks/results/search_regularizers.json on Split-MNIST, task-incremental, MLP, 5 epochs per task; "
            "another protocol may need another value: search it with --validation")


def c_field(default: float, source: str = SEARCHED):
    """The penalty strength ``c`` with its default and where that default comes from."""
    return field(default=default, metadata={"help": f"penalty strength c ({source})"})


def samples_field(default: int = 1000):
    return field(default=default, metadata={"help": "training samples of the task for the importance (0: all)"})


def batch_field(default: int = 256):
    return field(default=default, metadata={"help": "batch size of the importance computation"})


def check_common(options) -> None:
    if not (math.isfinite(options.c) and options.c >= 0):
        raise ConfigError(f"--c must be a non-negative number, got {options.c}")
    if getattr(options, "samples", 0) < 0:
        raise ConfigError(f"--samples must be >= 0, got {options.samples}")
    if getattr(options, "batch", 1) < 1:
        raise ConfigError(f"--batch must be >= 1, got {options.batch}")


@dataclass
class SampledImportanceOptions:
    """c plus the samples and batch of an end-of-task importance measure; a method
    subclasses it to set its own default c (and add options)."""
    c: float = c_field(1.0, "a subclass sets its own default")
    samples: int = samples_field()
    batch: int = batch_field()

    def validate(self) -> None:
        check_common(self)


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
