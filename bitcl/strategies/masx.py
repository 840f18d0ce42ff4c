"""MASX: MAS on the largest softmax output, Ω += E_x |∂ (max_y p_y)² / ∂θ|.

Benzing, "Unifying Importance Based Regularisation Methods for Continual
Learning", AISTATS 2022, arXiv 2006.06357.
"""
from .base import register
from .mas import MasOptions, OutputSensitivityRegularizer


@register
class Masx(OutputSensitivityRegularizer):
    name = "masx"
    summary = "MASX: importance |d (max softmax)^2 / d theta| (Benzing, AISTATS 2022)"
    Options = MasOptions
    measure = "masx"
