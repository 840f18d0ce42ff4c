"""Output-sensitivity importances: MAS, MASX and the absolute Fisher (AF).

* MAS (Aljundi et al., "Memory Aware Synapses", ECCV 2018), in the softmax form
  that Benzing analyses: Ω = E_x |∂ ||softmax(z)||² / ∂θ|.
* MASX (Benzing, "Unifying Importance Based Regularisation Methods for
  Continual Learning", AISTATS 2022, arXiv 2006.06357): Ω = E_x |∂ (max_y p_y)² / ∂θ|.
* AF, the absolute Fisher (same paper): Ω = E_x Σ_y p_y |∂ log p_y / ∂θ|.

Per-sample absolute gradients come from ``per_sample_power_sums`` with power 1
(for a linear layer |g xᵀ| = |g| |x|ᵀ: one matrix product per batch).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .per_sample import class_weighted_power_sums, per_sample_power_sums

OUTPUT_MEASURES = ("mas", "masx", "af")


def output_sensitivity_sums(model: nn.Module, layers: dict[str, nn.Module],
                            logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                            measure: str) -> dict[str, torch.Tensor]:
    """``sum_n`` of the per-sample measure for one batch."""
    if measure == "mas":
        return per_sample_power_sums(model, layers, lambda: torch.softmax(logits_fn(x), 1).pow(2).sum(), 1)
    if measure == "masx":
        return per_sample_power_sums(model, layers, lambda: torch.softmax(logits_fn(x), 1).max(1).values.pow(2).sum(), 1)
    if measure != "af":
        raise ValueError(f"unknown output-sensitivity measure {measure!r}")
    return class_weighted_power_sums(model, layers, logits_fn, x, lambda p: p, 1)  # p_c >= 0: |p g| = p |g|
