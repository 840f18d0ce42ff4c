"""ft-fix: fine-tune the first task, then freeze the shared trunk; later tasks train only their heads.

The "fine-tuning with a fixed feature extractor" baseline of BLIP's continual-RL comparison
(Shi et al., "Continual Learning via Bit-Level Information Preserving", CVPR 2021,
arXiv 2105.04444, Sec. 5.3). Everything the tasks share (``protected_parameters``: the
backbone; in RL the agent's trunk) stops receiving gradients from the second task on, so
the first task is never forgotten, and later tasks learn only through their own heads:
task-incremental only. Stateless: a resumed run freezes again from the task index.
"""
from __future__ import annotations

from .base import Strategy, protected_parameters, register
from .context import TaskContext


@register
class FtFix(Strategy):
    name = "ft-fix"
    summary = "fine-tune the first task, then freeze the shared backbone: later tasks train only their heads"
    scenarios = ("task",)
    rl = True

    def before_task(self, ctx: TaskContext) -> None:
        trainable = ctx.task_index == 0
        for param in protected_parameters(self.model).values():
            param.requires_grad_(trainable)
            if not trainable:
                param.grad = None  # no stale gradient reaches an optimiser that still lists it
