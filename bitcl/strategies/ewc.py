"""EWC: Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017, arXiv 1612.00796).

Ω is the diagonal Fisher information (``--fisher exact|sampled|empirical``, see
``bitcl.importance.fisher``). ``--mode separate`` keeps one penalty per past task,
each with its own Fisher and anchor, as in the original paper (memory grows with
the number of tasks); ``--mode online`` keeps one running Fisher, Ω ← γ Ω + F,
anchored at the latest parameters (Schwarz et al., "Progress & Compress",
ICML 2018; constant memory).

Default c = 1000 with the per-sample mean Fisher: chosen on validation data
(benchmarks/search_regularizers.py -> benchmarks/results/search_regularizers.json).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bitcl.errors import ConfigError
from bitcl.importance import FISHER_KINDS, batch_fisher_sums, task_mean

from .base import register
from .regularizer import ImportanceRegularizer, batch_field, c_field, check_common, samples_field
from .state import StateEntry


@dataclass
class EwcOptions:
    c: float = c_field(1000.0)
    fisher: str = field(default="exact", metadata={"help": "Fisher estimate", "choices": FISHER_KINDS})
    mode: str = field(default="separate", metadata={"help": "one penalty per task, or one running Fisher",
                                                     "choices": ("separate", "online")})
    gamma: float = field(default=1.0, metadata={"help": "decay of the running Fisher in online mode"})
    samples: int = samples_field()
    batch: int = batch_field()

    def validate(self) -> None:
        check_common(self)
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"--gamma must lie in [0, 1], got {self.gamma}")


def fisher_of_task(strategy, ctx, kind: str) -> dict[str, torch.Tensor]:
    """Per-sample mean Fisher of the strategy's parameters on the task of ``ctx``."""
    opts = strategy.options
    return task_mean(ctx, opts.samples, opts.batch, "importance",
                     lambda x, y, u: batch_fisher_sums(strategy.model, strategy.layers, ctx.logits, x, y,
                                                       kind, u), strategy.params)


@register
class Ewc(ImportanceRegularizer):
    name = "ewc"
    summary = "EWC: Fisher-weighted quadratic penalty (separate per task, or online)"
    Options = EwcOptions
    rl = True
    state_entries = ImportanceRegularizer.state_entries + (  # --mode separate: one Ω and anchor per task
        StateEntry("omega/{task}/{param}", "nonneg"), StateEntry("anchor/{task}/{param}"))

    def __init__(self, options, model, info):
        super().__init__(options, model, info)
        if options.mode == "separate":  # per-task Fishers and anchors are added as tasks end
            for name in self.params:
                del self.state[f"omega/{name}"], self.state[f"anchor/{name}"]

    def task_importance(self, ctx):
        return fisher_of_task(self, ctx, self.options.fisher)

    def accumulate(self, name, importance):
        if self.options.mode == "online":
            self.state[f"omega/{name}"] = self.options.gamma * self.state[f"omega/{name}"] + importance
        else:
            t = int(self.state["tasks_seen"])
            self.state[f"omega/{t}/{name}"] = importance
            self.state[f"anchor/{t}/{name}"] = self.params[name].detach().clone()

    def end_task(self, ctx):
        if self.options.mode == "online":
            return super().end_task(ctx)
        importance = self.task_importance(ctx)
        for name in self.params:
            self.accumulate(name, importance[name].detach())
        self.state["tasks_seen"] = self.state["tasks_seen"] + 1

    def penalty(self):
        if self.options.mode == "online":
            return super().penalty()
        tasks = int(self.state["tasks_seen"])
        if tasks == 0 or self.strength == 0:
            return None
        total = 0.0
        for t in range(tasks):
            for name, p in self.params.items():
                total = total + (self.state[f"omega/{t}/{name}"] * (p - self.state[f"anchor/{t}/{name}"]).pow(2)).sum()
        return self.strength * total
