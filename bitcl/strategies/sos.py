"""SOS: v ← 0.999 v + 0.001 (g − α g')², Ω += sqrt(v) at task end.

Benzing, AISTATS 2022, arXiv 2006.06357. With α = 1, g − g' is pure minibatch
noise whose variance is proportional to the Fisher, so SOS estimates sqrt(Fisher)
at any batch size: the fix of SI for large-batch training. v is reset at the
start of each task and bias-corrected as in Adam.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bitcl.errors import ConfigError

from .base import register
from .regularizer import c_field, check_common
from .si import PathIntegralRegularizer


@dataclass
class SosOptions:
    c: float = c_field(10.0)
    alpha: float = field(default=1.0, metadata={"help": "weight of the independent gradient g' in [0, 1]"})

    def validate(self) -> None:
        check_common(self)
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"--alpha must lie in [0, 1], got {self.alpha}")


@register
class Sos(PathIntegralRegularizer):
    name = "sos"
    summary = "SOS: sqrt of a running mean of squared gradient noise (Benzing, AISTATS 2022)"
    Options = SosOptions
    kind = "sos"
    needs = frozenset({"independent_gradient"})
