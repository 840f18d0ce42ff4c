"""MAS: Memory Aware Synapses (Aljundi et al., ECCV 2018, arXiv 1711.09601).

Ω += E_x |∂ ||softmax(z)||² / ∂θ| (the softmax form analysed by Benzing,
AISTATS 2022, arXiv 2006.06357, who shows it behaves like sqrt(Fisher)).
"""
from __future__ import annotations

from dataclasses import dataclass

from bitcl.importance import output_sensitivity_sums, task_mean

from .base import register
from .regularizer import ImportanceRegularizer, SampledImportanceOptions, c_field


@dataclass
class MasOptions(SampledImportanceOptions):
    c: float = c_field(100.0)


class OutputSensitivityRegularizer(ImportanceRegularizer):
    """Ω from the per-sample absolute gradient of a function of the softmax output."""

    measure = ""

    def task_importance(self, ctx):
        opts = self.options
        return task_mean(ctx, opts.samples, opts.batch, "importance",
                         lambda x, y, u: output_sensitivity_sums(self.model, self.layers, ctx.logits, x,
                                                              self.measure), self.params)


@register
class Mas(OutputSensitivityRegularizer):
    name = "mas"
    summary = "MAS: importance |d ||softmax||^2 / d theta| (ECCV 2018)"
    Options = MasOptions
    measure = "mas"
