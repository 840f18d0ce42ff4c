"""AF, the absolute Fisher: Ω += E_x Σ_y p_y |∂ log p_y / ∂θ|.

Benzing, "Unifying Importance Based Regularisation Methods for Continual
Learning", AISTATS 2022, arXiv 2006.06357: the Fisher with |·| in place of (·)².
"""
from dataclasses import dataclass

from .base import register
from .mas import OutputSensitivityRegularizer
from .regularizer import SampledImportanceOptions, c_field


@dataclass
class AfOptions(SampledImportanceOptions):
    c: float = c_field(100.0)


@register
class AbsoluteFisher(OutputSensitivityRegularizer):
    name = "af"
    summary = "AF: absolute Fisher, sum_y p_y |d log p_y / d theta| (Benzing, AISTATS 2022)"
    Options = AfOptions
    measure = "af"
