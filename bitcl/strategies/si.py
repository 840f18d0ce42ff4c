"""SI: Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017, arXiv 1703.04200).

ω += −g·Δθ over every step of a task (g the minibatch gradient of the step,
Δθ the actual update after the bit projection); at the task's end
Ω += max(0, ω / (Δ² + ξ)), Δ the change over the task. ξ = 0.1 is Benzing's MNIST
setting (AISTATS 2022, arXiv 2006.06357); c = 20 was chosen on validation data with Adam
at batch 64 (benchmarks/search_regularizers.py; Benzing's c = 0.2 is for batch 256). SIU,
SIB and SOS (same paper) share this file's machinery.
"""
from __future__ import annotations

from dataclasses import dataclass

from bitcl.importance import PathIntegral
from bitcl.settings import setting

from .base import register
from .regularizer import SEARCHED, ImportanceRegularizer, c_field


@dataclass
class SiOptions:
    c: float = c_field(20.0, f"{SEARCHED}; Benzing's 0.2 is for SGD at batch 256")
    xi: float = setting(0.1, "damping ξ of ω / (Δ² + ξ) (Benzing's MNIST setting)", above=0.0)


class PathIntegralRegularizer(ImportanceRegularizer):
    """Ω accumulated from a :class:`PathIntegral` tracked over the task's steps; ``kind`` names the
    measure in ``bitcl.importance.path_integral.MEASURES`` (si, siu, sib, sos), which holds all that
    differs between the family's methods."""

    kind = "si"

    def __init__(self, options, model, info):
        super().__init__(options, model, info)
        self.tracker = PathIntegral(self.params, self.kind, xi=getattr(options, "xi", 0.1),
                                    alpha=getattr(options, "alpha", 1.0))

    def before_task(self, ctx):
        self.tracker.start_task()

    def after_backward(self, ctx):
        independent = ctx.independent_gradient(self.params) if self.tracker.needs_independent_gradient else None
        self.tracker.before_step(independent)

    def after_step(self, ctx):
        self.tracker.after_step()

    def task_importance(self, ctx):
        return self.tracker.importance()


@register
class Si(PathIntegralRegularizer):
    name = "si"
    summary = "SI: path-integral importance (ICML 2017)"
    Options = SiOptions
    kind = "si"
