"""SIU: unbiased SI, with g' from an independent minibatch at the same parameters.

Benzing, AISTATS 2022, arXiv 2006.06357: removing the minibatch-noise bias breaks
SI's link to sqrt(Fisher). Costs one extra forward/backward per step.
"""
from .base import register
from .si import PathIntegralRegularizer, SiOptions


@register
class Siu(PathIntegralRegularizer):
    name = "siu"
    summary = "SIU: SI with an independent minibatch gradient (unbiased; Benzing, AISTATS 2022)"
    Options = SiOptions
    kind = "siu"
    needs = frozenset({"independent_gradient"})
