"""SOS: v ← 0.999 v + 0.001 (g − α g')², Ω += sqrt(v) at task end.

Benzing, AISTATS 2022, arXiv 2006.06357. With α = 1, g − g' is pure minibatch
noise whose variance is proportional to the Fisher, so SOS estimates sqrt(Fisher)
at any batch size: the fix of SI for large-batch training. v is reset at the
start of each task and bias-corrected as in Adam.
"""
from __future__ import annotations

from dataclasses import dataclass

from bitcl.settings import setting

from .base import register
from .regularizer import c_field
from .si import PathIntegralRegularizer


@dataclass
class SosOptions:
    c: float = c_field(10.0)
    alpha: float = setting(1.0, "weight of the independent gradient g'", low=0.0, high=1.0)


@register
class Sos(PathIntegralRegularizer):
    name = "sos"
    summary = "SOS: sqrt of a running mean of squared gradient noise (Benzing, AISTATS 2022)"
    Options = SosOptions
    kind = "sos"
    needs = frozenset({"independent_gradient"})
