"""rEWC: EWC with the square root of the Fisher as importance.

Benzing (AISTATS 2022, arXiv 2006.06357) shows SI and MAS behave like sqrt(Fisher);
rEWC uses sqrt(F) directly, Ω += sqrt(F_t).
"""
from __future__ import annotations

from dataclasses import dataclass

from bitcl.importance import FISHER_KINDS
from bitcl.settings import setting

from .base import register
from .ewc import fisher_of_task
from .regularizer import ImportanceRegularizer, SampledImportanceOptions, c_field


@dataclass
class RewcOptions(SampledImportanceOptions):
    c: float = c_field(10.0)
    fisher: str = setting("exact", "Fisher estimate", choices=FISHER_KINDS)


@register
class Rewc(ImportanceRegularizer):
    name = "rewc"
    summary = "rEWC: quadratic penalty weighted by sqrt(Fisher) (Benzing, AISTATS 2022)"
    Options = RewcOptions

    def task_importance(self, ctx):
        return {k: v.sqrt() for k, v in fisher_of_task(self, ctx, self.options.fisher).items()}
