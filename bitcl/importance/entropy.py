"""ANPyC's label-free importance: s = max(0, g θ + ½ g² θ²), g = ∂H/∂θ.

Peng et al., "Overcoming Long-term Catastrophic Forgetting through Adversarial
Neural Pruning and Synaptic Consolidation", IEEE TNNLS (arXiv 1912.09091): H is
the entropy of the model's output distribution over a batch (here the mean of the
per-sample entropies of the batch), and the score, a second-order estimate of
how much H changes when θ is removed, is averaged over the batches of the task's
data. No labels are needed. Entropy is computed from log-softmax with
0 log 0 = 0, so masked (−inf) outputs give no NaN.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch


def batch_entropy(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean (or sum) over the batch of the entropy of softmax(logits), safe for -inf logits."""
    logp = torch.log_softmax(logits, 1)
    p = logp.exp()
    # zero log p where p = 0 *before* the product: where(p > 0, p * logp, 0) has the right value
    # but a NaN gradient (0 * -inf) for masked outputs, which made ANPyC's Ω NaN in class-incremental runs
    per_sample = -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(1)
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def entropy_scores(params: dict[str, torch.nn.Parameter], logits_fn: Callable[[torch.Tensor], torch.Tensor],
                   x: torch.Tensor, batch_size: Optional[int] = None,
                   reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """One batch's score s = max(0, g θ + ½ g² θ²) for each parameter.

    Under data parallelism ``x`` is this rank's share of a batch of ``batch_size`` samples and
    ``reduce`` sums a tensor over ranks: g is summed *before* the score, which is not linear in
    g, so every rank gets the score of the whole batch (one process: the defaults)."""
    names = list(params)
    logits = logits_fn(x)
    size = len(x) if batch_size is None else batch_size
    h = batch_entropy(logits) if batch_size is None else batch_entropy(logits, reduction="sum") / max(size, 1)
    grads = torch.autograd.grad(h, [params[n] for n in names], allow_unused=True)
    out = {}
    for name, g in zip(names, grads):
        theta = params[name].detach()
        g = torch.zeros_like(theta) if g is None else g
        if reduce is not None:
            g = reduce(g.contiguous())
        out[name] = torch.clamp(g * theta + 0.5 * g.pow(2) * theta.pow(2), min=0)
    return out
