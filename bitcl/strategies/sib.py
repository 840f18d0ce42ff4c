"""SIB: the bias of SI alone, ω = −(g − g')·Δθ (SI minus SIU).

Benzing, AISTATS 2022, arXiv 2006.06357: this bias, caused by minibatch noise,
is what makes SI resemble sqrt(Fisher).
"""
from .base import register
from .si import PathIntegralRegularizer, SiOptions


@register
class Sib(PathIntegralRegularizer):
    name = "sib"
    summary = "SIB: the minibatch-noise bias of SI alone (Benzing, AISTATS 2022)"
    Options = SiOptions
    kind = "sib"
    needs = frozenset({"independent_gradient"})
