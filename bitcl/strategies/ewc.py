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

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from bitcl.importance import FISHER_KINDS, batch_fisher_sums, task_mean
from bitcl.settings import setting

from .base import register
from .regularizer import ImportanceRegularizer, batch_field, c_field, samples_field
from .state import StateEntry


class EwcMode:
    """How EWC keeps the past tasks: its state, its consolidation at a task's end and its penalty.

    A mode is one small class in :data:`EWC_MODES` (``--mode`` chooses by name). The state keys
    a mode writes are part of the checkpoint format: never rename them (saved runs must resume).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init__(self, ewc: "Ewc"):
        self.ewc = ewc

    def consolidate(self, importance: dict[str, torch.Tensor]) -> None:
        """Fold the task just learned (its Fisher ``importance``) into the state."""
        raise NotImplementedError

    def penalty(self) -> Optional[torch.Tensor]:
        raise NotImplementedError


class SeparateMode(EwcMode):
    """One Fisher and one anchor per past task (Kirkpatrick et al. 2017): memory grows with the tasks.

    State: ``omega/<t>/<name>`` and ``anchor/<t>/<name>`` for every past task t."""

    name = "separate"
    summary = "one penalty per task"

    def __init__(self, ewc):
        super().__init__(ewc)
        for name in ewc.params:  # per-task Fishers and anchors are added as tasks end
            del ewc.state[f"omega/{name}"], ewc.state[f"anchor/{name}"]

    def consolidate(self, importance):
        state, t = self.ewc.state, int(self.ewc.state["tasks_seen"])
        for name, p in self.ewc.params.items():
            state[f"omega/{t}/{name}"] = importance[name].detach()
            state[f"anchor/{t}/{name}"] = p.detach().clone()
        state["tasks_seen"] = state["tasks_seen"] + 1

    def penalty(self):
        state, tasks = self.ewc.state, int(self.ewc.state["tasks_seen"])
        if tasks == 0 or self.ewc.strength == 0:
            return None
        total = 0.0
        for t in range(tasks):
            for name, p in self.ewc.params.items():
                total = total + (state[f"omega/{t}/{name}"] * (p - state[f"anchor/{t}/{name}"]).pow(2)).sum()
        return self.ewc.strength * total


class OnlineMode(EwcMode):
    """One running Fisher Ω ← γ Ω + F anchored at the latest parameters (Schwarz et al. 2018):
    constant memory. State: ``omega/<name>`` and ``anchor/<name>``, as every importance regulariser."""

    name = "online"
    summary = "one running Fisher"

    def consolidate(self, importance):
        state, gamma = self.ewc.state, self.ewc.options.gamma
        for name, p in self.ewc.params.items():
            state[f"omega/{name}"] = gamma * state[f"omega/{name}"] + importance[name].detach()
            state[f"anchor/{name}"] = p.detach().clone()
        state["tasks_seen"] = state["tasks_seen"] + 1

    def penalty(self):
        return ImportanceRegularizer.penalty(self.ewc)  # the shared quadratic penalty around one anchor


EWC_MODES: dict[str, type[EwcMode]] = {m.name: m for m in (SeparateMode, OnlineMode)}


@dataclass
class EwcOptions:
    c: float = c_field(1000.0)
    fisher: str = setting("exact", "Fisher estimate", choices=FISHER_KINDS)
    mode: str = setting("separate", ", or ".join(m.summary for m in EWC_MODES.values()), choices=tuple(EWC_MODES))
    gamma: float = setting(1.0, "decay of the running Fisher in online mode", low=0.0, high=1.0)
    samples: int = samples_field()
    batch: int = batch_field()


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
        self.mode = EWC_MODES[options.mode](self)

    def task_importance(self, ctx):
        return fisher_of_task(self, ctx, self.options.fisher)

    def end_task(self, ctx):
        self.mode.consolidate(self.task_importance(ctx))

    def penalty(self):
        return self.mode.penalty()
