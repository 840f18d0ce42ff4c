"""Diagonal Fisher information from vectorised per-sample gradients.

F_i = E_x E_{y ~ p(y|x)} [(d log p(y|x) / d theta_i)^2] (the true Fisher, as in
EWC, Kirkpatrick et al., PNAS 2017, and BLIP, Shi et al., CVPR 2021,
arXiv 2105.04444, Eq. 6). Variants:

* ``sampled``: one label per sample drawn from the model's prediction (Monte Carlo);
* ``exact``: the expectation over all (live) classes, weighted by the predicted
  probabilities (one backward pass per class);
* ``empirical``: the true label (the "empirical Fisher"; Kunstner et al. 2019
  explain why it is not the Fisher).

The result is the per-sample *mean* (sums all-reduced over ranks, divided by
the global sample count), so it does not depend on batch size or sample count.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .per_sample import class_weighted_power_sums, per_sample_power_sums

FISHER_KINDS = ("sampled", "exact", "empirical")


def batch_fisher_sums(model: nn.Module, layers: dict[str, nn.Module],
                      logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      kind: str, uniforms: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """``sum_n`` of per-sample squared log-likelihood gradients for one batch.

    ``sampled`` draws each sample's label by inverse CDF from ``uniforms`` (one number in
    [0, 1) per sample; random if None), so the draw does not depend on how samples are
    split into batches or ranks."""
    if kind == "exact":  # squared later: sqrt(p_c) weights each sample's term by p_c
        return class_weighted_power_sums(model, layers, logits_fn, x, torch.sqrt, 2)

    def summed_loss():
        logits = logits_fn(x)
        if kind == "sampled":
            with torch.no_grad():
                cdf = torch.softmax(logits.double(), 1).cumsum(1)
                u = torch.rand(len(x), dtype=torch.float64) if uniforms is None else uniforms
                u = u.to(cdf.device).unsqueeze(1) * cdf[:, -1:]
                target = (cdf <= u).sum(1).clamp_(max=logits.shape[1] - 1)
        else:
            target = y
        return F.cross_entropy(logits, target, reduction="sum")

    return per_sample_power_sums(model, layers, summed_loss, 2)
