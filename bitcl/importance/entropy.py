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

from typing import Callable

import torch


def batch_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the entropy of softmax(logits), safe for -inf logits."""
    logp = torch.log_softmax(logits, 1)
    p = logp.exp()
    return -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(1).mean()


def entropy_scores(params: dict[str, torch.nn.Parameter], logits_fn: Callable[[torch.Tensor], torch.Tensor],
                   x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch's score s = max(0, g θ + ½ g² θ²) for each parameter."""
    names = list(params)
    h = batch_entropy(logits_fn(x))
    grads = torch.autograd.grad(h, [params[n] for n in names], allow_unused=True)
    out = {}
    for name, g in zip(names, grads):
        theta = params[name].detach()
        g = torch.zeros_like(theta) if g is None else g
        out[name] = torch.clamp(g * theta + 0.5 * g.pow(2) * theta.pow(2), min=0)
    return out
